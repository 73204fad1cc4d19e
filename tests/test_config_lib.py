"""Config loading, validation and checkpoint configs: define_jax.config.config_lib."""

from pathlib import Path

import pytest

from configs import default
from configs import loss_study
from configs import tiny
from define_jax.config import config_lib
from define_jax.model import network
from define_jax.training import steps

from conftest import REPO_ROOT

CONFIG_DIR = Path(REPO_ROOT, 'configs').resolve()


def test_configs_resolve_by_name_path_and_argument():
  assert config_lib.resolve('tiny') == CONFIG_DIR / 'tiny.py'
  assert config_lib.resolve('configs/tiny.py') == CONFIG_DIR / 'tiny.py'
  assert str(config_lib.resolve('loss_study:l1')) == f'{CONFIG_DIR / "loss_study.py"}:l1'
  with pytest.raises(FileNotFoundError, match='configs/nothing.py'):
    config_lib.resolve('nothing')


def test_loss_study_variants_differ_only_in_the_loss_preset():
  variants = {v: config_lib.load(f'loss_study:{v}').to_dict() for v in loss_study.VARIANTS}
  assert [config['loss']['preset'] for config in variants.values()] == list(loss_study.VARIANTS)
  for config in variants.values():
    final = {**config, 'loss': {**config['loss'], 'preset': 'final'}}
    assert final == default.get_config().to_dict()
  with pytest.raises(ValueError, match='expected one of'):
    config_lib.load('loss_study:nothing')


def test_load_applies_overrides_with_their_types_and_names_bad_ones():
  config = config_lib.load('tiny', ['--config.optim.batch_size=4',
                                    '--config.optim.learning_rate=3e-4',
                                    '--config.model.prefill=harmonic'])
  assert (config.optim.batch_size, config.optim.learning_rate, config.model.prefill) == (
      4, 3e-4, 'harmonic')
  assert config.model.layers == tiny.get_config().model.layers  # The rest as the file says.
  with pytest.raises(ValueError, match="no config field 'batch_sise'"):
    config_lib.load('tiny', ['--config.optim.batch_sise=4'])
  with pytest.raises(ValueError, match='Did you mean --config.optim.batch_size'):
    config_lib.load('tiny', ['--config.batch_size=4'])  # The name before the sections.
  with pytest.raises(ValueError, match='tiny.py'):
    config_lib.load('tiny', ['--config.optim.batch_size=four'])


def test_every_shipped_config_loads_and_only_defines_default_fields():
  fields = config_lib.flatten(default.get_config()).keys()
  assert set(default.get_config()) == {'seed', *config_lib.SECTIONS}
  for path in sorted(CONFIG_DIR.glob('*.py')):
    config = config_lib.load(str(path))
    if path.name.startswith('study_'):  # A study protocol: its shared training config.
      config = config.train
    # Defaults live only in configs/default.py.
    assert config_lib.flatten(config).keys() == fields, path.name
    if config.optim.init_from is not None:  # finetune.py requires --config.optim.init_from.
      steps.validate(config, device_count=1 if config.optim.batch_size % 4 else 4)


def test_flat_fields_name_every_field_of_the_sections_once():
  """The migration of flat stored configs covers each field of the sections (those added
  since the sections aside: none yet) and maps no two flat names to one field."""
  sectioned_fields = {f for f in config_lib.flatten(default.get_config()) if '.' in f}
  moved = {'.'.join(place) for place in config_lib.FLAT_FIELDS.values()}
  assert moved == sectioned_fields and len(moved) == len(config_lib.FLAT_FIELDS)


