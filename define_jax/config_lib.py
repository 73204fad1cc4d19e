"""Configs: loading, validation and the settings derived from them, in one place.

A config is the `get_config()` of a file `configs/NAME.py`; every field and its default is
in configs/default.py, which the other files start from. Library code reads fields
(`config.loss`), never `config.get(name, fallback)`: a field missing from a config is a bug
that should fail loudly. Adding a field means editing configs/default.py and its consumer.

  config = config_lib.load('faces128', ['--config.batch_size=8'])
  config_lib.validate(config)

`define_jax.main` parses `--config FILE --config.FIELD=VALUE` with the flag that
`define_config_flag` defines (ml_collections' config_flags); `load` runs the same flag on a
private flag set, so `study` and `benchmark` read files and overrides exactly as training does.
Where ml_collections is not installed (an accelerator host with only the compute core's
packages), `load` reads config files through config_fallback, without overrides.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
from absl import flags

from define_jax import config_fallback
from define_jax import losses
from define_jax import models
from define_jax import steps

try:
  import ml_collections
  from ml_collections import config_flags
except ImportError:  # Configs still load (no overrides): the benchmark's accelerator hosts.
  ml_collections = config_fallback
  config_flags = None

REPO_CONFIG_DIR = Path(__file__).resolve().parent.parent / 'configs'

# Config fields that define the network's weights: a run initialised from another
# (config.init_from) must agree on these.
ARCHITECTURE_FIELDS = ('model', 'layers', 'base_features', 'max_features')
# Every field the network is built from; a checkpoint's config must have them all.
MODEL_FIELDS = ARCHITECTURE_FIELDS + ('freeze_encoder_bn', 'dtype', 'image_size')
# Model fields added after the first checkpoints were written, with the behaviour those
# checkpoints have: checkpoints without them restore as they were trained.
MODEL_FIELDS_ADDED_LATER = {'mask_channel': False, 'prefill': 'none', 'face_template': None}
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
    raise ValueError(f'{file_name} has no config field {field!r} '
                     f'(overrides: {" ".join(overrides)}).'
                     + (f' {suggestion}' if suggestion else '')) from error
  except flags.Error as error:
    raise ValueError(f'{file_name}: {error}') from error
  return flag_values.config


def _check_type(config: Mapping[str, Any], field: str, kind: type, where: str) -> None:
  value = config[field]
  # bool is an int in Python; a stored True is no image size.
  if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
    raise ValueError(f'{where}{field}={value!r}: expected {kind.__name__}.')


def validate_model(config: Mapping[str, Any], where: str = 'config.') -> None:
  """Rejects model fields (MODEL_FIELDS and those added later) of the wrong type or out of
  range before anything is built, naming the field; `where` prefixes the names (a stored
  config names its file)."""
  for field, kind in (('model', str), ('dtype', str), ('prefill', str), ('layers', int),
                      ('image_size', int), ('base_features', int), ('max_features', int),
                      ('freeze_encoder_bn', bool), ('mask_channel', bool)):
    _check_type(config, field, kind, where)
  for field, choices in (('model', sorted(steps.MODELS)), ('dtype', sorted(steps.DTYPES)),
                         ('prefill', list(models.PREFILLS))):
    if config[field] not in choices:
      raise ValueError(f'{where}{field}={config[field]!r}: expected one of {choices}.')
  for field in ('base_features', 'max_features'):
    if config[field] < 1:
      raise ValueError(f'{where}{field}={config[field]}: must be positive.')
  if not 2 <= config['layers'] <= MAX_LAYERS:
    raise ValueError(f'{where}layers={config["layers"]}: need 2 to {MAX_LAYERS} levels.')
  if not 1 <= config['image_size'] <= MAX_IMAGE_SIZE:
    raise ValueError(f'{where}image_size={config["image_size"]}: must lie in [1, '
                     f'{MAX_IMAGE_SIZE}].')
  if config['image_size'] % (2 ** config['layers']):
    raise ValueError(
        f'{where}image_size={config["image_size"]} is not divisible by 2**layers='
        f'{2 ** config["layers"]}; use layers=7 for 256², 8 for 512², or a matching '
        'image_size.')


def validate(config: ml_collections.ConfigDict, *, device_count: int | None = None) -> None:
  """Rejects inconsistent settings before anything is compiled, naming the field.

  device_count: devices the global batch is split over (default: all of JAX's).
  """
  validate_model(config)
  losses.get_loss_weights(config.loss)  # Raises with the known presets.
  if config.tv_region not in losses.TV_REGIONS:
    raise ValueError(f'config.tv_region={config.tv_region!r}: expected one of '
                     f'{losses.TV_REGIONS}.')
  device_count = jax.device_count() if device_count is None else device_count
  if config.batch_size <= 0 or config.batch_size % device_count:
    raise ValueError(
        f'config.batch_size={config.batch_size} must be a positive multiple of the '
        f'{device_count} devices (the global batch is split evenly across them).')
  if config.learning_rate <= 0:
    raise ValueError(f'config.learning_rate={config.learning_rate} must be positive.')
  if config.lr_schedule not in steps.LR_SCHEDULES:
    raise ValueError(f'config.lr_schedule={config.lr_schedule!r}: expected one of '
                     f'{steps.LR_SCHEDULES}.')
  if not 0 <= config.warmup_steps < max(config.num_train_steps, 1):
    raise ValueError(f'config.warmup_steps={config.warmup_steps} must lie in '
                     f'[0, num_train_steps={config.num_train_steps}).')
  if not 0 <= config.final_learning_rate_fraction <= 1:
    raise ValueError('config.final_learning_rate_fraction='
                     f'{config.final_learning_rate_fraction} must lie in [0, 1].')
  if config.grad_clip_norm < 0:
    raise ValueError(f'config.grad_clip_norm={config.grad_clip_norm} must be >= 0 (0 = off).')
  if not 0 <= config.ema_decay < 1:
    raise ValueError(f'config.ema_decay={config.ema_decay} must lie in [0, 1) (0 = off).')
  if losses.needs_discriminator(losses.get_loss_weights(config.loss)):
    for field in ('discriminator_features', 'discriminator_learning_rate'):
      if config[field] <= 0:
        raise ValueError(f'config.{field}={config[field]} must be positive.')
    if config.r1_gamma < 0:
      raise ValueError(f'config.r1_gamma={config.r1_gamma} must be >= 0 (0 = no R1 penalty).')
  if config.init_from is None:
    raise ValueError(
        'config.init_from is required by this config: pass the stage-one workdir, '
        'e.g. --config.init_from=runs/ffhq256.')


def model_config(stored: Mapping[str, Any], path: str) -> ml_collections.ConfigDict:
  """The config of a checkpoint or model file at `path`, as a ConfigDict the model can be
  built from; ValueError when it lacks a field that defines the network."""
  if not isinstance(stored, Mapping):
    raise ValueError(f'The checkpoint at {path} has no config (found {type(stored).__name__}).')
  missing = [field for field in MODEL_FIELDS if field not in stored]
  if missing:
    raise ValueError(f'The checkpoint at {path} has a config without {", ".join(missing)}; '
                     'it was not written by define_jax.train.')
  config = {**MODEL_FIELDS_ADDED_LATER, **stored}
  validate_model(config, f'The config stored in {path}: ')
  return ml_collections.ConfigDict(config)


def check_same_architecture(config: ml_collections.ConfigDict, source: Mapping[str, Any],
                            source_name: str) -> None:
  """ValueError unless the run `source_name`, whose config is `source`, built the same
  network weights as `config` does."""
  for field in ARCHITECTURE_FIELDS:
    if source.get(field) != config[field]:
      raise ValueError(
          f'{source_name} was trained with {field}={source.get(field)!r}, but this config has '
          f'{field}={config[field]!r}.')
