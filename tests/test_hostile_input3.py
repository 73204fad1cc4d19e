"""Issue 24, hostile input part three: each test is one numbered case and failed on the code
before its fix (concurrent runs, damaged weights, evaluate's output folder, and the rest)."""

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from unittest import mock

import cv2
import jax
import numpy as np
import pytest
from flax import serialization
from PIL import Image

from configs import tiny
from define_jax import evaluate
from define_jax import export
from define_jax import inpaint
from define_jax.demo import demo
from define_jax.demo import local_only
from define_jax.files import image_files
from define_jax.files import output_files
from define_jax.files.image_files import InputError
from define_jax.inference import Inpainter
from define_jax.inference import inference
from define_jax.model import checkpoints
from define_jax.model import model_file
from define_jax.training import steps
from define_jax.training import train
from define_jax.training import workdir_lock

from conftest import BAND_ROWS, REPO_ROOT, astronaut, save_checkpoint, write_masks
from test_hostile_input import run_cli


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


def test_lock_of_a_killed_unreaped_run_is_stale(tmp_path):
  killed = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
  killed.kill()
  time.sleep(0.5)  # Dead, but a zombie until waited for.
  try:
    write_lock(tmp_path, killed.pid)
    workdir_lock.release(workdir_lock.acquire(str(tmp_path)))
  finally:
    killed.wait()


def test_lock_of_another_host_is_refused_with_how_to_remove_it(tmp_path):
  write_lock(tmp_path, 1, host='elsewhere')
  with pytest.raises(workdir_lock.WorkdirInUseError, match='on elsewhere.*if that run is no '
                     'longer running, delete'):
    workdir_lock.acquire(str(tmp_path))


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


def test_non_finite_output_is_an_error_never_a_picture(tiny_checkpoint):
  inpainter = Inpainter.from_checkpoint(tiny_checkpoint)
  inpainter.set_variables(poisoned(checkpoints.load_model(tiny_checkpoint)[0], 'nan'))
  image = np.full((64, 64, 3), 128, np.uint8)
  holes = np.zeros((64, 64), bool)
  holes[10:30, 10:30] = True
  with pytest.raises(ValueError, match='NaN or infinite values'):
    inpainter(image, holes, polarity='hole_white')


# --- Cases 2, 5, 7, 19: evaluate's output folder, masks, size and unreadable files ------

def evaluate_cli(*args) -> tuple[int, str]:
  stderr = io.StringIO()
  with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
    status = evaluate.main([str(a) for a in args])
  return status, stderr.getvalue()


@pytest.fixture(scope='module')
def faces(tmp_path_factory):
  directory = tmp_path_factory.mktemp('faces')
  photo = (astronaut(80, 80) * 255).astype(np.uint8)
  for k in range(4):
    Image.fromarray(np.roll(photo, 5 * k, axis=1)).save(directory / f'face_{k}.png')
  return directory


def test_evaluate_out_inside_the_image_or_mask_folder_is_refused_before_scoring(
    tiny_checkpoint, faces, tmp_path):
  masks_dir = write_masks(tmp_path / 'masks', BAND_ROWS)
  before = sorted(os.listdir(faces))
  with mock.patch.object(Inpainter, 'load', side_effect=AssertionError('scored')):
    for out in (faces, faces / 'sub', masks_dir):
      status, err = evaluate_cli('--checkpoint', tiny_checkpoint, '--image_dir', faces,
                                 '--masks', 'nvidia_irregular', '--mask_dir', masks_dir,
                                 '--out', out)
      assert status != 0 and 'lies inside' in err and str(out) in err
  assert sorted(os.listdir(faces)) == before


