"""Mask generation, mask-set augmentation and mask-file loading (1 = known, 0 = hole)."""


import cv2
import hypothesis
from hypothesis import strategies as st
import numpy as np
from PIL import Image
import pytest

from define_jax.data import bands
from define_jax.data import masks
from define_jax.files import image_files


def hole_ratio(known):
  """bands.hole_ratio of one [H, W] mask."""
  return float(bands.hole_ratio(known[None, ..., None])[0])


def generated(seed, size=128, ratio_range=(0.1, 0.6)):
  return masks.generate_irregular_mask(np.random.default_rng(seed), size, size, ratio_range)


@pytest.mark.parametrize('ratio_range', [(0.05, 0.6), (0.1, 0.2), (0.4, 0.5)])
def test_hole_ratio_histogram_lies_inside_the_requested_range(ratio_range):
  ratios = np.array(
      [hole_ratio(generated(seed, ratio_range=ratio_range)) for seed in range(200)]
  )
  low, high = ratio_range
  assert ratios.min() >= low and ratios.max() <= high
  # The targets are drawn uniformly: the histogram fills the range, not one end.
  counts, _ = np.histogram(ratios, bins=4, range=ratio_range)
  assert (counts > 0).all(), counts


def test_generated_mask_is_binary_uint8_of_the_requested_shape():
  mask = masks.generate_irregular_mask(np.random.default_rng(0), 96, 160, (0.2, 0.3))
  assert mask.shape == (96, 160) and mask.dtype == np.uint8
  assert set(np.unique(mask)) == {0, 1}


def test_generation_is_deterministic_per_seed_and_differs_between_seeds():
  np.testing.assert_array_equal(generated(7), generated(7))
  assert not np.array_equal(generated(7), generated(8))


def test_extreme_and_narrow_ranges():
  assert generated(0, ratio_range=(0.0, 0.0)).all()  # no hole at all
  assert not generated(0, ratio_range=(1.0, 1.0)).any()  # all hole
  # Narrower than one primitive: the ring-by-ring top-up hits it exactly.
  ratio = hole_ratio(generated(3, size=64, ratio_range=(0.3, 0.3 + 1 / 4096)))
  assert 0.3 <= ratio <= 0.3 + 1 / 4096
  assert generated(4, size=100, ratio_range=(0.3, 0.3)).sum() == 7000  # exactly 3000 holes


@pytest.mark.parametrize('ratio_range', [(0.5, 0.4), (-0.1, 0.2), (0.2, 1.5)])
def test_invalid_ranges_are_rejected(ratio_range):
  with pytest.raises(ValueError, match='hole_ratio'):
    generated(0, ratio_range=ratio_range)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    low=st.floats(0.0, 0.9),
    width=st.floats(0.02, 0.5),
    size=st.integers(16, 80),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_range_is_respected(low, width, size, seed):
  high = min(1.0, low + width)
  ratio = hole_ratio(
      masks.generate_irregular_mask(np.random.default_rng(seed), size, size, (low, high))
  )
  assert low - 1e-9 <= ratio <= high + 1e-9


