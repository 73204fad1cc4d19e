"""Property-based tests: arbitrary bytes, sizes and dtypes give a valid result or a clear
error from image/mask decoding and the inference API, never a crash or a hang."""

import contextlib
import io
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from PIL import Image
from PIL import ImageFile

from define_jax import inpaint
from define_jax.files import image_files
from define_jax.files.image_files import InputError
from define_jax.inference import Inpainter

from conftest import png_header_only

FAST = settings(max_examples=300, deadline=None)
# A few shapes (each compiles the network once), from 1×1 to non-square.
SIZES = st.sampled_from([(1, 1), (1, 9), (17, 5), (24, 40), (40, 24)])


def encoded(array: np.ndarray, image_format: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format=image_format)
  return buffer.getvalue()


pixels = st.builds(
    lambda h, w, c, seed: np.random.default_rng(seed).integers(
        0, 256, (h, w) if c == 1 else (h, w, c), dtype=np.uint8),
    st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 3, 4]), st.integers(0, 2**31))


def damaged(data: bytes, cut: int, flips: list[int]) -> bytes:
  data = bytearray(data[:max(cut, 0)] if cut < len(data) else data)
  for position in flips:
    if data:
      data[position % len(data)] ^= 0xFF
  return bytes(data)


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


@pytest.fixture(scope='module')
def inpainter(tiny_checkpoint) -> Inpainter:
  return Inpainter.from_checkpoint(tiny_checkpoint)


def arbitrary_array(draw, shape, binary=False):
  dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, bool]))
  rng = np.random.default_rng(draw(st.integers(0, 2**31)))
  if dtype == bool:
    return rng.integers(0, 2, shape).astype(bool)
  if binary:  # 0 and the dtype's "white"
    white = 1 if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).max
    return (rng.integers(0, 2, shape) * white).astype(dtype)
  if np.issubdtype(dtype, np.integer):
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
  out_of_range = draw(st.sampled_from([False, False, False, True]))
  values = rng.uniform(-0.5 if out_of_range else 0.0, 1.5 if out_of_range else 1.0,
                       shape).astype(dtype)
  if draw(st.sampled_from([False, False, False, True])):
    values.flat[draw(st.integers(0, values.size - 1))] = draw(
        st.sampled_from([np.nan, np.inf, -np.inf]))
  return values


@st.composite
def image_and_mask(draw):
  height, width = draw(SIZES)
  channels = draw(st.sampled_from([3, 3, 3, 3, None, 1, 4]))
  image_shape = (height, width) if channels is None else (height, width, channels)
  mask_height = draw(st.sampled_from([height, draw(st.integers(1, 9))]))
  mask_shape = draw(st.sampled_from([(mask_height, width), (mask_height, width, 1),
                                     (mask_height, width, 3)]))
  binary_mask = draw(st.sampled_from([True, True, True, False]))
  return arbitrary_array(draw, image_shape), arbitrary_array(draw, mask_shape, binary_mask)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_and_mask(), st.sampled_from(['hole_white', 'keep_white']))
def test_inpainter_on_arbitrary_arrays(inpainter, pair, polarity):
  image, mask = pair
  try:
    result = inpainter(image, mask, polarity=polarity)
  except (ValueError, TypeError) as error:
    assert len(str(error)) > 10
    event(f'refused: {str(error)[:30]}')
    return
  event('inpainted')
  assert result.shape == image.shape and result.dtype == image.dtype
  if np.issubdtype(result.dtype, np.floating):
    assert np.all(np.isfinite(result[np.isfinite(image)]))


# --- Issue 15: limits and silent wrong answers in the CLI and API ------------------------
# Each test below is one row of the table; each failed on the code before it.

