"""The eval package's report pieces: tables, grids' enlargement, example choice, paired
changes."""

import numpy as np
import pytest

from define_jax.data import bands
from define_jax.eval import grids
from define_jax.eval import report
from define_jax.eval import scoring


def row(band, method, l1, psnr, images=3):
  return {'band': band, 'images': images, 'method': method, 'l1': l1, 'psnr': psnr,
          'ssim': 0.5, 'lpips': 0.1, 'lpips_alex': 0.2}


def test_band_table_bolds_the_best_per_band_and_shows_the_chosen_columns():
  rows = [row('0–10%', 'a', 1.0, 30.0), row('0–10%', 'b', 2.0, 31.0), row('All', 'a', 1.0, 30.0)]
  lines = report.band_table(rows, ('l1', 'psnr'), code_names=True).splitlines()
  assert lines[0] == '| Hole ratio | Images | Method | L1 (×100) ↓ | PSNR ↑ |'
  assert lines[1] == '|---|---|---|---:|---:|'
  assert lines[2] == '| 0–10% | 3 | `a` | **1.00** | 30.00 |'
  assert lines[3] == '|  |  | `b` | 2.00 | **31.00** |'
  assert lines[4] == '| All | 3 | `a` | 1.00 | 30.00 |'  # A single method: nothing to bold.
  assert report.band_table(rows).splitlines()[2].startswith('| 0–10% | 3 | a | **1.00** |')


def test_variant_table_has_a_column_per_band_and_marks_empty_bands():
  rows = [row('0–10%', 'a', 1.0, 30.0, 2), row('0–10%', 'b', 2.0, 31.0, 2),
          row('All', 'a', 1.0, 30.0, 2), row('All', 'b', 2.0, 31.0, 2)]
  lines = report.variant_table(rows, ['a', 'b']).splitlines()
  assert lines[0].split(' | ')[2:4] == ['0–10% (n=2)', '10–20% (n=0)']
  assert lines[2] == '| L1 (×100) ↓ | `a` | **1.00** | – | – | – | – | – | **1.00** |'
  assert lines[5] == '|  | `b` | **31.00** | – | – | – | – | – | **31.00** |'


def test_band_labels_take_a_dash_and_examples_are_the_first_of_each_band():
  assert bands.band_label(5, dash='-') == '50-60%'
  assert bands.band_labels()[-1] == bands.OVERALL
  image_bands = np.array([0] * 6 + [-1, 2, 2])
  assert bands.example_indices(image_bands) == [0, 1, 2, 3, 7, 8]


@pytest.mark.parametrize('size, enlarged', [(50, 150), (128, 128), (200, 200)])
def test_enlarge_repeats_pixels_to_at_least_the_size(size, enlarged):
  images = np.random.default_rng(0).random((2, size, size, 3))
  big = grids.enlarge(images, 128)
  assert big.shape == (2, enlarged, enlarged, 3)
  factor = enlarged // size
  np.testing.assert_array_equal(big[:, ::factor, ::factor], images)


def test_paired_change_and_its_verdict():
  rng = np.random.default_rng(0)
  before = rng.normal(30.0, 1.0, 400)
  mean, error = scoring.paired_change(before, before + 0.5 + rng.normal(0, 0.1, 400))
  assert mean == pytest.approx(0.5, abs=0.02) and error == pytest.approx(0.005, rel=0.2)
  assert scoring.verdict(mean, error, True, 2) == 'better'
  assert scoring.verdict(mean, error, False, 2) == 'worse'
  noisy_mean, noisy_error = scoring.paired_change(before, before + rng.normal(0, 1.0, 400))
  assert scoring.verdict(noisy_mean, noisy_error, True, 2) is None
  # Consistent but invisible at the printed precision: no change.
  assert scoring.verdict(0.001, 0.0001, True, 2) is None
  assert scoring.paired_change(np.ones(1), np.zeros(1))[1] == np.inf
