"""Evaluation: mask choice and bands, baselines, reports, determinism, CLI and bad input."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from define_jax import evaluate
from define_jax.eval import evaluation_set
from define_jax.eval import landmark_error
from define_jax.eval import scoring
from define_jax.data import image_folder
from define_jax.inference import baselines
from define_jax.inference import Inpainter
from define_jax.runtime import data_parallel

from conftest import BAND_ROWS, OUT_OF_BAND_ROWS, REPO_ROOT, astronaut, write_masks


@pytest.fixture(scope='module')
def face_dir(tmp_path_factory):
  """Twelve 'photos': crops of the astronaut at different offsets."""
  directory = tmp_path_factory.mktemp('faces')
  photo = (astronaut(160, 160) * 255).astype(np.uint8)
  for k in range(12):
    top, left = 8 * (k % 4), 8 * (k // 4)
    Image.fromarray(photo[top:top + 120, left:left + 100]).save(directory / f'face_{k:02d}.png')
  return directory


def test_baselines_fill_holes_and_keep_known_pixels():
  image = astronaut(64, 64)
  known = np.ones((64, 64, 1), np.float32)
  known[20:30, 20:40] = 0.0
  for baseline in baselines.BASELINES:
    result = baseline.inpaint(image, known)
    np.testing.assert_array_equal(result[known[..., 0] == 1], image[known[..., 0] == 1])
    hole_error = np.abs(result - image)[known[..., 0] == 0].mean()
    assert hole_error < np.abs(0.5 - image)[known[..., 0] == 0].mean(), baseline.name


def test_evaluation_report_is_complete_and_deterministic(tiny_checkpoint, face_dir, tmp_path):
  mask_dir = write_masks(tmp_path / 'masks', BAND_ROWS + OUT_OF_BAND_ROWS)
  args = ['--workdir', tiny_checkpoint, '--image_dir', str(face_dir), '--masks',
          'nvidia_irregular', '--mask_dir', str(mask_dir), '--num_images', '12', '--baselines',
          '--batch_size', '5']
  result = evaluate.run(args)
  out_dir = result['out_dir']
  assert sorted(os.listdir(out_dir)) == sorted(
      ['report.md', 'report.json'] +
      [f'band_{10 * b:02d}-{10 * b + 10:02d}.png' for b in range(6)])
  methods = ['DeFINe', 'Telea (OpenCV)', 'Navier–Stokes (OpenCV)', 'Biharmonic (scikit-image)']
  bands = ['0–10%', '10–20%', '20–30%', '30–40%', '40–50%', '50–60%', 'All']
  rows = result['rows']
  assert [(r['band'], r['method']) for r in rows] == [(b, m) for b in bands for m in methods]
  assert [r['images'] for r in rows[::4]] == [2] * 6 + [12]
  for row in rows:
    assert 0 <= row['l1'] <= 100 and 0 <= row['ssim'] <= 1
    assert row['lpips'] >= 0 and row['lpips_alex'] >= 0
  # Error grows with the hole ratio for every method (masks are top rows of the same photos).
  for method in methods:
    l1 = [r['l1'] for r in rows if r['method'] == method and r['band'] != 'All']
    assert l1 == sorted(l1), (method, l1)
  with open(os.path.join(out_dir, 'report.json'), encoding='utf-8') as f:
    report = json.load(f)
  assert len(report['per_image']) == 12
  assert report['per_image'][0]['image'] == 'face_00.png'
  with open(os.path.join(out_dir, 'report.md'), encoding='utf-8') as f:
    markdown = f.read()
  heading = ('| Hole ratio | Images | Method | L1 (×100) ↓ | PSNR ↑ | SSIM ↑ | LPIPS-VGG ↓ | '
             'LPIPS-Alex ↓ |')
  assert heading in markdown
  assert markdown == result['markdown']
  # Same command, same numbers (batching changed too).
  again = evaluate.run(args[:-1] + ['3'])
  assert again['rows'] == rows


def test_validation_split_of_the_checkpoint_dataset(tiny_checkpoint):
  """The tiny config's dataset is the quickstart photos: their validation crops."""
  result = evaluate.run(['--workdir', tiny_checkpoint, '--num_images', '6'])
  assert result['rows'][-1]['band'] == 'All' and result['rows'][-1]['images'] == 6
  assert 'validation split' in result['markdown']


def test_config_overrides_change_the_checkpoints_stored_config(tiny_checkpoint, face_dir,
                                                               tmp_path):
  """The tiny run trained on the quickstart photos; overrides score the validation split of
  another folder, at another inference precision."""
  result = evaluate.run(['--workdir', tiny_checkpoint, '--num_images', '2', '--out',
                         str(tmp_path / 'eval'),
                         '--config.input.dataset=image_folder',
                         f'--config.input.image_dir={face_dir}', '--config.model.dtype=bfloat16'])
  assert "validation split of 'image_folder'" in result['markdown']
  assert result['rows'][-1]['images'] == 2