@pytest.mark.parametrize('field, value, message', [
    ('optim.batch_size', 6, 'optim.batch_size'),
    ('model.image_size', 72, 'model.image_size'),
    ('loss.preset', 'bogus', 'bogus'),
    ('optim.init_from', None, 'optim.init_from'),
    ('model.name', 'resnet', 'model.name'),
    ('model.layers', True, 'model.layers'),
    ('loss.tv_region', 'border', 'loss.tv_region'),
    ('optim.lr_schedule', 'step', 'optim.lr_schedule'),
    ('optim.warmup_steps', 10**9, 'optim.warmup_steps'),
    ('optim.ema_decay', 1.0, 'optim.ema_decay'),
    ('optim.grad_clip_norm', -1.0, 'optim.grad_clip_norm'),
    ('optim.final_learning_rate_fraction', 2.0, 'optim.final_learning_rate_fraction'),
    ('model.prefill', 'telea', 'model.prefill'),
    ('loss.discriminator_features', 0, 'loss.discriminator_features'),
    ('loss.discriminator_learning_rate', -1e-4, 'loss.discriminator_learning_rate'),
    ('loss.r1_gamma', -1.0, 'loss.r1_gamma'),
])
def test_invalid_settings_name_the_field(field, value, message):
  config = tiny.get_config()
  config.loss.preset = 'final_adversarial'  # The discriminator's fields are read only then.
  section, name = field.split('.')
  if isinstance(value, bool):
    config[section] = {**config[section].to_dict(), name: value}  # Past the ConfigDict's type.
  else:
    config[section][name] = value
  with pytest.raises(ValueError, match=message):
    steps.validate(config, device_count=4)


def test_a_field_outside_the_sections_is_refused():
  config = tiny.get_config()
  config.batch_size = 4  # Accepted by an unlocked ConfigDict, as a new field.
  with pytest.raises(ValueError, match='config.batch_size is no field'):
    steps.validate(config, device_count=4)


def _flat(config) -> dict:
  """A config as checkpoints and model files stored it before the sections."""
  renamed = {'model.name': 'model', 'loss.preset': 'loss'}
  return {renamed.get(key, key.split('.')[-1]): value
          for key, value in config_lib.flatten(config).items()}


def test_flat_checkpoint_configs_are_migrated_into_sections():
  config = tiny.get_config()
  flat = _flat(config)
  assert flat['model'] == 'pconv_unet' and flat['batch_size'] == config.optim.batch_size
  assert config_lib.sectioned(flat) == config.to_dict()
  assert config_lib.sectioned(config.to_dict()) == config.to_dict()  # Sectioned already.


def test_checkpoint_configs_need_the_model_fields_and_get_later_ones():
  flat = _flat(tiny.get_config())
  for later in config_lib.MODEL_FIELDS_ADDED_LATER:
    del flat[later]
  config = network.model_config(flat, 'runs/old')
  # As trained before them.
  assert (config.model.mask_channel, config.model.prefill) == (False, 'none')
  del flat['layers']
  with pytest.raises(ValueError, match='runs/old: model lacks layers'):
    network.model_config(flat, 'runs/old')


def test_stored_configs_take_overrides_of_their_fields():
  stored = tiny.get_config().to_dict()
  config = network.model_config(stored, 'm.msgpack', ['--config.model.dtype=bfloat16'])
  assert config.model.dtype == 'bfloat16'
  with pytest.raises(ValueError, match="no config field 'model.dtypes'"):
    network.model_config(stored, 'm.msgpack', ['--config.model.dtypes=bfloat16'])
  with pytest.raises(ValueError, match='model.dtype'):
    network.model_config(stored, 'm.msgpack', ['--config.model.dtype=float8'])


def test_initialising_from_another_architecture_is_refused():
  model = tiny.get_config().model
  # Settings that leave the weights' shapes alone may differ.
  network.check_same_architecture(
      model, {**model.to_dict(), 'dtype': 'bfloat16', 'freeze_encoder_bn': True,
              'image_size': 128}, 'stage one')
  with pytest.raises(ValueError, match=r'stage one was trained with another network: '
                     r'model.base_features=16 \(this config: 8\)'):
    network.check_same_architecture(model, {**model.to_dict(), 'base_features': 16},
                                       'stage one')
  with pytest.raises(ValueError, match='mask_channel'):  # More input channels.
    network.check_same_architecture(model, {**model.to_dict(), 'mask_channel': True},
                                       'stage one')
