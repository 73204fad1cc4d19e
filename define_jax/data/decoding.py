"""Decoding images and stored masks, and the square crops every image is cut to."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image


class UnreadableInputError(Exception):
  """An image or mask that cannot be decoded."""


def decode_rgb(data: bytes, min_side: int = 0) -> np.ndarray:
  """Decodes any PIL-readable image to RGB uint8 [H, W, 3].

  Converts what can be converted: greyscale and palette to RGB, alpha is
  dropped, 16-bit samples are scaled to 8 bits. `min_side` lets JPEG decode
  at a reduced DCT scale while keeping the shorter side >= min_side. Raises
  UnreadableInputError for corrupt or truncated data.
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      frames = frame_count(image)
      if frames > 1:
        raise UnreadableInputError(f'{frames} frames (an animation or a multi-page file); '
                                   'only single images are read')
      if image.format == 'JPEG' and min_side > 0:
        image.draft(image.mode, (min_side, min_side))
      image.load()
      return _to_rgb8(image)
  except Image.UnidentifiedImageError as error:  # its message names a BytesIO object
    raise UnreadableInputError('not an image in a known format, or corrupt') from error
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
    raise UnreadableInputError(str(error) or type(error).__name__) from error


def frame_count(image: Image.Image) -> int:
  """Frames of an animation or pages of a multi-page file; 1 when it cannot be counted (a
  damaged file is then reported by decoding)."""
  try:
    return int(getattr(image, 'n_frames', 1))
  except Exception:  # pylint: disable=broad-except  # Pillow seeks; damaged data raises anything.
    return 1


def _to_rgb8(image: Image.Image) -> np.ndarray:
  if image.mode == 'RGB':
    return np.asarray(image)
  if image.mode.startswith('I;16') or image.mode == 'I':  # 16-bit greyscale PNG
    grey = (np.asarray(image, np.int64) // 257).clip(0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  return np.asarray(image.convert('RGB'))


def decode_stored_mask(data: bytes) -> np.ndarray:
  """A mask as the project's TFDS builders store it: PNG, uint8 0/1, 1 = known."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      known = np.asarray(image)
  except (OSError, SyntaxError, ValueError) as error:
    raise UnreadableInputError(str(error)) from error
  if known.ndim == 3:
    known = known[..., 0]
  return (known > 0).astype(np.uint8)


def crop_and_resize(
    image: np.ndarray,
    size: int,
    rng: np.random.Generator | None,
    crop_fractions: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
  """Square crop resized to size x size (antialiased when shrinking).

  rng None: centre crop spanning the shorter side (evaluation). Otherwise a
  random crop spanning a random fraction in `crop_fractions` of the shorter
  side at a random position, mirrored left-right with probability 1/2.
  """
  height, width = image.shape[:2]
  shorter = min(height, width)
  if rng is None:
    side = shorter
    top, left = (height - side) // 2, (width - side) // 2
  else:
    side = max(1, round(rng.uniform(*crop_fractions) * shorter))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
  crop = image[top : top + side, left : left + side]
  interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
  resized = (
      cv2.resize(crop, (size, size), interpolation=interpolation) if side != size else crop.copy()
  )
  if rng is not None and rng.random() < 0.5:
    resized = cv2.flip(resized, 1)
  return resized
