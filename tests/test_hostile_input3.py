"""Issue 24, hostile input part three: each test is one numbered case and failed on the code
before its fix (concurrent runs, damaged weights, evaluate's output folder, and the rest)."""

import json
import os
import socket
import subprocess
import sys
from unittest import mock

import jax
import numpy as np
import pytest

from configs import tiny
from define_jax import checkpoints
from define_jax import export
from define_jax import steps
from define_jax import train
from define_jax import workdir_lock
from define_jax.inference import Inpainter

from conftest import save_checkpoint


def write_lock(workdir, pid, host=None):
  (workdir / workdir_lock.LOCK_NAME).write_text(json.dumps(
      {'pid': pid, 'host': host or socket.gethostname(), 'started': '2026-01-01 00:00:00'}))


def dead_pid() -> int:
  process = subprocess.Popen([sys.executable, '-c', 'pass'])
  process.wait()
  return process.pid


# --- Case 1: two trainings on one workdir; resuming another architecture ----------------

def test_second_training_on_a_workdir_is_refused_naming_the_holder(tmp_path):
  holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
  try:
    write_lock(tmp_path, holder.pid)
    with pytest.raises(workdir_lock.WorkdirInUseError,
                       match=rf'{tmp_path} is in use by another training run \(PID {holder.pid}'):
      train.train_and_evaluate(tiny.get_config(), str(tmp_path))
  finally:
    holder.kill()
    holder.wait()
  assert not (tmp_path / 'checkpoints').exists()


def test_stale_lock_of_a_dead_run_is_taken_over_with_a_warning(tmp_path, caplog):
  pid = dead_pid()
  write_lock(tmp_path, pid)
  with workdir_lock.held(str(tmp_path)):
    assert json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())['pid'] == os.getpid()
    with pytest.raises(workdir_lock.WorkdirInUseError, match=f'PID {os.getpid()}'):
      workdir_lock.acquire(str(tmp_path))  # Held by a live process: this one.
  assert f'from PID {pid}, which is no longer running' in caplog.text
  assert not (tmp_path / workdir_lock.LOCK_NAME).exists()  # Released.


def test_lock_of_another_host_is_refused_with_how_to_remove_it(tmp_path):
  write_lock(tmp_path, 1, host='elsewhere')
  with pytest.raises(workdir_lock.WorkdirInUseError, match='on elsewhere.*if that run is no '
                     'longer running, delete'):
    workdir_lock.acquire(str(tmp_path))


def test_resuming_a_workdir_of_another_architecture_is_refused(tmp_path):
  config = tiny.get_config()
  save_checkpoint(tmp_path, config, steps.create_train_state(config, jax.random.key(0)))
  other = tiny.get_config()
  other.base_features = 16
  with pytest.raises(ValueError, match='trained with base_features=8, but this config has '
                     'base_features=16'):
    train.train_and_evaluate(other, str(tmp_path))
  assert checkpoints.create_manager(str(tmp_path)).all_steps() == [0]  # Nothing set aside.
  assert not (tmp_path / workdir_lock.LOCK_NAME).exists()


# --- Case 3: damaged bytes inside a step, same size ---------------------------------------

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


# --- Case 4: NaN/inf weights, negative variances, absurd magnitudes -----------------------

def poisoned(variables, kind):
  variables = jax.tree.map(np.array, variables)
  if kind == 'negative variance':
    leaf = next(v for p, v in jax.tree_util.tree_flatten_with_path(variables['batch_stats'])[0]
                if p[-1].key == 'var')
    leaf[...] = -1.0
  else:
    jax.tree.leaves(variables["params"])[0].flat[0] = {'nan': np.nan, 'inf': np.inf,
                                                        'huge': 6.5e37}[kind]
  return variables


@pytest.mark.parametrize('kind', ['nan', 'inf', 'huge', 'negative variance'])
def test_broken_weights_are_refused_on_load_and_on_export(tiny_checkpoint, tmp_path, kind):
  variables, config, step = checkpoints.load_model(tiny_checkpoint)
  bad = poisoned(variables, kind)
  with pytest.raises(ValueError, match='damaged'):
    export.write_model_file(str(tmp_path / 'bad.msgpack'), bad, config, step, 'float32')
  assert not os.listdir(tmp_path)
  # A file written before these checks existed.
  with mock.patch('define_jax.weight_checks.check_variables'):
    export.write_model_file(str(tmp_path / 'bad.msgpack'), bad, config, step, 'float32')
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
    export.write_model_file(str(tmp_path / 'm.msgpack'), variables, config, step, 'float16')


def test_non_finite_output_is_an_error_never_a_picture(tiny_checkpoint):
  inpainter = Inpainter.from_checkpoint(tiny_checkpoint)
  inpainter.set_variables(poisoned(checkpoints.load_model(tiny_checkpoint)[0], 'nan'))
  image = np.full((64, 64, 3), 128, np.uint8)
  holes = np.zeros((64, 64), bool)
  holes[10:30, 10:30] = True
  with pytest.raises(ValueError, match='NaN or infinite values'):
    inpainter(image, holes, polarity='hole_white')