def test_evaluate_never_overwrites_files_it_did_not_write(tiny_checkpoint, faces, tmp_path):
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'report.md').write_text('my notes')
  (out / 'band_00-10.png').write_bytes(b'my photo')
  with mock.patch.object(Inpainter, 'load', side_effect=AssertionError('scored')):
    status, err = evaluate_cli('--checkpoint', tiny_checkpoint, '--image_dir', faces,
                               '--num_images', 2, '--out', out)
    assert status != 0 and 'report.md, band_00-10.png' in err and 'not written by' in err
    (tmp_path / 'file').write_text('x')
    status, err = evaluate_cli('--checkpoint', tiny_checkpoint, '--out', tmp_path / 'file')
    assert status != 0 and 'is a file' in err  # Checked before scoring too.
  assert (out / 'report.md').read_text() == 'my notes'
  # Its own report is replaced on the next run.
  fresh = tmp_path / 'fresh'
  args = ['--checkpoint', tiny_checkpoint, '--image_dir', faces, '--num_images', 2,
          '--out', fresh]
  assert evaluate_cli(*args)[0] == 0
  assert evaluate_cli(*args)[0] == 0


def test_evaluate_mask_dir_of_photos_is_refused_like_inpaint_refuses_them(
    tiny_checkpoint, faces, tmp_path):
  status, err = evaluate_cli('--checkpoint', tiny_checkpoint, '--image_dir', faces,
                             '--masks', 'nvidia_irregular', '--mask_dir', faces,
                             '--num_images', 2, '--out', tmp_path / 'out')
  assert status != 0 and 'is not binary' in err and 'face_' in err


def test_evaluate_image_size_too_small_for_lpips_is_refused(tiny_checkpoint, faces, tmp_path):
  status, err = evaluate_cli('--checkpoint', tiny_checkpoint, '--image_dir', faces,
                             '--image_size', 7, '--out', tmp_path / 'out')
  assert status != 0 and '--image_size 7' in err and 'at least 16' in err


def test_evaluate_skips_counts_and_reports_unreadable_images(tiny_checkpoint, faces, tmp_path):
  folder = tmp_path / 'faces'
  shutil.copytree(faces, folder)
  (folder / 'face_1.png').write_bytes(b'\x89PNG damaged')
  result = evaluate.run(['--checkpoint', tiny_checkpoint, '--image_dir', str(folder),
                         '--num_images', '3', '--out', str(tmp_path / 'out')])
  assert result['rows'][-1]['images'] == 3  # The next readable file took its place.
  assert '1 unreadable image files skipped' in result['markdown']
  assert 'face_1.png' in result['markdown']


# --- Case 8: a hostile config or layout inside a .msgpack model file ---------------------

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


# --- Cases 6, 11, 16: concurrent folder runs, interruptions, file modes -----------------

@pytest.fixture(scope='module')
def inpainter(tiny_checkpoint) -> Inpainter:
  return Inpainter.from_checkpoint(tiny_checkpoint)


def photo_folders(tmp_path, names):
  images, masks_dir = tmp_path / 'images', tmp_path / 'masks'
  images.mkdir()
  masks_dir.mkdir()
  holes = np.zeros((24, 20), np.uint8)
  holes[5:12, 4:15] = 255
  for name in names:
    Image.fromarray(np.full((24, 20, 3), 90, np.uint8)).save(images / f'{name}.png')
    Image.fromarray(holes).save(masks_dir / f'{name}.png')
  return images, masks_dir


def run_inpaint(inpainter, *args) -> tuple[int, str]:
  return run_cli(args, inpainter)


def folder_run(images, masks_dir, out, *extra):
  return ['--images', images, '--masks', masks_dir, '--polarity', 'hole_white', '--out', out,
          *extra]


def test_a_concurrent_run_s_output_is_never_replaced(inpainter, tmp_path):
  images, masks_dir = photo_folders(tmp_path, ['a', 'b'])
  out = tmp_path / 'out'
  original_call = Inpainter.__call__
  calls = []

  def other_run_writes_b_meanwhile(self, *args, **kwargs):
    result = original_call(self, *args, **kwargs)
    calls.append(1)
    if len(calls) == 2:  # Inputs are taken in order: a, then b.
      (out / 'b.png').write_bytes(b'the other run')
    return result

  with mock.patch.object(Inpainter, '__call__', other_run_writes_b_meanwhile):
    status, err = run_inpaint(inpainter, *folder_run(images, masks_dir, out))
  assert (out / 'b.png').read_bytes() == b'the other run'
  assert status == 1 and '1 written' in err and '1 skipped (1 output exists)' in err
  assert sorted(os.listdir(out)) == ['a.png', 'b.png']  # No temporary file left.