def nvidia_like_mask(size=128):
  """1 = known with a hole band across the middle and a blob."""
  known = np.ones((size, size), np.uint8)
  known[size // 3 : size // 2, :] = 0
  known[10:30, 70:100] = 0
  return known


def test_augmentation_is_binary_deterministic_and_varied():
  known = nvidia_like_mask()
  first = masks.augment_mask(known, np.random.default_rng(1), (64, 48))
  assert first.shape == (64, 48) and first.dtype == np.uint8 and set(np.unique(first)) <= {0, 1}
  np.testing.assert_array_equal(
      first, masks.augment_mask(known, np.random.default_rng(1), (64, 48))
  )
  outputs = [masks.augment_mask(known, np.random.default_rng(seed), (64, 64)) for seed in range(20)]
  assert len({output.tobytes() for output in outputs}) == 20
  # Crops keep a sizeable hole most of the time: the hole is not lost off the edges.
  assert np.mean([0.02 < hole_ratio(output) < 0.98 for output in outputs]) > 0.7


def test_augmentation_never_invents_holes():
  # Rotation corners fall outside the source: they must count as known.
  all_known = np.ones((100, 100), np.uint8)
  for seed in range(10):
    assert masks.augment_mask(all_known, np.random.default_rng(seed), (64, 64)).all()


def test_resize_mask_thresholds_and_keeps_convention():
  known = nvidia_like_mask(128)
  small = masks.resize_mask(known, (64, 64))
  assert small.shape == (64, 64) and set(np.unique(small)) == {0, 1}
  assert abs(hole_ratio(small) - hole_ratio(known)) < 0.02
  assert masks.resize_mask(known, (128, 128)) is known


def test_degenerate_masks():
  assert masks.is_degenerate(np.ones((4, 4), np.uint8))
  assert masks.is_degenerate(np.zeros((4, 4), np.uint8))
  assert not masks.is_degenerate(nvidia_like_mask())


def white_square_file(path, mode='L', white=255, black=0, size=(40, 30)):
  """A mask file that is `white` in the square [5:15, 5:15] and `black` elsewhere."""
  pixels = np.full(size[::-1], black, np.uint16 if mode == 'I;16' else np.uint8)
  pixels[5:15, 5:15] = white
  if mode == 'I;16':
    cv2.imwrite(str(path), pixels)  # a 16-bit greyscale PNG
  elif mode in ('RGB', 'RGBA'):
    channels = 3 if mode == 'RGB' else 4
    stacked = np.repeat(pixels[..., None], channels, axis=-1)
    if mode == 'RGBA':
      stacked[..., 3] = 0  # alpha is ignored, even when fully transparent
    Image.fromarray(stacked, mode=mode).save(path)
  else:
    Image.fromarray(pixels, mode='L').save(path)
  return path


@pytest.mark.parametrize('polarity, square_value', [('hole_white', 0), ('keep_white', 1)])
def test_read_mask_file_normalises_polarity(tmp_path, polarity, square_value):
  mask = image_files.read_mask(white_square_file(tmp_path / 'm.png'), polarity)
  assert mask.shape == (30, 40) and mask.dtype == np.uint8
  assert (mask[5:15, 5:15] == square_value).all()
  assert (mask[20:, 20:] == 1 - square_value).all()


@pytest.mark.parametrize(
    'mode, white, black',
    [
        ('I;16', 65535, 0),  # 16-bit
        ('RGB', 255, 0),
        ('RGBA', 255, 0),
    ],
)
def test_read_mask_file_handles_bit_depths_and_channels(tmp_path, mode, white, black):
  path = white_square_file(tmp_path / 'm.png', mode, white, black)
  mask = image_files.read_mask(path, 'hole_white')
  expected = np.ones((30, 40), np.uint8)
  expected[5:15, 5:15] = 0
  np.testing.assert_array_equal(mask, expected)


def test_read_mask_file_errors_name_the_file(tmp_path):
  path = tmp_path / 'broken.png'
  path.write_bytes(b'not a png')
  with pytest.raises(ValueError, match='broken.png'):
    image_files.read_mask(path, 'hole_white')
  grey = white_square_file(tmp_path / 'grey.png', 'L', 200, 100)  # Grey everywhere: no mask.
  with pytest.raises(ValueError, match='grey.png is not binary'):
    image_files.read_mask(grey, 'hole_white')
  with pytest.raises(ValueError, match='polarity'):
    image_files.read_mask(white_square_file(tmp_path / 'm.png'), 'white_is_hole')


@pytest.mark.parametrize('part', sorted(masks.FACE_PARTS))
def test_face_part_mask_covers_its_landmarks_and_nothing_far(part):
  landmarks = np.array([[30, 40], [70, 40], [50, 60], [35, 78], [65, 78]], np.float64)
  points, _ = masks.FACE_PARTS[part]
  for rng in (None, np.random.default_rng(0), np.random.default_rng(1)):
    known = masks.face_part_mask(rng, 100, 100, landmarks, part)
    assert known.dtype == np.uint8 and known.shape == (100, 100)
    centre = landmarks[list(points)].mean(axis=0).round().astype(int)
    assert known[centre[1], centre[0]] == 0  # The part's centre is hidden ...
    others = [i for i in range(5) if i not in points and not (part == 'mouth' and i == 2)]
    for x, y in landmarks[others].astype(int):
      assert known[y, x] == 1  # ... the other landmarks stay known.
    assert 0.02 < 1 - known.mean() < 0.2


def test_face_part_mask_rejects_unknown_parts():
  with pytest.raises(ValueError, match='ear'):
    masks.face_part_mask(None, 10, 10, np.zeros((5, 2)), 'ear')
