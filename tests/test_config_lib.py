"""Config loading, validation and checkpoint configs: define_jax.config_lib."""

from pathlib import Path

import pytest

from configs import default
from configs import tiny
from define_jax import config_lib

from conftest import REPO_ROOT

CONFIG_DIR = Path(REPO_ROOT, 'configs').resolve()


def test_configs_resolve_by_name_path_and_argument():
  assert config_lib.resolve('loss_l1') == CONFIG_DIR / 'loss_l1.py'
  assert config_lib.resolve('configs/tiny.py') == CONFIG_DIR / 'tiny.py'
  assert str(config_lib.resolve('tiny:x')) == f'{CONFIG_DIR / "tiny.py"}:x'
  with pytest.raises(FileNotFoundError, match='configs/nothing.py'):
    config_lib.resolve('nothing')


def test_load_applies_overrides_with_their_types_and_names_bad_ones():
  config = config_lib.load('tiny', ['--config.optim.batch_size=4', '--config.optim.learning_rate=3e-4',
                                    '--config.model.prefill=harmonic'])
  assert (config.optim.batch_size, config.optim.learning_rate, config.model.prefill) == (4, 3e-4, 'harmonic')
  assert config.model.layers == tiny.get_config().layers  # The rest as the file says.
  with pytest.raises(ValueError, match="no config field 'batch_sise'"):
    config_lib.load('tiny', ['--config.batch_sise=4'])
  with pytest.raises(ValueError, match='tiny.py'):
    config_lib.load('tiny', ['--config.optim.batch_size=four'])


def test_every_shipped_config_loads_and_only_defines_default_fields():
  fields = set(default.get_config())
  for path in sorted(CONFIG_DIR.glob('*.py')):
    config = config_lib.load(str(path))
    if path.name.startswith('study_'):  # A study protocol: its shared training config.
      config = config.train
    assert set(config) == fields, path.name  # Defaults live only in configs/default.py.
    if config.optim.init_from is not None:  # finetune.py requires --config.optim.init_from.
      config_lib.validate(config, device_count=1 if config.optim.batch_size % 4 else 4)


@pytest.mark.parametrize('field, value, message', [
    ('batch_size', 6, 'batch_size'),
    ('image_size', 72, 'image_size'),
    ('loss', 'bogus', 'bogus'),
    ('init_from', None, 'init_from'),
    ('model', 'resnet', 'model'),
    ('tv_region', 'border', 'tv_region'),
    ('lr_schedule', 'step', 'lr_schedule'),
    ('warmup_steps', 10**9, 'warmup_steps'),
    ('ema_decay', 1.0, 'ema_decay'),
    ('grad_clip_norm', -1.0, 'grad_clip_norm'),
    ('final_learning_rate_fraction', 2.0, 'final_learning_rate_fraction'),
    ('prefill', 'telea', 'prefill'),
    ('discriminator_features', 0, 'discriminator_features'),
    ('discriminator_learning_rate', -1e-4, 'discriminator_learning_rate'),
    ('r1_gamma', -1.0, 'r1_gamma'),
])
def test_invalid_settings_name_the_field(field, value, message):
  config = tiny.get_config()
  config.loss.preset = 'final_adversarial'  # The discriminator's fields are read only then.
  config[field] = value
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config, device_count=4)


def test_checkpoint_configs_need_the_model_fields_and_get_later_ones():
  stored = {field: tiny.get_config()[field] for field in config_lib.MODEL_FIELDS}
  config = config_lib.model_config(stored, 'runs/old')
  assert (config.model.mask_channel, config.model.prefill) == (False, 'none')  # As trained before them.
  del stored['layers']
  with pytest.raises(ValueError, match='runs/old has a config without layers'):
    config_lib.model_config(stored, 'runs/old')


def test_initialising_from_another_architecture_is_refused():
  config = tiny.get_config()
  config_lib.check_same_architecture(config, config.to_dict(), 'stage one')
  with pytest.raises(ValueError, match='stage one was trained with base_features=16'):
    config_lib.check_same_architecture(config, {**config.to_dict(), 'base_features': 16},
                                       'stage one')
