"""One file, one reading: the same photo and mask files read through every path that reads
them (training data, the TFDS builders, evaluate, inpaint) give the same pixels and masks; any
bytes, damaged files, brush masks and animated images give a clear error or the right pixels."""

import io
import os
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
from hypothesis import given, settings, strategies as st
from PIL import Image
import pytest

from define_jax import inpaint
from define_jax.data import image_sources
from define_jax.data import mask_sources
from define_jax.datasets import ffhq
from define_jax.datasets import prepare
from define_jax.eval import evaluation_set
from define_jax.files import image_files
from define_jax.files.image_files import InputError
from define_jax.inference import Inpainter

from conftest import astronaut, damaged

SIZE = 64


def hole_set() -> np.ndarray:
  """True = hole: a block and a diagonal stroke, 15% of the pixels."""
  holes = np.zeros((SIZE, SIZE), bool)
  holes[8:24, 10:34] = True
  cv2.line(holes.view(np.uint8), (40, 10), (60, 50), 1, 5)
  return holes


def strokes_anti_aliased() -> np.ndarray:
  """White = hole strokes with grey anti-aliased edges (read as the pixels above mid-grey)."""
  strokes = np.zeros((SIZE, SIZE), np.uint8)
  for y in range(6, SIZE - 10, 14):
    cv2.line(strokes, (4, y), (SIZE - 6, y + 9), 255, 4, cv2.LINE_AA)
  return strokes


def write_mask_files(directory: Path) -> dict[str, np.ndarray | None]:
  """The hole set written in many valid ways (white = hole), and a soft mask; file name ->
  the expected known mask (uint8, 1 = known), None where every reader must refuse it."""
  directory.mkdir()
  holes = hole_set()
  white = np.where(holes, 255, 0).astype(np.uint8)
  expected = (~holes).astype(np.uint8)
  Image.fromarray(white).save(directory / '00000.png')  # 8-bit grey
  cv2.imwrite(str(directory / '02000.png'), white.astype(np.uint16) * 257)  # 16-bit grey
  Image.fromarray(np.repeat(white[..., None], 3, -1)).save(directory / '04000.png')  # RGB
  painted = np.zeros((SIZE, SIZE, 4), np.uint8)  # Transparent, strokes painted in magenta:
  painted[holes] = (255, 0, 255, 255)  # the mask is the alpha.
  Image.fromarray(painted, 'RGBA').save(directory / '06000.png')
  Image.fromarray(holes.astype(np.uint8)).save(directory / '08000.png')  # 0/1 data: binary
  strokes = strokes_anti_aliased()
  Image.fromarray(strokes).save(directory / '10000.png')
  Image.fromarray(cv2.GaussianBlur(strokes, (0, 0), 4)).save(directory / '10002.png')  # soft
  return {'00000.png': expected, '02000.png': expected, '04000.png': expected,
          '06000.png': expected, '08000.png': expected,
          '10000.png': (strokes <= 127).astype(np.uint8), '10002.png': None}


def photo_files(directory: Path) -> list[str]:
  """Square photos of the modes that used to be read two ways: grey, 16-bit, transparent,
  palette."""
  directory.mkdir()
  rng = np.random.default_rng(0)
  rgb = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (SIZE, SIZE))
  Image.fromarray(rgb[..., 0]).save(directory / 'grey.png')
  cv2.imwrite(str(directory / 'sixteen.png'), rng.integers(0, 65536, (SIZE, SIZE), np.uint16))
  rgba = np.concatenate([rgb, rng.integers(0, 256, (SIZE, SIZE, 1), dtype=np.uint8)], -1)
  Image.fromarray(rgba, 'RGBA').save(directory / 'transparent.png')
  Image.fromarray(rgb).convert('P').save(directory / 'palette.png')
  return sorted(os.listdir(directory))


