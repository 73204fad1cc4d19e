"""Preemption, exact resume after SIGKILL, and runs that go non-finite."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import tiny
from define_jax.model import checkpoints
from define_jax.training import train

from conftest import REPO_ROOT

NEVER = 10**6  # A step budget the subprocess never reaches before it is signalled.


def start_training(workdir, log_path, *overrides):
  command = [sys.executable, '-m', 'define_jax.main', '--config', 'configs/tiny.py',
             '--workdir', workdir, f'--config.optim.num_train_steps={NEVER}',
             '--config.log.log_every_steps=1', f'--config.eval.eval_every_steps={NEVER}',
             f'--config.eval.image_every_steps={NEVER}', *overrides]
  log = open(log_path, 'w')  # pylint: disable=consider-using-with
  return subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_for(condition, process, timeout=300):
  deadline = time.time() + timeout
  while not condition():
    if process.poll() is not None:
      raise AssertionError(f'training exited early with {process.returncode}')
    if time.time() > deadline:
      process.kill()
      raise AssertionError('timed out waiting for training')
    time.sleep(0.2)


def saved_steps(workdir):
  directory = checkpoints.checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def logged_steps(log_path):
  with open(log_path) as log:
    return [int(line.split('step ')[1].split('/')[0]) for line in log if '| loss ' in line]


@pytest.mark.slow
def test_sigterm_checkpoints_and_same_command_resumes(tmp_path):
  workdir, log_path = str(tmp_path / 'run'), str(tmp_path / 'first.log')
  process = start_training(workdir, log_path, f'--config.log.checkpoint_every_steps={NEVER}')
  wait_for(lambda: len(logged_steps(log_path)) >= 3, process)
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=120) == 0, open(log_path).read()[-3000:]
  stopped_at = saved_steps(workdir)
  assert len(stopped_at) == 1 and stopped_at[0] >= 3
  assert 'Received SIGTERM' in open(log_path).read()

  resumed_log = str(tmp_path / 'second.log')
  process = start_training(workdir, resumed_log, f'--config.log.checkpoint_every_steps={NEVER}')
  wait_for(lambda: len(logged_steps(resumed_log)) >= 1, process)
  process.send_signal(signal.SIGINT)  # Ctrl-C also checkpoints and stops.
  assert process.wait(timeout=120) == 0
  assert logged_steps(resumed_log)[0] == stopped_at[0] + 1
  assert f'at step {stopped_at[0]}' in open(resumed_log).read()
  assert saved_steps(workdir)[-1] > stopped_at[0]


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
  killed = str(tmp_path / 'killed')
  process = start_training(killed, str(tmp_path / 'killed.log'),
                           '--config.log.checkpoint_every_steps=2')
  wait_for(lambda: saved_steps(killed) and saved_steps(killed)[-1] >= 2, process)
  process.kill()  # SIGKILL: no handler runs; possibly mid-save.
  process.wait()
  final_step = saved_steps(killed)[-1] + 3

  config = tiny.get_config()
  config.optim.num_train_steps = final_step
  config.log.checkpoint_every_steps = 2
  resumed = train.train_and_evaluate(config, killed)
  uninterrupted = train.train_and_evaluate(config, str(tmp_path / 'uninterrupted'))

  assert int(resumed.step) == int(uninterrupted.step) == final_step
  for a, b in zip(jax.tree.leaves((resumed.params, resumed.batch_stats, resumed.opt_state)),
                  jax.tree.leaves((uninterrupted.params, uninterrupted.batch_stats,
                                   uninterrupted.opt_state))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


def test_consecutive_nonfinite_steps_stop_training_and_keep_checkpoint(tmp_path):
  workdir = str(tmp_path)
  config = tiny.get_config()
  config.loss.preset = 'l1'  # No VGG: the failure mode does not depend on the loss.
  config.optim.num_train_steps = 2
  train.train_and_evaluate(config, workdir)
  good = checkpoints.load_model(workdir)

  # An absurd learning rate drives the weights to overflow; every later step is skipped.
  config.optim.num_train_steps = 40
  config.optim.learning_rate = 1e30
  config.log.log_every_steps = 1
  config.log.checkpoint_every_steps = 1000
  config.optim.max_consecutive_nonfinite_steps = 3
  with pytest.raises(FloatingPointError, match='max_consecutive_nonfinite_steps'):
    train.train_and_evaluate(config, workdir)
  variables, _, step = checkpoints.load_model(workdir)
  assert step == 2
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(good[0])):
    np.testing.assert_array_equal(a, b)