@pytest.mark.parametrize('extra, message', [
    (['--masks', 'qd_imd'], 'needs --mask_dir'),
    (['--image_dir', 'FACES', '--masks', 'qd_imd', '--mask_dir', 'BROKEN'],
     'x.png is not an image that can be read'),
    (['--image_dir', 'BROKEN'], 'No readable image below'),
    (['--config.model.dtypes=bfloat16'], "no config field 'model.dtypes'"),
    (['--config.model.layers=5'], 'do not fit the model'),
])
def test_bad_input_gives_clear_errors(tiny_checkpoint, face_dir, tmp_path, capsys, extra,
                                      message):
  broken = tmp_path / 'broken'
  broken.mkdir()
  (broken / 'x.png').write_bytes(b'\x89PNG truncated')
  extra = [{'BROKEN': str(broken), 'FACES': str(face_dir)}.get(arg, arg) for arg in extra]
  assert evaluate.main(['--workdir', tiny_checkpoint, '--num_images', '2'] + extra) == 2
  assert message in capsys.readouterr().err


def test_out_directory_and_the_validation_split_of_a_folder(tiny_checkpoint, tmp_path):
  faces = tmp_path / 'faces'
  faces.mkdir()
  photo = (astronaut(120, 100) * 255).astype(np.uint8)
  for k in range(40):
    Image.fromarray(np.roll(photo, k, axis=1)).save(faces / f'person_{k:02d}.png')
  held_out = image_folder.split_image_files(image_folder.list_image_files(faces), 0.1)[1]
  assert held_out  # the rule is by file name: this folder holds some out
  out = tmp_path / 'report here'
  args = ['--checkpoint', tiny_checkpoint, '--image_dir', str(faces), '--num_images', '50',
          '--out', str(out)]
  everything = evaluate.run(args)
  assert everything['out_dir'] == str(out) and (out / 'report.json').is_file()
  assert everything['rows'][-1]['images'] == 40
  validation = evaluate.run(args + ['--split', 'validation'])
  assert validation['rows'][-1]['images'] == len(held_out)
  assert 'validation split of' in validation['markdown']
  (tmp_path / 'file').write_text('')
  assert evaluate.main(args[:-1] + [str(tmp_path / 'file')]) == 2


def test_workdir_without_checkpoint_lists_its_contents(tmp_path, capsys):
  (tmp_path / 'notes.txt').write_text('')
  assert evaluate.main(['--workdir', str(tmp_path)]) == 2
  assert 'notes.txt' in capsys.readouterr().err


@pytest.mark.slow
def test_command_line_on_real_faces_and_nvidia_masks(tiny_checkpoint, shared_data):
  """`python -m define_jax.evaluate` on UTKFace faces and NVIDIA masks: every band filled."""
  command = [sys.executable, '-m', 'define_jax.evaluate', '--workdir', tiny_checkpoint,
             '--image_dir', os.path.join(shared_data, 'faces', 'utkface'),
             '--masks', 'nvidia_irregular',
             '--mask_dir', os.path.join(shared_data, 'masks', 'nvidia_irregular'),
             '--num_images', '12', '--baselines']
  result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  for band in ('0–10%', '10–20%', '20–30%', '30–40%', '40–50%', '50–60%'):
    assert f'| {band} | 2 | DeFINe |' in result.stdout
  assert '| All | 12 | DeFINe |' in result.stdout


def test_every_band_on_each_photo_at_another_size_with_each_fit(tiny_checkpoint, face_dir,
                                                                 tmp_path):
  """--masks_per_image 6: each of 2 photos with one mask per band; --fit and --image_size
  beyond the model's size (biharmonic included)."""
  mask_dir = write_masks(tmp_path / 'masks', BAND_ROWS)
  for fit in ('pad', 'resize'):
    result = evaluate.run(['--workdir', tiny_checkpoint, '--image_dir', str(face_dir),
                           '--masks', 'nvidia_irregular', '--mask_dir', str(mask_dir),
                           '--num_images', '2', '--masks_per_image', '6', '--image_size', '96',
                           '--fit', fit, '--baselines', '--out', str(tmp_path / fit)])
    report = json.loads((tmp_path / fit / 'report.json').read_text(encoding='utf-8'))
    assert f"fit='{fit}'" in report['header'][0] and 'each with 6 masks' in report['header'][1]
    images = [record['image'] for record in report['per_image']]
    assert images == [images[0]] * 6 + [images[6]] * 6 and images[0] != images[6]
    assert [r['images'] for r in result['rows'] if r['method'] == 'DeFINe'] == [2] * 6 + [12]
    assert 'Biharmonic (scikit-image)' in {r['method'] for r in result['rows']}