def test_interrupted_folder_run_prints_its_summary_and_a_rerun_skips_finished_files(
    inpainter, tmp_path):
  images, masks_dir = photo_folders(tmp_path, ['a', 'b', 'c'])
  out = tmp_path / 'out'
  original = inpaint.inpaint_file

  def interrupted_at_b(inpainter_, image, *args):
    if image.name == 'b.png':
      raise KeyboardInterrupt
    original(inpainter_, image, *args)

  with mock.patch.object(inpaint, 'inpaint_file', interrupted_at_b):
    status, err = run_inpaint(inpainter, *folder_run(images, masks_dir, out))
  assert status == 130 and 'Traceback' not in err
  assert 'Interrupted after 1 of 3: 1 written' in err
  status, err = run_inpaint(inpainter, *folder_run(images, masks_dir, out, '--skip_existing'))
  assert status == 0 and '2 written' in err and '1 already there, 0 skipped' in err


def sigterm_to_self_is_safe():
  """Signal handlers are installed from the main thread only; elsewhere SIGTERM would kill
  the test process."""
  if threading.current_thread() is not threading.main_thread():
    pytest.skip('tests do not run in the main thread')


def test_sigterm_during_a_save_leaves_no_temporary_file(tmp_path):
  sigterm_to_self_is_safe()
  def write_then_terminated(file):
    file.write(b'partial')
    os.kill(os.getpid(), signal.SIGTERM)

  with pytest.raises(KeyboardInterrupt):
    with output_files.terminate_as_interrupt():
      output_files.write_file(tmp_path / 'out.png', write_then_terminated)
  assert os.listdir(tmp_path) == []


def test_outputs_respect_the_umask_and_an_overwritten_file_keeps_its_mode(inpainter, tmp_path):
  image = tmp_path / 'image.png'
  Image.fromarray(np.full((24, 20, 3), 90, np.uint8)).save(image)
  holes = np.zeros((24, 20), np.uint8)
  holes[5:12, 4:15] = 255
  Image.fromarray(holes).save(tmp_path / 'mask.png')
  args = ['--image', image, '--mask', tmp_path / 'mask.png', '--polarity', 'hole_white']
  previous = os.umask(0o022)
  try:
    assert run_inpaint(inpainter, *args, '--out', tmp_path / 'new.png')[0] == 0
    (tmp_path / 'kept.png').write_bytes(b'x')
    os.chmod(tmp_path / 'kept.png', 0o640)
    assert run_inpaint(inpainter, *args, '--out', tmp_path / 'kept.png', '--overwrite')[0] == 0
  finally:
    os.umask(previous)
  assert stat.S_IMODE(os.stat(tmp_path / 'new.png').st_mode) == 0o644
  assert stat.S_IMODE(os.stat(tmp_path / 'kept.png').st_mode) == 0o640


# --- Case 9: main's errors; case 10: export's --out ---------------------------------------

MAIN = [sys.executable, '-m', 'define_jax.main', '--config', os.path.join(REPO_ROOT, 'configs',
                                                                          'tiny.py')]


@pytest.mark.parametrize('extra, message', [
    (['--workdir', 'FILE'], 'is a file, not a directory'),
    (['--config.optim.batch_size=0'], 'config.optim.batch_size=0 must be a positive multiple'),
    (['--config.optim.batch_size=-8'], 'config.optim.batch_size=-8 must be a positive multiple'),
    (['--config.model.image_size=100', '--config.model.layers=1000'],
     'layers=1000: need 2 to 13 levels'),
    (['--config.optim.batchsize=8'], 'Did you mean "batch_size"'),
    (['--config.batch_size=8'], 'Did you mean --config.optim.batch_size'),
])
def test_main_errors_are_one_line_with_exit_status_2(tmp_path, extra, message):
  (tmp_path / 'file').write_text('')
  extra = [str(tmp_path / 'file') if arg == 'FILE' else arg for arg in extra]
  workdir = [] if '--workdir' in extra else ['--workdir', str(tmp_path / 'run')]
  result = subprocess.run(MAIN + workdir + extra, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], lines


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


# --- Cases 15, 17, 20: anti-aliased and alpha masks, messages, animations --------------

