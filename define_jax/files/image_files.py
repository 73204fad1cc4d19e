"""Reading photos and masks: the one set of rules behind every reader of image files.

Training data (define_jax.data), the TFDS builders, `evaluate`, `inpaint`, the inference API
and the demo all read here, so one file gives the same pixels and the same mask everywhere:
  - a pixel limit (`max_pixels`) checked from the file's header before any pixel is decoded,
    so a small file claiming a huge size costs nothing; one frame only (animations and
    multi-page files are refused); the EXIF orientation applied;
  - photos read as they show: 16-bit and 32-bit-integer greys scaled from 0..65535 (not
    clipped at 255), float greys kept in [0, 1], transparency flattened onto white,
    palette/CMYK/YCbCr converted; `to_uint8` is the one rule to 8 bit;
  - masks: one alpha rule, one threshold (`threshold`, inpaint's --mask_threshold), the
    polarity ('hole_white' or 'keep_white'), a binary reading of 0/1 data, and soft masks or
    photos refused rather than thresholded;
  - errors (InputError, a ValueError) that name the file or the argument, with a short
    `reason` for summaries such as "3 skipped (2 too large, 1 unreadable)";
  - what the inference API is given (ImageInput: arrays, PIL images, paths, lists) turned
    into batches of pixels and grey-level masks, and results back into PIL images of the
    input's mode (image_array, mask_array, result_image).

Pure NumPy/Pillow: no TensorFlow, no JAX.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from typing import Any, Literal, Sequence, Union

import numpy as np
from PIL import Image, ImageOps

# 50 megapixels: the largest image or mask decoded at all (150 MB as uint8 RGB); a 144 MP
# decompression bomb (12000×12000) took 10.5 GB before this limit. Inpainting needs far
# more per pixel (about 320 bytes with fit='auto', measured): it is bounded separately, by
# memory.py's model and --max_memory_gb (4 GB: about 8.6 megapixels with fit='auto').
DEFAULT_MAX_PIXELS = 50_000_000

MaskPolarity = Literal['hole_white', 'keep_white']
POLARITIES = ('hole_white', 'keep_white')
Source = Union[str, os.PathLike, bytes]

# A mask is thresholded at mid-grey (or `threshold`). Anti-aliased edges are fine, but a
# mask is rejected as a soft mask or no mask at all (a photo), where any threshold would be
# a guess, when over MAX_GREY_FRACTION of its pixels are clearly grey (between 10% and 90%)
# and those grey pixels are over MAX_GREY_SHARE of its hole area (hole and edges): the edges
# of a 6-pixel brush stroke are a third of the stroke but already 5% of a 512² mask.
MAX_GREY_FRACTION = 0.05
MAX_GREY_SHARE = 0.5
DEFAULT_MASK_THRESHOLD = 0.5

_ALPHA_MODES = ('RGBA', 'RGBa', 'LA', 'La', 'PA')
# Greys deeper than 8 bit: 16-bit and 32-bit integer ('I', read as 0..65535).
SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')
# Grey levels in [0, 1] of the 256 uint8 and 65536 uint16 values, and of binary 0/1 data.
_LEVELS = {np.dtype(np.uint8): np.arange(256, dtype=np.float32) / 255,
           np.dtype(np.uint16): np.arange(65536, dtype=np.float32) / 65535}
_BINARY_LEVELS = np.array([0.0, 1.0], np.float32)


class InputError(ValueError):
  """Input the user can fix. The message names the file or argument; `reason` is a short
  category for summaries ('too large', 'unreadable', 'empty', 'unsupported', ...)."""

  def __init__(self, message: str, reason: str = 'bad input'):
    super().__init__(message)
    self.reason = reason


def pixel_count(pixels: float) -> str:
  """'144 megapixels', '12.5 megapixels' or '1,000 pixels'."""
  if pixels < 1e6:
    return f'{int(pixels):,} pixels'
  return f'{pixels / 1e6:.1f}'.rstrip('0').rstrip('.') + ' megapixels'


def check_size(width: int, height: int, name: str, max_pixels: int | None) -> None:
  """InputError for an image without pixels or with more than max_pixels (None: no limit)."""
  if width < 1 or height < 1:
    raise InputError(f'{name} is {width}×{height}: an image needs at least one pixel.', 'empty')
  if max_pixels is not None and width * height > max_pixels:
    raise InputError(
        f'{name} is {width}×{height} ({pixel_count(width * height)}), over the limit of '
        f'{pixel_count(max_pixels)} (max_pixels, --max_pixels). Downscale '
        'it or raise the limit.', 'too large')


def open_image(source: Source, *, name: str | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, min_side: int = 0) -> Image.Image:
  """Decodes an image file (a path or its bytes), upright per its EXIF orientation.

  The size in the header is checked against `max_pixels` before decoding. `min_side` > 0
  lets a JPEG decode at a reduced DCT scale that keeps its shorter side >= min_side (the
  training pipeline's shortcut for large photos). InputError names the file (`name`,
  default the path) for a missing, unreadable, damaged, animated, empty or too large image.
  """
  name = name or source_name(source, 'The image')
  if isinstance(source, (bytes, bytearray)):
    if not source:
      raise InputError(f'{name} is empty (0 bytes).', 'unreadable')
    source = io.BytesIO(source)
  elif os.path.isdir(source):
    raise InputError(f'{name} is a directory, not an image file.', 'unreadable')
  elif not os.path.exists(source):
    raise InputError(f'{name} does not exist.', 'missing')
  try:
    with contextlib.ExitStack() as stack:
      # max_pixels replaces Pillow's warning above 89 MP. Without it (training data) the
      # warning filters, process-wide and not thread-safe, are left alone.
      if max_pixels is not None:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      image = Image.open(source)
  except Image.DecompressionBombError as error:  # Pillow's own limit (about 179 MP).
    limit = f'; the limit here is {pixel_count(max_pixels)}' if max_pixels is not None else ''
    raise InputError(f'{name} is over Pillow\'s decompression-bomb limit ({error}){limit}.',
                     'too large') from error
  except Exception as error:  # pylint: disable=broad-except
    # Pillow raises many types on garbage (OSError, SyntaxError, struct.error, …).
    raise InputError(f'{name} is not an image that can be read (PNG, JPEG, WebP, BMP, TIFF, '
                     f'GIF, …): {_detail(error, source, name)}', 'unreadable') from error
  check_size(*image.size, name, max_pixels)
  frames = _frame_count(image)
  if frames > 1:
    raise InputError(f'{name} has {frames} frames (an animation or a multi-page file); save '
                     'the one frame to use as a single image.', 'unsupported')
  try:
    if image.format == 'JPEG' and min_side > 0:
      image.draft(image.mode, (min_side, min_side))
    image.load()
    return ImageOps.exif_transpose(image)
  except Exception as error:  # pylint: disable=broad-except
    raise InputError(f'{name} could not be decoded (damaged or truncated): '
                     f'{_detail(error, source, name)}', 'unreadable') from error


def source_name(source: Any, default: str) -> str:
  """A path names itself; anything else (bytes, arrays, PIL images) is called `default`."""
  return os.fspath(source) if isinstance(source, (str, os.PathLike)) else default


def _frame_count(image: Image.Image) -> int:
  """Frames of an animation or pages of a multi-page file; 1 when it cannot be counted (a
  damaged file is then reported by decoding)."""
  try:
    return int(getattr(image, 'n_frames', 1))
  except Exception:  # pylint: disable=broad-except  # Pillow seeks; damaged data raises anything.
    return 1


def _detail(error: Exception, source: Any, name: str) -> str:
  """Pillow's message without the file's full path (the name says which file it is)."""
  detail = str(error)
  if isinstance(source, (str, os.PathLike)):
    detail = detail.replace(f"'{os.fspath(source)}'", 'it').replace(os.fspath(source), 'it')
  return detail or type(error).__name__


def _sixteen_bit(image: Image.Image, name: str) -> np.ndarray:
  """uint16 [H, W] from a 16-bit ('I;16*') or 32-bit integer ('I') grey image."""
  pixels = np.asarray(image)
  if image.mode == 'I' and pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
    raise InputError(f'{name} is a 32-bit integer image with values {pixels.min()}..'
                     f'{pixels.max()}; only 0..65535 (16 bit) is supported.', 'unsupported')
  return pixels.astype(np.uint16)


def _float_grey(image: Image.Image, name: str) -> np.ndarray:
  pixels = np.asarray(image, np.float32)
  if not np.all((pixels >= 0.0) & (pixels <= 1.0)):  # NaN fails too.
    raise InputError(f'{name} is a floating-point image with values outside [0, 1] (range '
                     f'{np.nanmin(pixels)}..{np.nanmax(pixels)}); scale it to [0, 1].',
                     'unsupported')
  return pixels


def photo_pixels(image: Image.Image, name: str = 'The image') -> np.ndarray:
  """[H, W, 3] pixels as the image shows them: uint8 for 8-bit modes, uint16 for 16-bit and
  32-bit-integer greys (0..65535), float32 in [0, 1] for float greys ('F').

  Transparency is flattened onto white (what a viewer shows), not dropped.
  """
  if image.mode in SIXTEEN_BIT_MODES:
    grey = _sixteen_bit(image, name)
  elif image.mode == 'F':
    grey = _float_grey(image, name)
  else:
    if image.mode in _ALPHA_MODES or 'transparency' in image.info:
      rgba = image.convert('RGBA')
      white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
      image = Image.alpha_composite(white, rgba)
    return np.asarray(image if image.mode == 'RGB' else image.convert('RGB'))
  return np.repeat(grey[..., None], 3, axis=-1)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
  """8-bit pixels: integers scaled from 0..65535 and floats from [0, 1], rounded to the
  nearest level and clipped; uint8 as is."""
  if pixels.dtype == np.uint8:
    return pixels
  scale = 255.0 if np.issubdtype(pixels.dtype, np.floating) else 255.0 / 65535.0
  return np.round(np.clip(pixels.astype(np.float64) * scale, 0.0, 255.0)).astype(np.uint8)


def read_photo(source: Source, *, name: str | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, min_side: int = 0) -> np.ndarray:
  """uint8 RGB [H, W, 3] of a photo file (path or bytes): open_image, photo_pixels and
  to_uint8, the reading of training and evaluation images. InputError names it."""
  name = name or source_name(source, 'The image')
  image = open_image(source, name=name, max_pixels=max_pixels, min_side=min_side)
  return to_uint8(photo_pixels(image, name))


def mask_pixels(image: Image.Image, name: str = 'The mask') -> np.ndarray:
  """[H, W] grey levels of a mask image in their own scale: bool for 1-bit, uint16 for
  16-bit greys, float32 for 'F', uint8 otherwise (colour as luminance).

  Alpha: a mask whose visible pixels have one colour while its transparency varies
  (strokes painted on a transparent layer, as the demo's editor gives) is read from its
  alpha, opaque = white; otherwise the colour is the mask and alpha is ignored.
  """
  if image.mode in SIXTEEN_BIT_MODES:
    return _sixteen_bit(image, name)
  if image.mode == 'F':
    return _float_grey(image, name)
  if image.mode == '1':
    return np.asarray(image, bool)
  if image.mode in _ALPHA_MODES or 'transparency' in image.info:
    rgba = np.asarray(image.convert('RGBA'))
    alpha = rgba[..., 3]
    visible = rgba[..., :3][alpha > 0]  # The colour of transparent pixels is never seen.
    if alpha.min() != alpha.max() and (visible == visible[0]).all():
      return alpha
  return np.asarray(image if image.mode == 'L' else image.convert('L'))


def _grey_levels(mask: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
  """(levels, index): the grey levels in [0, 1] (float32, ascending) that a mask array can
  hold and each pixel's index into them, so that the mask rules are worked out per level.

  bool as is; an integer mask whose only values are 0 and 1 is binary (1 = white) whatever
  its dtype; otherwise uint8 and uint16 are scaled by their maximum (255, 65535) and other
  integer types holding 0..255 by 255; floats must lie in [0, 1].
  """
  if mask.dtype == bool:
    return _BINARY_LEVELS, mask.astype(np.uint8)  # Not a view: PIL's bools may hold 255.
  if np.issubdtype(mask.dtype, np.integer):
    low, high = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    if low >= 0 and high <= 1:  # {0, 1}: a binary mask, 1 = white.
      return _BINARY_LEVELS, mask.astype(np.uint8, copy=False)
    if mask.dtype in _LEVELS:
      return _LEVELS[mask.dtype], mask
    if low >= 0 and high <= 255:  # e.g. np.where(holes, 255, 0), which is int64.
      return _LEVELS[np.dtype(np.uint8)], mask.astype(np.uint8)
    raise InputError(f'{name}: a {mask.dtype} mask with values {low}..{high}: use 0/1, 0..255 '
                     'or bool (or uint16 0..65535).', 'unsupported')
  if np.issubdtype(mask.dtype, np.floating):
    if not np.all((mask >= 0.0) & (mask <= 1.0)):
      raise InputError(f'{name}: float masks must lie in [0, 1]; got range [{np.nanmin(mask)}, '
                       f'{np.nanmax(mask)}].', 'unsupported')
    levels, index = np.unique(mask.astype(np.float32), return_inverse=True)
    return levels, index.reshape(mask.shape)
  raise InputError(f'{name}: unsupported mask dtype {mask.dtype}: use bool, an integer type or '
                   'float.', 'unsupported')


def known_pixels(mask: np.ndarray, polarity: MaskPolarity,
                 threshold: float = DEFAULT_MASK_THRESHOLD, name: str = 'The mask') -> np.ndarray:
  """bool, True = known, of a mask array [..., H, W] (see _grey_levels for its grey levels).

  'hole_white' means white = hole, 'keep_white' white = known. The mask is thresholded at
  `threshold` (of white; mid-grey by default); InputError naming the mask for one that is
  not (nearly) binary (see MAX_GREY_FRACTION and MAX_GREY_SHARE), and for one with non-black
  pixels of which none reaches the threshold (8-bit data in a 16-bit array, for instance),
  whose scale would be a guess.
  """
  if polarity not in POLARITIES:
    raise ValueError(f"polarity must be 'hole_white' or 'keep_white', got {polarity!r}.")
  if not 0.0 < threshold < 1.0:
    raise ValueError(f'mask_threshold={threshold}: must lie strictly between 0 and 1.')
  mask = np.asarray(mask)
  levels, index = _grey_levels(mask, name)
  # The levels ascend, so each rule holds on one side of an index: comparing the index with
  # it is a fast pass over the pixels, where looking each pixel's level up is not.
  not_black_from = int(np.count_nonzero(~(levels > 0.1)))
  not_white_below = int(np.count_nonzero(levels < 0.9))
  white_from = int(np.count_nonzero(~(levels > threshold)))
  not_black = int(np.count_nonzero(index >= not_black_from))
  not_white = int(np.count_nonzero(index < not_white_below))
  grey_count = not_black + not_white - mask.size  # neither near black nor near white
  grey_fraction = grey_count / mask.size if mask.size else 0.0
  # The hole and its edges: every pixel that is not clearly of the known colour.
  hole_area = not_black if polarity == 'hole_white' else not_white
  grey_share = grey_count / max(hole_area, 1)
  if grey_fraction > MAX_GREY_FRACTION and grey_share > MAX_GREY_SHARE:
    raise InputError(
        f'{name} is not binary: {grey_share:.0%} of its hole area ({grey_fraction:.0%} of '
        'its pixels) is neither near black nor near white; anti-aliased edges are at most '
        f'{MAX_GREY_SHARE:.0%} of it. Threshold it yourself, e.g. mask > 127, if that is '
        'what you mean.', 'not binary')
  brightest = float(levels[int(index.max())]) if mask.size else 0.0
  white = index >= white_from
  if mask.size and not white.any() and brightest > 0.0:
    raise InputError(
        f'{name} has non-black pixels but none as bright as the threshold {threshold:.0%} '
        f'(brightest {brightest:.2%} of white, dtype {mask.dtype}): its scale is unclear. '
        'Use 0/1, 0/255 (uint8) or 0/65535 (uint16).', 'not binary')
  return white if polarity == 'keep_white' else ~white


def read_mask(source: Source, polarity: MaskPolarity, *,
              threshold: float = DEFAULT_MASK_THRESHOLD, name: str | None = None,
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """uint8 [H, W], 1 = known, of a mask file (path or bytes): open_image, mask_pixels and
  known_pixels, as inpaint's --mask, evaluate's --mask_dir and the TFDS mask sets read
  them. InputError names the file."""
  name = name or source_name(source, 'The mask')
  pixels = mask_pixels(open_image(source, name=name, max_pixels=max_pixels), name)
  return known_pixels(pixels, polarity, threshold, name).astype(np.uint8)


ImageInput = Union[np.ndarray, Image.Image, str, os.PathLike]


def _luma(pixels: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma of [H, W, 3] (the weights Pillow's convert('L') uses), float64."""
  return pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def result_image(pixels: np.ndarray, like: Image.Image) -> Image.Image:
  """A PIL image of result pixels [H, W, 3] in the mode closest to `like`'s: 'RGB' and 'L'
  stay, 16-bit and integer greys come back as 'I;16', float greys as 'F', others as 'RGB'.

  Greys are the luma of the result, as Pillow computes 'L'; the known pixels of a grey input
  have three equal channels, so their grey is exactly the input's value.
  """
  if like.mode in SIXTEEN_BIT_MODES:
    return Image.fromarray(np.clip(np.round(_luma(pixels)), 0, 65535).astype(np.uint16))
  if like.mode == 'F':
    return Image.fromarray(_luma(pixels).astype(np.float32), mode='F')
  result = Image.fromarray(pixels)
  return result.convert('L') if like.mode == 'L' else result


def to_8bit(image: Image.Image) -> Image.Image:
  """'I;16' and 'F' greys as 8-bit 'L' (scaled, not clipped), for formats without 16 bit."""
  if image.mode in SIXTEEN_BIT_MODES or image.mode == 'F':
    return Image.fromarray(to_uint8(np.asarray(image)))
  return image


def open_input(item: Any, name: str, max_pixels: int | None) -> Any:
  """A path opened (header checked against max_pixels first); PIL images size-checked."""
  if isinstance(item, (str, os.PathLike)):
    return open_image(item, name=name, max_pixels=max_pixels)
  if isinstance(item, Image.Image):  # A lazily opened file is still undecoded here.
    check_size(*item.size, name, max_pixels)
  return item


def stack(items: Sequence[np.ndarray], what: str) -> np.ndarray:
  """One batch from a list of equally shaped arrays; InputError naming the misfits."""
  if not items:
    raise InputError(f'An empty list of {what}s: nothing to inpaint.', 'empty')
  shapes = [item.shape for item in items]
  if any(shape != shapes[0] for shape in shapes):
    odd = next(i for i, shape in enumerate(shapes) if shape != shapes[0])
    raise InputError(f'The {what}s of a batch must share one shape: {what} 0 is {shapes[0]}, '
                     f'{what} {odd} is {shapes[odd]}. Inpaint them one call per size.',
                     'ragged batch')
  dtypes = {item.dtype for item in items}
  if len(dtypes) > 1:
    raise InputError(f'The {what}s of a batch must share one dtype; got '
                     f'{", ".join(sorted(map(str, dtypes)))}.', 'ragged batch')
  return np.stack(items)


def image_array(image: Any, max_pixels: int | None) -> np.ndarray:
  """[H, W, 3] or [N, H, W, 3] pixels of an image, a path, a PIL image or a list of them."""
  if isinstance(image, (list, tuple)):
    return stack([image_array(open_input(item, source_name(item, f'Image {i}'), max_pixels),
                              None)
                  for i, item in enumerate(image)], 'image')
  name = source_name(image, 'The image')
  image = open_input(image, name, max_pixels)
  if isinstance(image, Image.Image):
    return photo_pixels(image, name)
  image = np.asarray(image)
  if image.ndim not in (3, 4) or image.shape[-1] != 3:
    raise InputError(f'Expected an RGB image [H, W, 3] or a batch [N, H, W, 3]; got shape '
                     f'{image.shape}. Convert greyscale with np.repeat(image[..., None], 3, -1).',
                     'unsupported')
  if image.ndim == 4 and image.shape[0] == 0:
    raise InputError('An empty batch (0 images): nothing to inpaint.', 'empty')
  check_size(image.shape[-2], image.shape[-3], name, max_pixels)
  return image


def mask_array(mask: Any, batched: bool, max_pixels: int | None) -> np.ndarray:
  """The mask as [N, H, W] or [N, H, W, C] (a channel axis is kept if given)."""
  if isinstance(mask, (list, tuple)):
    if not batched:
      raise InputError(f'A list of {len(mask)} masks for a single image.', 'ragged batch')
    return stack([mask_array(item, False, max_pixels)[0] for item in mask], 'mask')
  name = source_name(mask, 'The mask')
  mask = open_input(mask, name, max_pixels)
  if isinstance(mask, Image.Image):
    mask = mask_pixels(mask, name)
  mask = np.asarray(mask)
  if mask.ndim not in ((3, 4) if batched else (2, 3)):
    raise InputError(f'Expected a mask [{"N, " if batched else ""}H, W] or '
                     f'[{"N, " if batched else ""}H, W, 1]; got shape {mask.shape}.',
                     'unsupported')
  has_channels = mask.ndim == (4 if batched else 3)
  if has_channels and mask.shape[-1] == 3:
    mask = mask.mean(axis=-1).astype(mask.dtype)  # An RGB rendering of a grey mask.
  elif has_channels and mask.shape[-1] == 1:
    mask = mask[..., 0]
  elif has_channels:
    raise InputError(f'A mask needs 1 or 3 channels; got shape {mask.shape}. '
                     'Pass the one channel that marks the holes.', 'unsupported')
  if mask.shape[-1] == 0 or mask.shape[-2] == 0:
    raise InputError(f'{name} is {mask.shape[-1]}×{mask.shape[-2]}: a mask needs at least one '
                     'pixel.', 'empty')
  return mask if batched else mask[None]