def photo(height=48, width=40, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def block_holes(height=48, width=40) -> np.ndarray:
  holes = np.zeros((height, width), bool)
  holes[height // 4:height // 2, width // 4:3 * width // 4] = True
  return holes


def run_cli(args, inpainter) -> tuple[int, str]:
  """inpaint.main in-process with an already loaded model; (exit status, stderr)."""
  stderr = io.StringIO()
  with mock.patch.object(Inpainter, 'load', return_value=inpainter), \
      contextlib.redirect_stderr(stderr):
    status = inpaint.main([str(a) for a in args])
  return status, stderr.getvalue()


def cli_args(image, mask, out, *extra):
  return ['--image', image, '--mask', mask, '--polarity', 'hole_white', '--out', out, *extra]


@contextlib.contextmanager
def decoding_forbidden():
  """Any attempt to decode pixel data fails the test."""
  def load(self):
    raise AssertionError(f'decoded {self.size}, a header check should have refused it')
  with mock.patch.object(ImageFile.ImageFile, 'load', load):
    yield


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Our own open.
def test_pixel_limit_is_checked_from_the_header_in_cli_and_api(inpainter, tmp_path):
  bomb = tmp_path / 'bomb.png'
  bomb.write_bytes(png_header_only(12_000, 12_000))
  mask = tmp_path / 'mask.png'
  Image.fromarray(np.zeros((48, 40), np.uint8)).save(mask)
  unbounded = 10_000  # GB: the memory bound (tests/test_memory.py) would refuse it first.
  with decoding_forbidden():
    status, err = run_cli(cli_args(bomb, mask, tmp_path / 'out.png', '--max_memory_gb',
                                   unbounded), inpainter)
    with pytest.raises(InputError, match=r'bomb\.png is 12000×12000 \(144 megapixels\), over '
                       r'the limit of 50 megapixels'):
      inpainter(str(bomb), np.zeros((10, 10), bool), polarity='hole_white',
                max_memory_gb=unbounded)
    with pytest.raises(InputError, match='over the limit of 50 megapixels'):
      inpainter(Image.open(bomb), np.zeros((10, 10), bool), polarity='hole_white',
                max_memory_gb=unbounded)
  assert status == 2 and str(bomb) in err and 'limit of 50 megapixels' in err
  assert not (tmp_path / 'out.png').exists()
  # The limit is configurable (arrays too, before any compilation).
  status, err = run_cli(cli_args(mask, mask, tmp_path / 'o.png', '--max_pixels', 1000), inpainter)
  assert status == 2 and 'mask.png is 40×48 (1,920 pixels), over the limit of 1,000 pixels' in err
  with pytest.raises(InputError, match='limit'):
    inpainter(photo(), block_holes(), polarity='hole_white', max_pixels=1000)


def test_masks_of_zeros_and_ones_are_binary(inpainter, tmp_path):
  image, holes = photo(), block_holes()
  ones = holes.astype(np.uint8)  # 1 = white = hole under hole_white.
  result = inpainter(image, ones, polarity='hole_white')
  np.testing.assert_array_equal(result, inpainter(image, holes, polarity='hole_white'))
  assert np.any(result[holes] != image[holes])
  kept = inpainter(image, 1 - ones, polarity='keep_white')
  np.testing.assert_array_equal(kept, result)
  # Through the CLI, as a PNG with values 0 and 1.
  Image.fromarray(image).save(tmp_path / 'face.png')
  Image.fromarray(ones).save(tmp_path / 'mask01.png')
  status, err = run_cli(cli_args(tmp_path / 'face.png', tmp_path / 'mask01.png',
                                 tmp_path / 'out.png'), inpainter)
  assert status == 0, err
  written = np.asarray(Image.open(tmp_path / 'out.png'))
  np.testing.assert_array_equal(written[~holes], image[~holes])
  np.testing.assert_array_equal(written, result)


def test_sixteen_bit_and_greyscale_images_are_converted_correctly(inpainter, tmp_path):
  height, width = 48, 40
  grey16 = (np.linspace(0, 65535, height * width).reshape(height, width)).astype(np.uint16)
  holes = block_holes()
  path = tmp_path / 'grey16.png'
  Image.fromarray(grey16).save(path)  # Hand-made 16-bit greyscale PNG.
  with Image.open(path) as opened:
    assert opened.mode == 'I;16'
  for source in (Image.fromarray(grey16), str(path)):
    result = inpainter(source, holes, polarity='hole_white')
    assert isinstance(result, Image.Image) and result.mode == 'I;16'
    values = np.asarray(result)
    np.testing.assert_array_equal(values[~holes], grey16[~holes])  # Exact, not clipped.
  # The same picture in 8 bit gives the same fill, to 8-bit precision.
  grey8 = np.round(grey16 / 257).astype(np.uint8)
  fill8 = np.asarray(inpainter(Image.fromarray(grey8), holes, polarity='hole_white'), float)
  assert np.abs(values[holes] / 257 - fill8[holes]).max() <= 2
  # uint16 masks (0/65535) and 16-bit mask files work the same as 8-bit ones.
  mask16 = np.where(holes, 65535, 0).astype(np.uint16)
  np.testing.assert_array_equal(inpainter(grey16[..., None].repeat(3, -1), mask16,
                                          polarity='hole_white')[~holes],
                                grey16[..., None].repeat(3, -1)[~holes])
  Image.fromarray(mask16).save(tmp_path / 'mask16.png')
  status, err = run_cli(cli_args(path, tmp_path / 'mask16.png', tmp_path / 'out16.png'),
                        inpainter)
  assert status == 0, err
  with Image.open(tmp_path / 'out16.png') as written:
    assert written.mode in ('I;16', 'I')
    np.testing.assert_array_equal(np.asarray(written)[~holes], grey16[~holes])
  # 8-bit data in a 16-bit array is ambiguous, not silently "no holes".
  with pytest.raises(InputError, match='scale is unclear'):
    inpainter(photo(), np.where(holes, 255, 0).astype(np.uint16), polarity='hole_white')


def test_all_hole_mask_is_an_error_unless_asked_for(inpainter, tmp_path):
  image = photo()
  everything = np.ones((48, 40), bool)
  with pytest.raises(InputError, match='every pixel as a hole'):
    inpainter(image, everything, polarity='hole_white')
  with pytest.raises(InputError, match=r'image 1 of the batch'):
    inpainter(np.stack([image, image]), np.stack([block_holes(), everything]),
              polarity='hole_white')
  assert inpainter(image, everything, polarity='hole_white', allow_all_hole=True).shape == \
      image.shape
  Image.fromarray(image).save(tmp_path / 'face.png')
  Image.fromarray(np.zeros((48, 40), np.uint8)).save(tmp_path / 'black.png')
  args = ['--image', tmp_path / 'face.png', '--mask', tmp_path / 'black.png', '--polarity',
          'keep_white', '--out', tmp_path / 'out.png']
  status, err = run_cli(args, inpainter)
  assert status == 2 and 'black.png marks every pixel as a hole' in err
  assert not (tmp_path / 'out.png').exists()
  status, err = run_cli(args + ['--allow_all_hole'], inpainter)
  assert status == 0 and (tmp_path / 'out.png').exists(), err


def test_cli_never_overwrites_its_input_and_needs_overwrite_for_outputs(inpainter, tmp_path):
  face, mask = tmp_path / 'face.png', tmp_path / 'mask.png'
  Image.fromarray(photo()).save(face)
  Image.fromarray(np.where(block_holes(), 255, 0).astype(np.uint8)).save(mask)
  original = face.read_bytes()
  for out in (face, mask, tmp_path / '.' / 'face.png'):
    for extra in ([], ['--overwrite']):
      status, err = run_cli(cli_args(face, mask, out, *extra), inpainter)
      assert status == 2 and 'is the input' in err and 'Traceback' not in err
  assert face.read_bytes() == original
  out = tmp_path / 'out.png'
  out.write_bytes(b'precious')
  status, err = run_cli(cli_args(face, mask, out), inpainter)
  assert status == 2 and f'{out} exists; pass --overwrite' in err
  assert out.read_bytes() == b'precious'
  status, err = run_cli(cli_args(face, mask, out, '--overwrite'), inpainter)
  assert status == 0 and Image.open(out).size == (40, 48), err
  assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]  # Atomic write.


def write_pair(images: Path, masks: Path, name: str, holes=None, fmt='png'):
  images.mkdir(parents=True, exist_ok=True)
  masks.mkdir(parents=True, exist_ok=True)
  Image.fromarray(photo()).save(images / f'{name}.{fmt}')
  holes = block_holes() if holes is None else holes
  Image.fromarray(np.where(holes, 255, 0).astype(np.uint8)).save(masks / f'{name}.png')


def folder_args(images, masks, out, *extra):
  return ['--images', images, '--masks', masks, '--polarity', 'hole_white', '--out', out, *extra]


def test_folder_mode_refuses_two_inputs_with_one_output_name(inpainter, tmp_path):
  images, masks, out = tmp_path / 'images', tmp_path / 'masks', tmp_path / 'out'
  write_pair(images, masks, 'x', fmt='jpg')
  write_pair(images, masks, 'x', fmt='png')
  write_pair(images, masks, 'y')
  status, err = run_cli(folder_args(images, masks, out), inpainter)
  assert status == 2 and f'{images / "x.jpg"} and {images / "x.png"}' in err
  assert not out.exists()  # Refused before writing anything.
  # An output folder that is the input folder is refused too.
  (images / 'x.jpg').unlink()
  status, err = run_cli(folder_args(images, masks, images), inpainter)
  assert status == 2 and 'would overwrite the input' in err


def test_cli_out_that_cannot_be_a_file_is_a_clear_error(inpainter, tmp_path):
  face, mask = tmp_path / 'face.png', tmp_path / 'mask.png'
  Image.fromarray(photo()).save(face)
  Image.fromarray(np.where(block_holes(), 255, 0).astype(np.uint8)).save(mask)
  cases = [(tmp_path, 'is a directory'),
           (mask / 'o.png', f'{mask} is a file, not a directory'),
           (tmp_path / 'result', 'is not an image format'),
           (tmp_path / 'result.xyz', 'is not an image format')]
  for out, message in cases:
    status, err = run_cli(cli_args(face, mask, out), inpainter)
    assert status == 2 and message in err and 'Traceback' not in err, (out, err)


def test_folder_mode_names_every_failing_file_and_summarises(inpainter, tmp_path):
  images, masks, out = tmp_path / 'images', tmp_path / 'masks', tmp_path / 'out'
  write_pair(images, masks, 'good')
  write_pair(images, masks, 'grey')
  noise = np.random.default_rng(0).integers(0, 256, (48, 40), dtype=np.uint8)
  Image.fromarray(noise).save(masks / 'grey.png')  # Not binary.
  write_pair(images, masks, 'broken')
  (images / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n garbage')
  write_pair(images, masks, 'done')
  out.mkdir()
  (out / 'done.png').write_bytes(b'existing')
  status, err = run_cli(folder_args(images, masks, out), inpainter)
  assert status == 1
  assert f'{masks / "grey.png"} is not binary' in err
  assert f'{images / "broken.png"} is not an image' in err
  assert f'{out / "done.png"} exists' in err
  assert '1 written' in err and '3 skipped (' in err
  for reason in ('1 not binary', '1 unreadable', '1 output exists'):
    assert reason in err
  assert (out / 'good.png').exists() and (out / 'done.png').read_bytes() == b'existing'
  status, err = run_cli(folder_args(images, masks, out, '--overwrite'), inpainter)
  assert status == 1 and '2 written' in err and '2 skipped (1 not binary, 1 unreadable)' in err


def test_ragged_batches_and_empty_images_are_clear_errors(inpainter):
  with pytest.raises(InputError, match=r'share one shape: image 0 is \(48, 40, 3\), image 1 '
                     r'is \(32, 32, 3\)'):
    inpainter([photo(), photo(32, 32)], [block_holes(), block_holes(32, 32)],
              polarity='hole_white')
  with pytest.raises(InputError, match='share one shape'):
    inpainter([photo(), photo()], [block_holes(), block_holes(32, 32)], polarity='hole_white')
  with pytest.raises(InputError, match='0×0: an image needs at least one pixel'):
    inpainter(np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), bool), polarity='hole_white')
  with pytest.raises(InputError, match='empty'):
    inpainter(np.zeros((0, 8, 8, 3), np.uint8), np.zeros((0, 8, 8), bool),
              polarity='hole_white')
  # A list of equally sized images (PIL or arrays) is a batch.
  batch = inpainter([photo(), Image.fromarray(photo(seed=1))], [block_holes()] * 2,
                    polarity='hole_white')
  assert batch.shape == (2, 48, 40, 3)