def test_face_part_holes_sit_on_each_face_and_rows_are_parts(tiny_checkpoint, tmp_path):
  """--masks face_parts: the holes hide an eye, the nose or the mouth of the face found in
  each photo (a photo without a face is skipped and named); rows are per part."""
  photos = tmp_path / 'photos'
  photos.mkdir()
  Image.fromarray((astronaut(128, 128) * 255).astype(np.uint8)).save(photos / 'a_face.png')
  Image.fromarray(np.full((128, 128, 3), 90, np.uint8)).save(photos / 'b_wall.png')
  result = evaluate.run(['--workdir', tiny_checkpoint, '--image_dir', str(photos), '--masks',
                         'face_parts', '--masks_per_image', '4', '--num_images', '2',
                         '--image_size', '128', '--baselines', '--out', str(tmp_path / 'out')])
  parts = ['left_eye', 'mouth', 'nose', 'right_eye']
  assert sorted({r['band'] for r in result['rows']}) == ['All'] + parts
  assert all(r['images'] == 1 for r in result['rows'] if r['band'] != 'All')
  report = json.loads((tmp_path / 'out' / 'report.json').read_text(encoding='utf-8'))
  assert {record['image'] for record in report['per_image']} == {'a_face.png'}
  assert any('b_wall.png: no face found' in line for line in report['header'])
  assert '| Face part | Images | Method |' in result['markdown']
  # Each hole is a small part of the photo (the astronaut's face is small), the eyes' alike.
  ratios = {r['mask']: r['hole_ratio'] for r in report['per_image']}
  assert all(0.001 < ratio < 0.1 for ratio in ratios.values()), ratios
  assert ratios['left_eye'] == pytest.approx(ratios['right_eye'], rel=0.2)
  # Where the filled part lands: the detector's landmarks on each composite against the photo's.
  assert 'Part landmarks off (×IOD) ↓' in result['markdown']
  assert all(0.0 <= r['landmark_error'] <= landmark_error.NOT_FOUND_ERROR for r in result['rows'])
  assert all('landmark_error' in scores for record in report['per_image']
             for scores in record['scores'].values())


def test_metrics_run_on_a_bounded_number_of_pixels_whatever_the_batch(monkeypatch):
  """A scoring batch of large images is scored a few images at a time (LPIPS-VGG's
  activations grow with the pixels: 32 images at 1024² asked for 53 GB), with the same
  scores as one call."""
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(5, 32, 32, 3)).astype(np.float32)
  known = np.ones((5, 32, 32, 1), np.float32)
  known[:, 8:20, 8:20] = 0.0
  eval_set = evaluation_set.EvalSet(images, known, [''] * 5, [''] * 5)
  blur = lambda i, k: np.where(k > 0, i, 0.5).astype(np.float32)
  parallel = data_parallel.DataParallel()
  whole, _ = scoring.score(parallel, {'fill': blur}, eval_set, batch_size=5)
  sizes = []
  score_batch = scoring._score_batch  # pylint: disable=protected-access
  monkeypatch.setattr(scoring, '_score_batch',
                      lambda p, c, t: sizes.append(len(t)) or score_batch(p, c, t))
  monkeypatch.setattr(scoring, 'METRIC_PIXELS_PER_CALL', 2 * 32 * 32)
  parts, _ = scoring.score(parallel, {'fill': blur}, eval_set, batch_size=5)
  assert len(sizes) == 3  # 2 + 2 + 1 images (each part padded to the devices by DataParallel).
  for metric, values in whole['fill'].items():
    np.testing.assert_allclose(parts['fill'][metric], values, rtol=1e-5, atol=1e-6)


def test_part_landmark_error_measures_the_hidden_part_on_the_nearest_face():
  truth = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], np.float32)  # IOD 40
  moved = truth.copy()
  moved[3:] += [8, 6]  # Both mouth corners 10 px off: a quarter of the IOD.
  face = lambda marks: mock.Mock(landmarks=marks)
  elsewhere = face(truth + 200)
  found = {0: [face(truth)], 1: [elsewhere, face(moved)], 2: [], 3: [elsewhere]}
  errors = landmark_error.part_landmark_errors(
      lambda composite: found[int(composite[0, 0, 0])], np.arange(4)[:, None, None, None],
      np.repeat(truth[None], 4, axis=0), ['mouth', 'mouth', 'mouth', 'left_eye'])
  np.testing.assert_allclose(errors, [0.0, 0.25, 1.0, 1.0])


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
