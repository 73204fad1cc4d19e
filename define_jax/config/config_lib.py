"""Configs: loading with overrides, sections, and the migration of stored configs.

A config is the `get_config()` of a file `configs/NAME.py`; every field and its default is
in configs/default.py, which the other files start from. Its fields are in sections
(SECTIONS: config.model, config.loss, config.optim, config.input, config.eval, config.log)
and each module reads its own, e.g. the network is built from config.model alone. Library
code reads fields (`config.loss.preset`), never `config.get(name, fallback)`: a field
missing from a config is a bug that should fail loudly. Adding a field means editing
configs/default.py and its consumer.

  config = config_lib.load('faces128', ['--config.optim.batch_size=8'])
  steps.validate(config)  # define_jax.training.steps: the whole run's settings.

Each section is checked where it is consumed: config.model by define_jax.model.network
(validate_model, and model_config for a stored config), the whole run by
define_jax.training.steps.validate. Checkpoints and model files store the config; those
written before the sections store it flat and are migrated where they are read (`sectioned`).

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

from absl import flags

from define_jax.config import config_fallback

try:
  import ml_collections
  from ml_collections import config_flags
except ImportError:  # Configs still load (no overrides): the benchmark's accelerator hosts.
  ml_collections = config_fallback
  config_flags = None
# The ConfigDict class in use: ml_collections', or config_fallback's where it is missing.
ConfigDict = ml_collections.ConfigDict

REPO_CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'

# The sections of a config (configs/default.py); `seed` is its one top-level field.
SECTIONS = ('model', 'loss', 'optim', 'input', 'eval', 'log')
# Checkpoints and model files written before the sections store a flat config: where its
# fields go (the format is frozen: new fields only ever appear in sections).
FLAT_FIELDS = {
    'model': ('model', 'name'), 'loss': ('loss', 'preset'),
    **{field: ('model', field) for field in (
        'image_size', 'layers', 'base_features', 'max_features', 'dtype', 'freeze_encoder_bn',
        'mask_channel', 'prefill', 'face_template', 'mirror', 'face_prefill')},
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
        'generated_mask_fraction', 'face_part_mask_fraction', 'prefetch')},
    **{field: ('eval', field) for field in (
        'num_eval_images', 'eval_every_steps', 'image_every_steps')},
    **{field: ('log', field) for field in (
        'log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints', 'profile')},
}
# Model fields added after the first checkpoints were written, with the behaviour those
# checkpoints have: checkpoints without them restore as they were trained.
MODEL_FIELDS_ADDED_LATER = {'mask_channel': False, 'prefill': 'none', 'face_template': None,
                            'mirror': False, 'face_prefill': None}


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