# --- Hypothesis through the API and the CLI: never a traceback, never a wrong exit 0 ------


def render_mask(holes: np.ndarray, encoding: str, polarity: str):
  """The hole set `holes` written in one of the many valid ways a user may pass a mask."""
  white = holes if polarity == 'hole_white' else ~holes
  if encoding == 'bool':
    return white
  if encoding == 'uint8 0/255':
    return np.where(white, 255, 0).astype(np.uint8)
  if encoding == 'uint8 0/1':
    return white.astype(np.uint8)
  if encoding == 'uint16 0/65535':
    return np.where(white, 65535, 0).astype(np.uint16)
  if encoding == 'int64 0/255':
    return np.where(white, 255, 0)
  if encoding == 'float 0/1':
    return white.astype(np.float32)
  if encoding == 'rgb uint8':
    return np.repeat(np.where(white, 255, 0).astype(np.uint8)[..., None], 3, -1)
  if encoding == 'PIL L':
    return Image.fromarray(np.where(white, 255, 0).astype(np.uint8))
  if encoding == 'PIL 1':
    return Image.fromarray(white)
  if encoding == 'PIL I;16':
    return Image.fromarray(np.where(white, 65535, 0).astype(np.uint16))
  raise AssertionError(encoding)


MASK_ENCODINGS = ['bool', 'uint8 0/255', 'uint8 0/1', 'uint16 0/65535', 'int64 0/255',
                  'float 0/1', 'rgb uint8', 'PIL L', 'PIL 1', 'PIL I;16']


