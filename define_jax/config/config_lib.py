"""Configs: loading, validation and the settings derived from them, in one place.

A config is the `get_config()` of a file `configs/NAME.py`; every field and its default is
in configs/default.py, which the other files start from. Its fields are in sections
(SECTIONS: config.model, config.loss, config.optim, config.input, config.eval, config.log)
and each module reads its own, e.g. the network is built from config.model alone. Library
code reads fields (`config.loss.preset`), never `config.get(name, fallback)`: a field
missing from a config is a bug that should fail loudly. Adding a field means editing
configs/default.py and its consumer.

  config = config_lib.load('faces128', ['--config.optim.batch_size=8'])
  config_lib.validate(config)

Checkpoints and model files store the config; those written before the sections store it
flat and are migrated where they are read (`sectioned`, `model_config`).

`define_jax.main` parses `--config FILE --config.SECTION.FIELD=VALUE` with the flag that
`define_config_flag` defines (ml_collections' config_flags); `load` runs the same flag on a
private flag set, so `study` and `benchmark` read files and overrides exactly as training does.
Where ml_collections is not installed (an accelerator host with only the compute core's
packages), `load` reads config files and overrides through config_fallback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
from absl import flags

from define_jax.config import config_fallback
from define_jax.model import losses
from define_jax.model import models
from define_jax.model import steps

try:
  import ml_collections
  from ml_collections import config_flags
except ImportError:  # Configs still load (no overrides): the benchmark's accelerator hosts.
  ml_collections = config_fallback
  config_flags = None

REPO_CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'

# The sections of a config (configs/default.py); `seed` is its one top-level field.
SECTIONS = ('model', 'loss', 'optim', 'input', 'eval', 'log')
# Checkpoints and model files written before the sections store a flat config: where its
# fields go (the format is frozen: new fields only ever appear in sections).
FLAT_FIELDS = {
    'model': ('model', 'name'), 'loss': ('loss', 'preset'),
    **{field: ('model', field) for field in (
        'image_size', 'layers', 'base_features', 'max_features', 'dtype', 'freeze_encoder_bn',
        'mask_channel', 'prefill', 'face_template')},
    **{field: ('loss', field) for field in (
        'tv_region', 'vgg_weights', 'discriminator_features', 'discriminator_learning_rate',
        'r1_gamma')},
    **{field: ('optim', field) for field in (
        'batch_size', 'learning_rate', 'lr_schedule', 'warmup_steps',
        'final_learning_rate_fraction', 'grad_clip_norm', 'ema_decay', 'num_train_steps',
        'init_from', 'max_consecutive_nonfinite_steps')},
    **{field: ('input', field) for field in (
        'dataset', 'ffhq_config', 'data_dir', 'image_dir', 'validation_fraction', 'masks',
        'mask_dir', 'hole_ratio_min', 'hole_ratio_max', 'mask_augment',
        'generated_mask_fraction', 'prefetch')},
    **{field: ('eval', field) for field in (
        'num_eval_images', 'eval_every_steps', 'image_every_steps')},
    **{field: ('log', field) for field in (
        'log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints', 'profile')},
}
# Model fields added after the first checkpoints were written, with the behaviour those
# checkpoints have: checkpoints without them restore as they were trained.
MODEL_FIELDS_ADDED_LATER = {'mask_channel': False, 'prefill': 'none', 'face_template': None,
                            'mirror': False}
# Bounds of the network's size: 8192² already needs tens of GB per image, and larger values
# would only overflow (a stored image_size of 10**9 aborted the process).
MAX_IMAGE_SIZE = 8192
MAX_LAYERS = 13  # 2**13 = MAX_IMAGE_SIZE: a deeper U-Net has no pixels left.


def resolve(name: str) -> Path:
  """NAME, NAME.py, NAME.py:ARG or a path: configs/NAME.py below the working directory or
  the define_jax checkout. The ':ARG' suffix (passed to get_config) is kept."""
  name, colon, argument = name.partition(':')
  candidates = [Path(name)] if name.endswith('.py') else []
  file_name = name if name.endswith('.py') else f'{name}.py'
  candidates += [Path.cwd() / 'configs' / file_name, REPO_CONFIG_DIR / file_name]
  for candidate in candidates:
    if candidate.is_file():
      return Path(f'{candidate.resolve()}{colon}{argument}')
  raise FileNotFoundError(f'No config {name!r}: looked for ' +
                          ', '.join(str(c) for c in candidates))


def define_config_flag(flag_values: flags.FlagValues = flags.FLAGS,
                       sys_argv: Sequence[str] | None = None) -> None:
  """Defines --config: a config file (NAME.py or NAME.py:ARG) whose fields
  --config.FIELD=VALUE override, type-checked; unknown fields are rejected."""
  config_flags.DEFINE_config_file(
      'config', None, 'Training configuration file (configs/NAME.py).',
      flag_values=flag_values, lock_config=True, sys_argv=sys_argv)


def make_importable(argv: Sequence[str]) -> None:
  """Lets the config file that `argv` names with --config import its base (`from configs
  import default`) whatever the working directory: the folder holding its configs/ folder
  goes first on sys.path."""
  for i, argument in enumerate(argv):
    if argument.startswith('--config='):
      value = argument.split('=', 1)[1]
    elif argument == '--config' and i + 1 < len(argv):
      value = argv[i + 1]
    else:
      continue
    checkout = str(Path(value.partition(':')[0]).expanduser().resolve().parent.parent)
    if checkout not in sys.path:
      sys.path.insert(0, checkout)


def load(name: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config file `name` (see resolve) with `--config.FIELD=VALUE` overrides, parsed and
  type-checked as define_jax.main parses them. ValueError names an unknown field or a bad
  value; FileNotFoundError a missing file."""
  config_file = resolve(name)
  file_name = Path(str(config_file).partition(':')[0]).name
  argv = ['config', f'--config={config_file}', *overrides]
  make_importable(argv)
  if config_flags is None:
    return config_fallback.load_file(config_file, overrides)
  flag_values = flags.FlagValues()  # Private: each call parses its own overrides.
  define_config_flag(flag_values, sys_argv=argv)
  try:
    flag_values(argv)
  except (AttributeError, KeyError) as error:  # ml_collections' report of an unknown field.
    detail = error.args[0]
    while isinstance(detail, BaseException):  # An AttributeError wrapping a KeyError.
      detail = detail.args[0]
    field, _, suggestion = str(detail).partition('\n')  # 'name'\nDid you mean ...?
    field = field.strip('\'"')
    if field in FLAT_FIELDS:  # A field's name before the sections.
      suggestion = f'Did you mean --config.{".".join(FLAT_FIELDS[field])}?'
    raise ValueError(f'{file_name} has no config field {field!r} '
                     f'(overrides: {" ".join(overrides)}).'
                     + (f' {suggestion}' if suggestion else '')) from error
  except flags.Error as error:
    raise ValueError(f'{file_name}: {error}') from error
  return flag_values.config