def brush_strokes(size=512, spacing=30) -> np.ndarray:
  """6-pixel anti-aliased strokes, white = hole: more than 5% of the pixels are grey."""
  strokes = np.zeros((size, size), np.uint8)
  for y in range(20, size - 20, spacing):
    cv2.line(strokes, (10, y), (size - 12, y + 15), 255, 6, cv2.LINE_AA)
  return strokes


def test_anti_aliased_brush_masks_are_accepted_soft_masks_are_not():
  strokes = brush_strokes()
  brightness = strokes / 255.0
  assert ((brightness > 0.1) & (brightness < 0.9)).mean() > 0.05  # Refused before.
  known = image_files.known_pixels(strokes, 'hole_white')
  np.testing.assert_array_equal(known, (strokes <= 127).astype(np.float32))
  with pytest.raises(InputError, match='not binary'):  # A blurred (soft) mask.
    image_files.known_pixels(cv2.GaussianBlur(strokes, (0, 0), 1.5), 'hole_white')
  with pytest.raises(InputError, match='not binary'):  # A photo.
    image_files.known_pixels((astronaut(64, 64)[..., 0] * 255).astype(np.uint8), 'keep_white')
  # The threshold is an option: where the edges are cut.
  wide = image_files.known_pixels(strokes, 'hole_white', threshold=0.1)
  np.testing.assert_array_equal(wide, (strokes <= 25).astype(np.float32))
  assert wide.sum() < known.sum()


def test_mask_holes_only_in_alpha_are_used_and_mask_threshold_is_a_cli_option(
    inpainter, tmp_path):
  image = tmp_path / 'image.png'
  Image.fromarray(np.full((24, 20, 3), 90, np.uint8)).save(image)
  rgba = np.zeros((24, 20, 4), np.uint8)  # Transparent black,
  rgba[5:12, 4:15] = (255, 0, 255, 255)  # with opaque magenta strokes painted on it.
  Image.fromarray(rgba, 'RGBA').save(tmp_path / 'alpha.png')
  out = tmp_path / 'out.png'
  assert run_inpaint(inpainter, '--image', image, '--mask', tmp_path / 'alpha.png',
                     '--polarity', 'hole_white', '--out', out)[0] == 0
  result = np.asarray(Image.open(out))
  assert not np.array_equal(result[5:12, 4:15], np.full((7, 11, 3), 90))  # Filled.
  np.testing.assert_array_equal(result[15:], 90)
  # --mask_threshold: where anti-aliased edges are cut, checked before anything runs.
  with pytest.raises(SystemExit, match='2'), contextlib.redirect_stderr(io.StringIO()) as err:
    inpaint.parse_args(['--image', 'i.png', '--mask', 'm.png', '--polarity', 'hole_white',
                        '--out', 'o.png', '--mask_threshold', '1.5'])
  assert '--mask_threshold 1.5: must lie between 0 and 1' in err.getvalue()
  assert inpaint.parse_args(['--image', 'i.png', '--mask', 'm.png', '--polarity', 'hole_white',
                             '--out', 'o.png', '--mask_threshold', '0.2']).mask_threshold == 0.2


def test_model_file_with_a_non_json_config_names_the_file(tiny_checkpoint, tmp_path):
  path = model_file_with(tmp_path, tiny_checkpoint)
  payload = serialization.msgpack_restore(path.read_bytes())
  payload['config'] = 'not json {'
  path.write_bytes(serialization.msgpack_serialize(payload))
  with pytest.raises(ValueError, match=r'hostile\.msgpack: its config is not JSON'):
    Inpainter.from_checkpoint(str(path))


@pytest.mark.parametrize('image_format', ['GIF', 'PNG', 'TIFF'])
def test_animated_and_multi_page_images_are_refused(tmp_path, image_format):
  frames = [Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)) for k in range(3)]
  path = tmp_path / f'animated.{image_format.lower()}'
  frames[0].save(path, format=image_format, save_all=True, append_images=frames[1:])
  with pytest.raises(InputError, match='animated.* has 3 frames'):
    image_files.open_image(path)
  with pytest.raises(InputError, match='has 3 frames'):  # Training data and mask sets too.
    image_files.read_photo(path.read_bytes(), max_pixels=None)
  with pytest.raises(InputError, match='has 3 frames'):
    image_files.read_mask(path, 'hole_white', max_pixels=None)