def render_image(pixels: np.ndarray, encoding: str):
  """uint8 RGB pixels as uint8, uint16, float or a PIL image; and the pixels as read back."""
  if encoding == 'uint8':
    return pixels, pixels
  if encoding == 'uint16':
    wide = pixels.astype(np.uint16) * 257
    return wide, wide
  if encoding == 'float32':
    return pixels / np.float32(255), pixels / np.float32(255)
  if encoding == 'PIL RGB':
    return Image.fromarray(pixels), pixels
  if encoding == 'PIL L':
    grey = pixels[..., 0]
    return Image.fromarray(grey), grey
  if encoding == 'PIL I;16':
    grey = pixels[..., 0].astype(np.uint16) * 257
    return Image.fromarray(grey), grey
  raise AssertionError(encoding)


@st.composite
def hole_sets(draw):
  height, width = draw(SIZES)
  kind = draw(st.sampled_from(['none', 'all', 'block', 'random']))
  holes = np.zeros((height, width), bool)
  if kind == 'all':
    holes[:] = True
  elif kind == 'block':
    top, left = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
    holes[top:top + draw(st.integers(1, height)), left:left + draw(st.integers(1, width))] = True
  elif kind == 'random':
    holes = np.random.default_rng(draw(st.integers(0, 2**31))).uniform(size=holes.shape) < 0.3
  return holes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hole_sets(), st.sampled_from(MASK_ENCODINGS), st.sampled_from(['hole_white', 'keep_white']),
       st.sampled_from(['uint8', 'uint16', 'float32', 'PIL RGB', 'PIL L', 'PIL I;16']),
       st.integers(0, 2**31))