def _check_type(section: Mapping[str, Any], field: str, kind: type, where: str) -> None:
  value = section[field]
  # bool is an int in Python; a stored True is no image size.
  if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
    raise ValueError(f'{where}{field}={value!r}: expected {kind.__name__}.')


def validate_model(model: Mapping[str, Any], where: str = 'config.model.') -> None:
  """Rejects a model section (config.model) that lacks a field its network is built from,
  or has one of the wrong type or out of range, before anything is built, naming the
  field; `where` prefixes the names (a stored config names its file)."""
  if not isinstance(model.get('name'), str) or model['name'] not in models.MODELS:
    raise ValueError(f'{where}name={model.get("name")!r}: expected one of '
                     f'{sorted(models.MODELS)}.')
  hyperparameters = steps.model_hyperparameters(model['name'])
  missing = [field for field in ('image_size', 'dtype', *hyperparameters) if field not in model]
  if missing:
    raise ValueError(f'{where[:-1]} lacks {", ".join(missing)}.')
  _check_type(model, 'image_size', int, where)
  for field, default in hyperparameters.items():  # The Module's defaults give the types.
    if isinstance(default, (bool, int, str)):
      _check_type(model, field, type(default), where)
  for field, choices in (('dtype', sorted(steps.DTYPES)), ('prefill', list(models.PREFILLS))):
    if field in model and model[field] not in choices:
      raise ValueError(f'{where}{field}={model[field]!r}: expected one of {choices}.')
  for field in ('base_features', 'max_features'):
    if field in hyperparameters and model[field] < 1:
      raise ValueError(f'{where}{field}={model[field]}: must be positive.')
  if not 1 <= model['image_size'] <= MAX_IMAGE_SIZE:
    raise ValueError(f'{where}image_size={model["image_size"]}: must lie in [1, '
                     f'{MAX_IMAGE_SIZE}].')
  if 'layers' not in hyperparameters:
    return
  if not 2 <= model['layers'] <= MAX_LAYERS:
    raise ValueError(f'{where}layers={model["layers"]}: need 2 to {MAX_LAYERS} levels.')
  if model['image_size'] % (2 ** model['layers']):
    raise ValueError(
        f'{where}image_size={model["image_size"]} is not divisible by 2**layers='
        f'{2 ** model["layers"]}; use layers=7 for 256², 8 for 512², or a matching '
        'image_size.')


