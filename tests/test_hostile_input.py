"""Property-based tests: arbitrary bytes, sizes and dtypes give a valid result or a clear
error from image/mask decoding and the inference API, never a crash or a hang."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from PIL import Image

from define_jax import input_pipeline
from define_jax import masks
from define_jax.inference import Inpainter

FAST = settings(max_examples=300, deadline=None)


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
def test_decode_rgb_of_arbitrary_bytes(data):
  try:
    image = input_pipeline.decode_rgb(data)
  except input_pipeline.UnreadableInputError as error:
    assert str(error)
    return
  assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@FAST
@given(pixels, st.sampled_from(['PNG', 'JPEG', 'BMP', 'TIFF']), st.integers(0, 4000),
       st.lists(st.integers(0, 10**6), max_size=4))
def test_decode_rgb_of_real_and_damaged_images(array, image_format, cut, flips):
  if image_format == 'JPEG' and array.ndim == 3 and array.shape[2] == 4:
    array = array[..., :3]
  data = damaged(encoded(array, image_format), cut, flips)
  try:
    image = input_pipeline.decode_rgb(data)
  except input_pipeline.UnreadableInputError as error:
    assert str(error)
    return
  assert image.dtype == np.uint8 and image.shape[2] == 3


@FAST
@given(st.one_of(st.binary(max_size=2048),
                 st.builds(lambda a, cut, flips: damaged(encoded(a, 'PNG'), cut, flips),
                           pixels, st.integers(0, 4000), st.lists(st.integers(0, 10**6),
                                                                  max_size=4))),
       st.sampled_from(['hole_white', 'keep_white']))
def test_decode_mask_of_arbitrary_bytes(data, polarity):
  try:
    known = masks.decode_mask(data, polarity)
  except ValueError as error:
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
  height, width = draw(st.integers(1, 48)), draw(st.integers(1, 48))
  channels = draw(st.sampled_from([3, 3, 3, 3, None, 1, 4]))
  image_shape = (height, width) if channels is None else (height, width, channels)
  mask_height = draw(st.sampled_from([height, draw(st.integers(1, 48))]))
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