def test_any_valid_mask_encoding_gives_the_right_answer(inpainter, holes, mask_encoding, polarity,
                                                        image_encoding, seed):
  """Whatever the encoding, the result keeps exactly the known pixels and its fill does not
  depend on what was under the holes (so no hole was read as known); an all-hole mask is
  the one refusal."""
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, holes.shape + (3,), dtype=np.uint8)
  if image_encoding.startswith('PIL L') or image_encoding == 'PIL I;16':
    pixels[...] = pixels[..., :1]
  other = pixels.copy()
  other[holes] = 255 - other[holes]  # Different content under the holes.
  mask = render_mask(holes, mask_encoding, polarity)
  image, expected = render_image(pixels, image_encoding)
  image2, _ = render_image(other, image_encoding)
  if holes.all():
    with pytest.raises(InputError, match='every pixel as a hole'):
      inpainter(image, mask, polarity=polarity)
    return
  result = inpainter(image, mask, polarity=polarity)
  result2 = inpainter(image2, mask, polarity=polarity)
  values, values2 = np.asarray(result), np.asarray(result2)
  assert values.shape == np.asarray(expected).shape
  np.testing.assert_array_equal(values[~holes], np.asarray(expected)[~holes])
  np.testing.assert_array_equal(values[holes], values2[holes])


