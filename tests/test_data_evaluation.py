"""The evaluation set: band-balanced masks from files, TFDS and the generator, and the set
that training-time evaluation and the study score."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import tiny
from define_jax.data import bands
from define_jax.datasets import prepare
from define_jax.eval import evaluation_set

from conftest import BAND_ROWS, OUT_OF_BAND_ROWS, REPO_ROOT
from conftest import astronaut, with_fields, write_masks


def test_round_robin_covers_bands_in_turn_and_cycles():
  buckets = [[0, 1], [], [2], [3, 4, 5], [], []]
  assert evaluation_set._round_robin(buckets, 8) == [0, 2, 3, 1, 4, 5, 0, 2]


def test_mask_files_are_bucketed_by_their_actual_hole_ratio(tmp_path):
  mask_dir = write_masks(tmp_path / 'masks', BAND_ROWS + OUT_OF_BAND_ROWS)
  known, names = evaluation_set.masks_from_dir(str(mask_dir), 'hole_white', 64, 12, seed=0)
  np.testing.assert_array_equal(bands.band_index(bands.hole_ratio(known)), np.arange(12) % 6)
  assert len(set(names)) == 12  # Each band's two files both used.
  again, _ = evaluation_set.masks_from_dir(str(mask_dir), 'hole_white', 64, 12, seed=0)
  np.testing.assert_array_equal(known, again)
  # The same files read as white = keep: holes of 100%, 95% .. 45%, 19%; bands 1, 4, 5 in turn.
  flipped, _ = evaluation_set.masks_from_dir(str(mask_dir), 'keep_white', 64, 4, seed=0)
  assert list(bands.band_index(bands.hole_ratio(flipped))) == [1, 4, 5, 1]


def test_generated_masks_cover_every_band():
  known, _ = evaluation_set.generated_masks(64, 18, seed=0)
  np.testing.assert_array_equal(bands.band_index(bands.hole_ratio(known)), np.arange(18) % 6)


def face_config(tmp_path, **overrides):
  """The tiny config on a folder of twelve astronaut crops, half of them held out."""
  faces = tmp_path / 'faces'
  faces.mkdir()
  photo = (astronaut(120, 100) * 255).astype(np.uint8)
  for k in range(12):
    Image.fromarray(np.roll(photo, 5 * k, axis=1)).save(faces / f'face_{k:02d}.png')
  return with_fields(tiny.get_config(), **{
      'dataset': 'image_folder', 'image_dir': str(faces), 'validation_fraction': 0.5,
      'num_eval_images': 30, **overrides})


def test_training_eval_set_cycles_the_split_with_band_balanced_masks(tmp_path):
  config = face_config(tmp_path)
  eval_set = evaluation_set.for_training(config)
  assert eval_set.images.shape == (30, 64, 64, 3) and eval_set.known.shape == (30, 64, 64, 1)
  distinct = len(set(eval_set.image_names))
  assert 2 <= distinct < 12 and eval_set.image_names[distinct] == eval_set.image_names[0]
  np.testing.assert_array_equal(eval_set.bands, np.arange(30) % 6)
  # Fixed: the same set whatever the training seed.
  config.seed = 7
  again = evaluation_set.for_training(config)
  np.testing.assert_array_equal(eval_set.images, again.images)
  np.testing.assert_array_equal(eval_set.known, again.known)


def test_training_eval_masks_from_the_mask_dir_or_the_prepared_eval_split(tmp_path):
  mask_dir = write_masks(tmp_path / 'nvidia', BAND_ROWS)
  for number, path in enumerate(sorted(mask_dir.iterdir())):  # official NNNNN.png names
    path.rename(mask_dir / f'{number:05d}.png')
  tfds_dir = tmp_path / 'tfds'
  config = face_config(tmp_path, masks='nvidia_irregular', data_dir=str(tfds_dir),
                       num_eval_images=12)
  with pytest.raises(FileNotFoundError, match='define_jax.datasets.prepare'):
    evaluation_set.for_training(config)
  config.input.mask_dir = str(mask_dir)
  from_files = evaluation_set.for_training(config)
  np.testing.assert_array_equal(from_files.bands, np.arange(12) % 6)
  config.input.mask_dir = ''
  prepare.prepare_dataset('nvidia_irregular_masks', mask_dir, tfds_dir)
  from_tfds = evaluation_set.for_training(config)
  np.testing.assert_array_equal(from_tfds.bands, np.arange(12) % 6)
  assert all('nvidia_irregular_masks' in name for name in from_tfds.mask_names)



def test_evaluation_imports_neither_tensorflow_nor_clu_and_study_not_the_evaluate_cli():
  code = ('import sys, define_jax.study, define_jax.study.study_protocol, define_jax.data.bands, '
          'define_jax.eval.metrics, define_jax.eval.scoring, define_jax.inference.baselines, '
          'define_jax.eval.evaluation_set, define_jax.eval.report, define_jax.eval.grids; '
          'study_imports_cli = "define_jax.evaluate" in sys.modules; '
          'import define_jax.evaluate; '
          'print(study_imports_cli, sorted({m.split(".")[0] for m in sys.modules} & '
          '{"tensorflow", "tensorflow_datasets", "clu"}))')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
  assert result.stdout.strip() == 'False []'
