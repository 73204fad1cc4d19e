"""Preemption, exact resume after SIGKILL, requeue on another host (the workdir's lease lock,
the rehearsal of a partial FFHQ run), and runs that go non-finite; one training per workdir, no
resume of another architecture, no temporary file left by a SIGTERM during a save."""

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from PIL import Image

from configs import tiny
from define_jax.datasets import prepare
from define_jax.files import output_files
from define_jax.model import checkpoints
from define_jax.training import steps
from define_jax.training import train
from define_jax.training import workdir_lock

from conftest import REPO_ROOT, save_checkpoint, sigterm_to_self_is_safe

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


TWO_HOURS = 2 * 3600


def write_foreign_lock(workdir, *, recorded_age, file_age, with_renewal=True):
  """The lock of a run on another host (node-17, PID 4242): its recorded renewal (or, in the
  format before leases, its start) `recorded_age` and its file's mtime `file_age` seconds
  old."""
  now = time.time()
  holder = {'pid': 4242, 'host': 'node-17', 'token': 'theirs',
            'started': time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now - recorded_age))}
  if with_renewal:
    holder['renewed'] = now - recorded_age
  path = os.path.join(workdir, workdir_lock.LOCK_NAME)
  temporary = f'{path}.theirs.tmp'  # Replaced atomically, as runs write it: a renewing
  with open(temporary, 'w', encoding='utf-8') as file:  # holder never reads it half-written.
    json.dump(holder, file)
  os.utime(temporary, (now - file_age, now - file_age))
  os.replace(temporary, path)
  return path


@pytest.mark.parametrize('recorded_age, file_age, with_renewal', [
    (TWO_HOURS, TWO_HOURS, True),  # A node that failed two hours ago.
    (TWO_HOURS, 0, True),  # Copied or touched since: the recorded renewal is old.
    (0, TWO_HOURS, True),  # A clock that lags: the file's time is old.
    (TWO_HOURS, 0, False),  # Written before leases: started two hours ago.
])
def test_lock_two_hours_old_from_another_host_is_taken_over_with_a_warning(
    tmp_path, caplog, recorded_age, file_age, with_renewal):
  write_foreign_lock(tmp_path, recorded_age=recorded_age, file_age=file_age,
                     with_renewal=with_renewal)
  caplog.set_level(logging.WARNING)
  with workdir_lock.held(str(tmp_path)) as lease:
    holder = json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())
    assert (holder['pid'], holder['host'], holder['token']) == (
        os.getpid(), socket.gethostname(), lease.record['token'])
  assert 'Taking over the lock of' in caplog.text
  assert re.search(r'from PID 4242, whose lease was last renewed 720\d s ago on node-17',
                   caplog.text)
  assert not (tmp_path / workdir_lock.LOCK_NAME).exists()  # Released.


def test_dead_lease_of_another_host_is_taken_over_when_it_expires(tmp_path, monkeypatch, caplog):
  monkeypatch.setattr(workdir_lock, '_WATCH_S', 0.05)
  write_foreign_lock(tmp_path, recorded_age=0, file_age=0)
  caplog.set_level(logging.WARNING)
  start = time.time()
  lease = workdir_lock.acquire(str(tmp_path), lease_s=1.0)  # Nobody renews it.
  assert time.time() - start >= 0.9
  lease.release()
  assert 'is locked by PID 4242 on node-17' in caplog.text  # While it waited.
  assert 'from PID 4242, whose lease was last renewed 1 s ago on node-17' in caplog.text


def test_holder_renews_its_lease_and_notices_a_takeover(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, 'RENEW_S', 0.05)
  path = tmp_path / workdir_lock.LOCK_NAME
  with workdir_lock.held(str(tmp_path)) as lease:
    first = json.loads(path.read_text())['renewed']
    time.sleep(0.3)
    assert json.loads(path.read_text())['renewed'] > first
    lease.check()  # Still ours.
    # A renewal finds it, however busy the machine. (A renewal that had read its own record
    # just before may write it back once: the taker writes again, as a real one would find.)
    deadline = time.monotonic() + 60
    while lease.lost is None and time.monotonic() < deadline:
      write_foreign_lock(tmp_path, recorded_age=0, file_age=0)
      time.sleep(0.2)
    with pytest.raises(workdir_lock.WorkdirInUseError, match='taken over by PID 4242 on '
                       'node-17'):
      lease.check()
  assert json.loads(path.read_text())['token'] == 'theirs'  # Not removed by the old holder.


def write_partial_ffhq(manual_dir, count, side=48):
  """`count` small faces in FFHQ's layout, images1024x1024/00000/00000.png ..."""
  folder = manual_dir / 'images1024x1024' / '00000'
  folder.mkdir(parents=True)
  base = (tiny_face(side) * 255).astype(np.uint8)
  for number in range(count):
    Image.fromarray(np.roll(base, 3 * number, axis=1)).save(folder / f'{number:05d}.png')


def tiny_face(side):
  import skimage.data  # pylint: disable=import-outside-toplevel
  import skimage.transform  # pylint: disable=import-outside-toplevel
  return skimage.transform.resize(skimage.data.astronaut()[:300, 100:400], (side, side))