def read_by_inpaint(image: Path, mask: Path, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
  """(float images, known) that `inpaint --image --mask` hands to the network."""
  seen = []

  def record(self, images_in, known, **kwargs):
    del self, kwargs
    seen.append((images_in, known))
    return images_in

  out = tmp_path / f'{image.stem}_{mask.stem}_out.png'
  with mock.patch.object(Inpainter, 'inpaint_arrays', record):
    status = inpaint.main([str(a) for a in ('--image', image, '--mask', mask, '--polarity',
                                            'hole_white', '--fit', 'resize', '--out', out)])
  if status:
    raise image_files.InputError(f'inpaint exit status {status}')
  images_in, known = seen[0]
  return images_in[0], known[0, ..., 0].astype(np.uint8)


@pytest.fixture(scope='module')
def inpainter():
  return Inpainter.pretrained()


def test_every_path_reads_a_mask_file_alike(tmp_path, inpainter):
  masks_dir = tmp_path / 'masks'
  expected = write_mask_files(masks_dir)
  photo = tmp_path / 'photo.png'
  Image.fromarray(np.full((SIZE, SIZE, 3), 90, np.uint8)).save(photo)

  # Training: the NVIDIA builder stores the files, the pipeline reads them back.
  builder = prepare.prepare_dataset('nvidia_irregular_masks', masks_dir, tmp_path / 'tfds')
  records = image_sources.TfdsRecords(builder, 'test', 'mask')
  stored = {f'{int(example["file_number"]):05d}.png': mask_sources.read_stored_mask(records, i)
            for i, example in enumerate(builder.as_data_source('test'))}

  with mock.patch.object(Inpainter, 'load', return_value=inpainter):
    for name, known in expected.items():
      single = tmp_path / name.replace('.png', '')  # evaluate --mask_dir of this one file
      single.mkdir()
      os.symlink(masks_dir / name, single / name)
      if known is None:  # Refused everywhere: skipped by the builder, an error elsewhere.
        assert name not in stored
        with pytest.raises(image_files.InputError, match='not binary'):
          evaluation_set.masks_from_dir(str(single), 'hole_white', SIZE, 1, seed=0)
        with pytest.raises(image_files.InputError):
          read_by_inpaint(photo, masks_dir / name, tmp_path)
        continue
      np.testing.assert_array_equal(stored[name], known, err_msg=f'training, {name}')
      from_dir, _ = evaluation_set.masks_from_dir(str(single), 'hole_white', SIZE, 1, seed=0)
      np.testing.assert_array_equal(from_dir[0, ..., 0], known, err_msg=f'evaluate, {name}')
      _, from_inpaint = read_by_inpaint(photo, masks_dir / name, tmp_path)
      np.testing.assert_array_equal(from_inpaint, known, err_msg=f'inpaint, {name}')


def test_every_path_reads_a_photo_alike(tmp_path, inpainter):
  photos = tmp_path / 'photos'
  names = photo_files(photos)
  mask = tmp_path / 'mask.png'
  Image.fromarray(np.where(hole_set(), 255, 0).astype(np.uint8)).save(mask)
  training = image_sources.FileImages(photos, names)
  evaluated, evaluated_names, skipped = evaluation_set.folder_images(str(photos), SIZE, len(names))
  assert evaluated_names == names and not skipped
  with mock.patch.object(Inpainter, 'load', return_value=inpainter):
    for index, name in enumerate(names):
      pixels = training.load(index, min_side=0)
      assert pixels.dtype == np.uint8 and pixels.shape == (SIZE, SIZE, 3)
      np.testing.assert_array_equal(np.round(evaluated[index] * 255), pixels, err_msg=name)
      np.testing.assert_array_equal(ffhq.load_resized(photos / name, SIZE), pixels, err_msg=name)
      # inpaint keeps 16 bit; the training data is the same picture rounded to 8 bit.
      seen, _ = read_by_inpaint(photos / name, mask, tmp_path)
      np.testing.assert_array_equal(image_files.to_uint8(seen), pixels, err_msg=name)
  with Image.open(photos / 'transparent.png') as rgba:  # Transparency shows as white.
    rgba = np.asarray(rgba, np.float64)
  on_white = rgba[..., :3] * rgba[..., 3:] / 255 + 255 * (1 - rgba[..., 3:] / 255)
  assert np.abs(training.load(names.index('transparent.png'), 0) - on_white).max() <= 1
  with Image.open(photos / 'sixteen.png') as sixteen:  # 16 bit scaled, not clipped.
    levels = np.asarray(sixteen, np.float64)
  np.testing.assert_array_equal(training.load(names.index('sixteen.png'), 0)[..., 1],
                                np.round(levels / 257))


def test_reading_bytes_and_paths_names_the_source(tmp_path):
  with pytest.raises(image_files.InputError, match='The mask is empty'):
    image_files.read_mask(b'', 'hole_white')
  with pytest.raises(image_files.InputError, match='set #3 is not an image'):
    image_files.read_photo(b'garbage', name='set #3', max_pixels=None)
  buffer = io.BytesIO()
  Image.fromarray(np.zeros((4, 5), np.uint8)).save(buffer, format='PNG')
  with pytest.raises(image_files.InputError, match=f'{tmp_path / "missing.png"} does not exist'):
    image_files.read_photo(tmp_path / 'missing.png', max_pixels=None)
  with pytest.raises(image_files.InputError, match='over the limit of 10 pixels'):
    image_files.read_photo(buffer.getvalue(), max_pixels=10)


FAST = settings(max_examples=300, deadline=None)


def encoded(array: np.ndarray, image_format: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format=image_format)
  return buffer.getvalue()


pixels = st.builds(
    lambda h, w, c, seed: np.random.default_rng(seed).integers(
        0, 256, (h, w) if c == 1 else (h, w, c), dtype=np.uint8),
    st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 3, 4]), st.integers(0, 2**31))


@FAST
@given(st.binary(max_size=2048))
def test_read_photo_of_arbitrary_bytes(data):
  try:
    image = image_files.read_photo(data, max_pixels=None)
  except InputError as error:
    assert str(error)
    return
  assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@FAST
@given(pixels, st.sampled_from(['PNG', 'JPEG', 'BMP', 'TIFF']), st.integers(0, 4000),
       st.lists(st.integers(0, 10**6), max_size=4))
def test_read_photo_of_real_and_damaged_images(array, image_format, cut, flips):
  if image_format == 'JPEG' and array.ndim == 3 and array.shape[2] == 4:
    array = array[..., :3]
  data = damaged(encoded(array, image_format), cut, flips)
  try:
    image = image_files.read_photo(data, max_pixels=None)
  except InputError as error:
    assert str(error)
    return
  assert image.dtype == np.uint8 and image.shape[2] == 3


@FAST
@given(st.one_of(st.binary(max_size=2048),
                 st.builds(lambda a, cut, flips: damaged(encoded(a, 'PNG'), cut, flips),
                           pixels, st.integers(0, 4000), st.lists(st.integers(0, 10**6),
                                                                  max_size=4))),
       st.sampled_from(['hole_white', 'keep_white']))
def test_read_mask_of_arbitrary_bytes(data, polarity):
  try:
    known = image_files.read_mask(data, polarity, max_pixels=None)
  except InputError as error:
    assert str(error)
    return
  assert known.dtype == np.uint8 and known.ndim == 2 and set(np.unique(known)) <= {0, 1}


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