def validate(config: ml_collections.ConfigDict, *, device_count: int | None = None) -> None:
  """Rejects inconsistent settings before anything is compiled, naming the field.

  device_count: devices the global batch is split over (default: all of JAX's).
  """
  unknown = sorted(set(config.keys()) - {'seed', *SECTIONS})
  if unknown:  # An unlocked config takes any new field, e.g. one set by its pre-section name.
    raise ValueError(f'config.{unknown[0]} is no field: fields are in the sections '
                     f'{", ".join(SECTIONS)} (configs/default.py).')
  validate_model(config.model)
  loss, optim = config.loss, config.optim
  losses.get_loss_weights(loss.preset)  # Raises with the known presets.
  if loss.tv_region not in losses.TV_REGIONS:
    raise ValueError(f'config.loss.tv_region={loss.tv_region!r}: expected one of '
                     f'{losses.TV_REGIONS}.')
  device_count = jax.device_count() if device_count is None else device_count
  if optim.batch_size <= 0 or optim.batch_size % device_count:
    raise ValueError(
        f'config.optim.batch_size={optim.batch_size} must be a positive multiple of the '
        f'{device_count} devices (the global batch is split evenly across them).')
  if optim.learning_rate <= 0:
    raise ValueError(f'config.optim.learning_rate={optim.learning_rate} must be positive.')
  if optim.lr_schedule not in steps.LR_SCHEDULES:
    raise ValueError(f'config.optim.lr_schedule={optim.lr_schedule!r}: expected one of '
                     f'{steps.LR_SCHEDULES}.')
  if not 0 <= optim.warmup_steps < max(optim.num_train_steps, 1):
    raise ValueError(f'config.optim.warmup_steps={optim.warmup_steps} must lie in '
                     f'[0, num_train_steps={optim.num_train_steps}).')
  if not 0 <= optim.final_learning_rate_fraction <= 1:
    raise ValueError('config.optim.final_learning_rate_fraction='
                     f'{optim.final_learning_rate_fraction} must lie in [0, 1].')
  if optim.grad_clip_norm < 0:
    raise ValueError(f'config.optim.grad_clip_norm={optim.grad_clip_norm} must be >= 0 '
                     '(0 = off).')
  if not 0 <= optim.ema_decay < 1:
    raise ValueError(f'config.optim.ema_decay={optim.ema_decay} must lie in [0, 1) (0 = off).')
  if losses.needs_discriminator(losses.get_loss_weights(loss.preset)):
    for field in ('discriminator_features', 'discriminator_learning_rate'):
      if loss[field] <= 0:
        raise ValueError(f'config.loss.{field}={loss[field]} must be positive.')
    if loss.r1_gamma < 0:
      raise ValueError(f'config.loss.r1_gamma={loss.r1_gamma} must be >= 0 (0 = no R1 '
                       'penalty).')
  if optim.init_from is None:
    raise ValueError(
        'config.optim.init_from is required by this config: pass the stage-one workdir, '
        'e.g. --config.optim.init_from=runs/ffhq256.')


def sectioned(stored: Mapping[str, Any]) -> dict[str, Any]:
  """A config as a checkpoint or model file stores it (JSON), in sections: a flat one,
  written before the sections, is moved into them (FLAT_FIELDS; fields it does not know
  stay at the top), and model fields added later get the behaviour of the checkpoints
  written without them (MODEL_FIELDS_ADDED_LATER)."""
  if isinstance(stored.get('model'), Mapping):
    config = {name: dict(value) if isinstance(value, Mapping) else value
              for name, value in stored.items()}
  else:
    config = {}
    for field, value in stored.items():
      section, name = FLAT_FIELDS.get(field, (None, field))
      if section is None:
        config[name] = value
      else:
        config.setdefault(section, {})[name] = value
  config['model'] = {**MODEL_FIELDS_ADDED_LATER, **config.get('model', {})}
  return config


def flatten(config: Mapping[str, Any]) -> dict[str, Any]:
  """{'section.field': value} of a config (a dict or ConfigDict; top-level fields by name)."""
  config = config.to_dict() if hasattr(config, 'to_dict') else config
  flat = {}
  for name, value in config.items():
    for field, item in value.items() if isinstance(value, Mapping) else [('', value)]:
      flat[f'{name}.{field}' if field else name] = item
  return flat


def model_config(stored: Mapping[str, Any], path: str,
                 overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config of a checkpoint or model file at `path` (sectioned, see `sectioned`), with
  `--config.SECTION.FIELD=VALUE` overrides (e.g. --config.model.dtype=bfloat16), as a
  ConfigDict its model can be built from; ValueError when its model section lacks a field
  the network is built from, holds a bad value, or an override names no stored field."""
  if not isinstance(stored, Mapping):
    raise ValueError(f'The checkpoint at {path} has no config (found {type(stored).__name__}).')
  config = sectioned(stored)
  validate_model(config['model'], f'The config stored in {path}: model.')
  config = ml_collections.ConfigDict(config)
  for override in overrides:
    config_fallback.apply_override(config, override, f'The config stored in {path}')
  if overrides:
    validate_model(config.model, 'config.model.')
  return config


def check_same_architecture(model: Mapping[str, Any], source: Mapping[str, Any],
                            source_name: str) -> None:
  """ValueError unless the model section `source` of the run `source_name` builds a network
  with the variables (names and shapes) of `model`'s: the dtype, image size, BatchNorm
  freezing and face template may differ."""
  validate_model(source, f'{source_name}: model.')
  shapes = lambda section: jax.tree.map(lambda leaf: leaf.shape, steps.variable_shapes(section))
  if shapes(model) == shapes(source):
    return
  differing = [f'{field}={source.get(field)!r} (this config: {model.get(field)!r})'
               for field in sorted(set(model) | set(source))
               if source.get(field) != model.get(field)]
  raise ValueError(f'{source_name} was trained with another network: '
                   f'model.{", model.".join(differing)}.')