def encode_file(array: np.ndarray, image_format: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format=image_format)
  return buffer.getvalue()


@st.composite
def photo_files(draw):
  """Bytes of a file given as a photo: real images of several modes, damaged or arbitrary."""
  kind = draw(st.sampled_from(['real', 'real', 'damaged', 'bytes']))
  if kind == 'bytes':
    return draw(st.binary(max_size=512))
  height, width = draw(SIZES)
  rng = np.random.default_rng(draw(st.integers(0, 2**31)))
  mode = draw(st.sampled_from(['RGB', 'L', 'I;16', 'RGBA']))
  array = {'RGB': lambda: rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
           'L': lambda: rng.integers(0, 256, (height, width), dtype=np.uint8),
           'I;16': lambda: rng.integers(0, 65536, (height, width), dtype=np.uint16),
           'RGBA': lambda: rng.integers(0, 256, (height, width, 4), dtype=np.uint8)}[mode]()
  data = encode_file(array, draw(st.sampled_from(['PNG', 'TIFF'])))
  if kind == 'damaged':
    data = damaged(data, draw(st.integers(0, len(data))), draw(st.lists(st.integers(0, 10**6),
                                                                          max_size=3)))
  return data


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(photo_files(), st.one_of(st.binary(max_size=256), st.builds(
    lambda values: encode_file(np.array(values, np.uint8).reshape(2, -1), 'PNG'),
    st.lists(st.integers(0, 255), min_size=2, max_size=40).filter(lambda v: len(v) % 2 == 0))),
    st.booleans())
def test_cli_on_arbitrary_files_exits_cleanly(inpainter, tmp_path, image_bytes, mask_bytes,
                                              matching_mask):
  """Exit 2 with one line naming the file, or exit 0 with the known pixels kept."""
  directory = Path(tempfile.mkdtemp(dir=tmp_path))
  image_path, mask_path, out = directory / 'photo.png', directory / 'mask.png', directory / 'o.png'
  image_path.write_bytes(image_bytes)
  holes = None
  if matching_mask:  # A valid mask of the photo's size, when the photo can be read.
    try:
      with Image.open(io.BytesIO(image_bytes)) as probe:
        width, height = probe.size
      holes = np.random.default_rng(len(image_bytes)).uniform(size=(height, width)) < 0.3
      mask_bytes = encode_file(np.where(holes, 255, 0).astype(np.uint8), 'PNG')
    except Exception:  # pylint: disable=broad-except
      holes = None
  mask_path.write_bytes(mask_bytes)
  status, err = run_cli(cli_args(image_path, mask_path, out, '--resize_mask'), inpainter)
  assert 'Traceback' not in err
  event(f'exit {status}')
  try:  # The API on the same files agrees with the CLI.
    api_result = inpainter(str(image_path), str(mask_path), polarity='hole_white',
                           resize_mask=True)
  except InputError as error:
    assert status == 2 and (str(image_path) in str(error) or 'mask' in str(error).lower())
  if status != 0:
    assert status == 2 and err.startswith('error: ') and not out.exists()
    assert str(image_path) in err or str(mask_path) in err, err
    return
  with Image.open(out) as written:
    np.testing.assert_array_equal(np.asarray(written), np.asarray(api_result))
  source = image_files.photo_pixels(image_files.open_image(image_path), 'photo')
  with Image.open(out) as written:
    result = np.asarray(written)
  assert result.shape[:2] == source.shape[:2]
  if holes is not None:
    if result.ndim == 2:  # A grey photo stays grey.
      source = source[..., 0]
    np.testing.assert_array_equal(result[~holes], source[~holes])