@pytest.mark.slow
def test_rehearsal_partial_ffhq_killed_and_requeued_on_another_host_resumes(tmp_path):
  """The researcher's path at test size (scripts/rehearse_ffhq.sh runs it at 256²): 10 files
  in FFHQ's layout -> prepare -> training with the final loss -> SIGKILL -> requeued on
  another host (the lock left behind names a host that cannot be checked, renewed two hours
  ago) -> the same command resumes."""
  write_partial_ffhq(tmp_path / 'ffhq', 10)
  tfds_dir = str(tmp_path / 'tfds')
  prepare.main(['--dataset', 'ffhq/256', '--manual_dir', str(tmp_path / 'ffhq'),
                '--data_dir', tfds_dir])
  workdir, first_log = str(tmp_path / 'run'), str(tmp_path / 'first.log')
  flags = ['--config.input.dataset=ffhq', '--config.input.ffhq_config=ffhq/256',
           f'--config.input.data_dir={tfds_dir}', '--config.loss.preset=final',
           '--config.log.checkpoint_every_steps=2']
  process = start_training(workdir, first_log, *flags)
  wait_for(lambda: saved_steps(workdir) and saved_steps(workdir)[-1] >= 2, process)
  process.kill()
  process.wait()
  killed_at = saved_steps(workdir)[-1]
  write_foreign_lock(workdir, recorded_age=TWO_HOURS, file_age=TWO_HOURS)  # Requeued elsewhere.

  command = [sys.executable, '-m', 'define_jax.main', '--config', 'configs/tiny.py',
             '--workdir', workdir, f'--config.optim.num_train_steps={killed_at + 2}',
             '--config.log.log_every_steps=1', f'--config.eval.eval_every_steps={killed_at + 2}',
             f'--config.eval.image_every_steps={NEVER}', *flags]
  resumed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                           check=False)
  assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
  assert 'from PID 4242, whose lease was last renewed' in resumed.stderr
  assert f'Resuming pconv_unet (64², loss \'final\') at step {killed_at}' in resumed.stdout
  assert f'eval at step {killed_at + 2}' in resumed.stdout  # On the held-out validation file.
  assert saved_steps(workdir)[-1] == killed_at + 2
  assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_NAME))


def write_lock(workdir, pid, host=None):
  (workdir / workdir_lock.LOCK_NAME).write_text(json.dumps(
      {'pid': pid, 'host': host or socket.gethostname(), 'started': '2026-01-01 00:00:00'}))


def dead_pid() -> int:
  process = subprocess.Popen([sys.executable, '-c', 'pass'])
  process.wait()
  return process.pid


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


def test_lock_of_a_killed_unreaped_run_is_stale(tmp_path):
  killed = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
  killed.kill()
  time.sleep(0.5)  # Dead, but a zombie until waited for.
  try:
    write_lock(tmp_path, killed.pid)
    workdir_lock.acquire(str(tmp_path)).release()
  finally:
    killed.wait()


def test_live_lease_of_another_host_is_refused(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, '_WATCH_S', 0.05)
  stop = threading.Event()

  def renew():  # A live run on another host renews its lease, atomically as runs do (a
    # truncate-then-write let acquire read an empty lock on a busy machine).
    theirs = tmp_path / 'theirs.tmp'
    while not stop.wait(0.05):
      theirs.write_text(json.dumps(
          {'pid': 1, 'host': 'elsewhere', 'started': '2026-01-01 00:00:00',
           'renewed': time.time(), 'token': 'theirs'}))
      os.replace(theirs, tmp_path / workdir_lock.LOCK_NAME)

  renew_thread = threading.Thread(target=renew)
  renew_thread.start()
  try:
    time.sleep(0.2)
    with pytest.raises(workdir_lock.WorkdirInUseError,
                       match=r'in use by another training run \(PID 1 on elsewhere.*lease '
                       r'renewed 0 s ago'):
      workdir_lock.acquire(str(tmp_path))
  finally:
    stop.set()
    renew_thread.join()


def test_resuming_a_workdir_of_another_architecture_is_refused(tmp_path):
  config = tiny.get_config()
  save_checkpoint(tmp_path, config, steps.create_train_state(config, jax.random.key(0)))
  other = tiny.get_config()
  other.model.base_features = 16
  with pytest.raises(ValueError, match=r'trained with another network: model.base_features=8 '
                     r'\(this config: 16\)'):
    train.train_and_evaluate(other, str(tmp_path))
  assert checkpoints.create_manager(str(tmp_path)).all_steps() == [0]  # Nothing set aside.
  assert not (tmp_path / workdir_lock.LOCK_NAME).exists()


def test_sigterm_during_a_save_leaves_no_temporary_file(tmp_path):
  sigterm_to_self_is_safe()
  def write_then_terminated(file):
    file.write(b'partial')
    os.kill(os.getpid(), signal.SIGTERM)

  with pytest.raises(KeyboardInterrupt):
    with output_files.terminate_as_interrupt():
      output_files.write_file(tmp_path / 'out.png', write_then_terminated)
  assert os.listdir(tmp_path) == []