# --- Case 18: the demo serves only its examples, checks the Origin's port, cleans up -----

def asgi_status(hosts, headers, method='POST') -> int:
  """The status LocalOnly answers (200: passed on to the app)."""
  sent = []

  async def app(scope, receive, send):  # pylint: disable=unused-argument
    sent.append({'type': 'http.response.start', 'status': 200})

  async def send(message):
    sent.append(message)

  scope = {'type': 'http', 'method': method, 'path': '/gradio_api/queue/join',
           'headers': [(k.encode(), v.encode()) for k, v in headers.items()]}
  asyncio.run(local_only.LocalOnly(app, hosts)(scope, None, send))
  return sent[0]['status']


@pytest.mark.parametrize('hosts', [list(local_only.LOCAL_NAMES), None])
def test_demo_origin_check_includes_the_port(hosts):
  host = {'host': 'localhost:7860'}
  assert asgi_status(hosts, {**host, 'origin': 'http://localhost:7860'}) == 200
  assert asgi_status(hosts, {**host, 'origin': 'http://localhost:9999'}) == 403
  assert asgi_status(hosts, {**host, 'origin': 'http://localhost'}) == 403  # Port 80.
  assert asgi_status(hosts, {'host': 'localhost', 'origin': 'http://localhost'}) == 200


def test_demo_serves_only_example_images_and_cleans_up_on_sigterm(inpainter, tmp_path,
                                                                  monkeypatch):
  sigterm_to_self_is_safe()
  monkeypatch.setattr(demo, 'configure_logging', lambda verbose: None)
  extra = tmp_path / 'extra'
  extra.mkdir()
  Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(extra / 'face.png')
  (extra / 'secret.txt').write_text('do not serve')
  upload = tmp_path / 'upload.png'
  upload.write_bytes(b'an upload in the cache')
  seen = {}

  def launch(app, **kwargs):
    seen['allowed_paths'] = kwargs['allowed_paths']

  def block_thread(app):
    app.upload_file_set.add(str(upload))
    (folder,) = seen['allowed_paths']
    seen['examples'] = sorted(os.listdir(folder))
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # The handler interrupts this.

  monkeypatch.setattr(Inpainter, 'load', staticmethod(lambda path, **_: inpainter))
  monkeypatch.setattr(demo.gr.Blocks, 'launch', launch)
  monkeypatch.setattr(demo.gr.Blocks, 'block_thread', block_thread)
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    assert demo.main(['--examples', str(extra), '--port', '8']) == 0
  (folder,) = seen['allowed_paths']
  assert os.path.basename(folder).startswith('define_jax_demo_examples_')
  assert 'example_03.png' in seen['examples'] and not any('secret' in f for f in seen['examples'])
  assert not os.path.exists(folder)  # The temporary folder is gone,
  assert not upload.exists()  # and so are the uploads.
  assert (extra / 'secret.txt').exists() and (extra / 'face.png').exists()


# --- Case 12: passes are a loop inside one compiled program, with a maximum --------------

def test_any_number_of_passes_runs_one_compiled_program(tiny_checkpoint):
  inpainter = Inpainter.from_checkpoint(tiny_checkpoint)
  image = (astronaut(40, 40) * 255).astype(np.uint8)
  holes = np.zeros((40, 40), bool)
  holes[10:25, 8:30] = True
  results = [inpainter(image, holes, polarity='hole_white', passes=passes)
             for passes in (1, 2, 3, inference.MAX_PASSES)]
  assert len(inpainter.compiled_shapes) == 1, inpainter.compiled_shapes
  assert not np.array_equal(results[0], results[1])
  assert not np.array_equal(results[1], results[2])
  with pytest.raises(ValueError, match=f'need 1 to {inference.MAX_PASSES} passes'):
    inpainter(image, holes, polarity='hole_white', passes=10**6)
  with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
    inpaint.parse_args(['--image', 'i.png', '--mask', 'm.png', '--polarity', 'hole_white',
                        '--out', 'o.png', '--passes', '1000000'])
  assert f'--passes 1000000: at most {inference.MAX_PASSES}' in err.getvalue()
