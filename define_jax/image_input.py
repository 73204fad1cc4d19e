"""Reading photos and masks for inference without silent surprises.

One place for what the inference API, the `inpaint` command and the browser demo accept:
  - a pixel limit (DEFAULT_MAX_PIXELS, configurable) checked from the file's header before
    any pixel is decoded, so a small file claiming a huge size costs nothing;
  - every Pillow mode read as what it shows: 16-bit and 32-bit-integer greys scaled from
    0..65535 (not clipped at 255), float greys kept in [0, 1], transparency flattened onto
    white, palette/CMYK/YCbCr converted, the EXIF orientation applied;
  - errors (InputError, a ValueError) that name the file or the argument, with a short
    `reason` for summaries such as "3 skipped (2 too large, 1 unreadable)".

Pure NumPy/Pillow, no JAX.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any, Literal, Sequence, Union

import numpy as np
from PIL import Image, ImageOps

from define_jax.data import decoding

# 50 megapixels: the largest image or mask decoded at all (150 MB as uint8 RGB); a 144 MP
# decompression bomb (12000×12000) took 10.5 GB before this limit. Inpainting needs far
# more per pixel (about 320 bytes with fit='auto', measured): it is bounded separately, by
# memory.py's model and --max_memory_gb (4 GB: about 8.6 megapixels with fit='auto').
DEFAULT_MAX_PIXELS = 50_000_000

Source = Union[str, os.PathLike, bytes]
ImageInput = Union[np.ndarray, Image.Image, str, os.PathLike]

# A mask is thresholded at mid-grey (or --mask_threshold). Anti-aliased edges are fine, but
# a mask is rejected as a soft mask or no mask at all (a photo), where any threshold would be
# a guess, when over MAX_GREY_FRACTION of its pixels are clearly grey (between 10% and 90%)
# and those grey pixels are over MAX_GREY_SHARE of its hole area (hole and edges): the edges
# of a 6-pixel brush stroke are a third of the stroke but already 5% of a 512² mask.
MAX_GREY_FRACTION = 0.05
MAX_GREY_SHARE = 0.5
DEFAULT_MASK_THRESHOLD = 0.5

_ALPHA_MODES = ('RGBA', 'RGBa', 'LA', 'La', 'PA')
_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N')


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
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
  """Decodes an image file (a path or its bytes), upright per its EXIF orientation.

  The size in the header is checked against `max_pixels` before decoding. InputError names
  the file (`name`, default the path) for a missing, unreadable, damaged, empty or too
  large image.
  """
  if name is None:
    name = 'The image' if isinstance(source, (bytes, bytearray)) else os.fspath(source)
  if isinstance(source, (bytes, bytearray)):
    if not source:
      raise InputError(f'{name} is empty (0 bytes).', 'unreadable')
    source = io.BytesIO(source)
  elif os.path.isdir(source):
    raise InputError(f'{name} is a directory, not an image file.', 'unreadable')
  elif not os.path.exists(source):
    raise InputError(f'{name} does not exist.', 'missing')
  try:
    with warnings.catch_warnings():  # Pillow warns above 89 MP; max_pixels is the limit here.
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      image = Image.open(source)
  except Image.DecompressionBombError as error:  # Pillow's own limit (about 179 MP).
    raise InputError(f'{name} is over Pillow\'s decompression-bomb limit ({error}); the limit '
                     f'here is {pixel_count(max_pixels or 0)}.', 'too large') from error
  except Exception as error:  # pylint: disable=broad-except
    # Pillow raises many types on garbage (OSError, SyntaxError, struct.error, …).
    raise InputError(f'{name} is not an image that can be read (PNG, JPEG, WebP, BMP, TIFF, '
                     f'GIF, …): {_detail(error, source, name)}', 'unreadable') from error
  check_size(*image.size, name, max_pixels)
  frames = decoding.frame_count(image)
  if frames > 1:
    raise InputError(f'{name} has {frames} frames (an animation or a multi-page file); save '
                     'the one frame to use as a single image.', 'unsupported')
  try:
    image.load()
    return ImageOps.exif_transpose(image)
  except Exception as error:  # pylint: disable=broad-except
    raise InputError(f'{name} could not be decoded (damaged or truncated): '
                     f'{_detail(error, source, name)}', 'unreadable') from error


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
  if image.mode in _SIXTEEN_BIT_MODES or image.mode == 'I':
    grey = _sixteen_bit(image, name)
  elif image.mode == 'F':
    grey = _float_grey(image, name)
  else:
    if image.mode in _ALPHA_MODES or 'transparency' in image.info:
      rgba = image.convert('RGBA')
      white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
      image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert('RGB'))
  return np.repeat(grey[..., None], 3, axis=-1)


def mask_pixels(image: Image.Image, name: str = 'The mask') -> np.ndarray:
  """[H, W] grey levels of a mask image in their own scale: bool for 1-bit, uint16 for
  16-bit greys, float32 for 'F', uint8 otherwise (colour as luminance).

  Alpha: a mask whose visible pixels have one colour while its transparency varies
  (strokes painted on a transparent layer, as the demo's editor gives) is read from its
  alpha, opaque = white; otherwise the colour is the mask and alpha is ignored.
  """
  if image.mode in _SIXTEEN_BIT_MODES or image.mode == 'I':
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
  return np.asarray(image.convert('L'))


def _luma(pixels: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma of [H, W, 3] (the weights Pillow's convert('L') uses), float64."""
  return pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def result_image(pixels: np.ndarray, like: Image.Image) -> Image.Image:
  """A PIL image of result pixels [H, W, 3] in the mode closest to `like`'s: 'RGB' and 'L'
  stay, 16-bit and integer greys come back as 'I;16', float greys as 'F', others as 'RGB'.

  Greys are the luma of the result, as Pillow computes 'L'; the known pixels of a grey input
  have three equal channels, so their grey is exactly the input's value.
  """
  if like.mode in _SIXTEEN_BIT_MODES or like.mode == 'I':
    return Image.fromarray(np.clip(np.round(_luma(pixels)), 0, 65535).astype(np.uint16))
  if like.mode == 'F':
    return Image.fromarray(_luma(pixels).astype(np.float32), mode='F')
  result = Image.fromarray(pixels)
  return result.convert('L') if like.mode == 'L' else result


def to_8bit(image: Image.Image) -> Image.Image:
  """'I;16' and 'F' greys as 8-bit 'L' (scaled, not clipped), for formats without 16 bit."""
  if image.mode in _SIXTEEN_BIT_MODES or image.mode == 'I':
    scale = 65535.0
  elif image.mode == 'F':
    scale = 1.0
  else:
    return image
  grey = np.asarray(image, np.float64) / scale
  return Image.fromarray(np.round(np.clip(grey, 0.0, 1.0) * 255).astype(np.uint8))


# --- Arrays, PIL images and paths as the inference API takes them -------------------------


def _mask_brightness(mask: np.ndarray) -> np.ndarray:
  """float32 grey levels in [0, 1] of a mask array; see known_mask for the rules."""
  if mask.dtype == bool:
    return mask.astype(np.float32)
  if np.issubdtype(mask.dtype, np.integer):
    low, high = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    if low >= 0 and high <= 1:  # {0, 1}: a binary mask, 1 = white.
      return mask.astype(np.float32)
    if mask.dtype in (np.uint8, np.uint16):
      return mask.astype(np.float32) / np.iinfo(mask.dtype).max
    if low >= 0 and high <= 255:  # e.g. np.where(holes, 255, 0), which is int64.
      return mask.astype(np.float32) / 255.0
    raise InputError(f'A {mask.dtype} mask with values {low}..{high}: use 0/1, 0..255 or '
                     'bool (or uint16 0..65535).', 'unsupported')
  if np.issubdtype(mask.dtype, np.floating):
    if not np.all((mask >= 0.0) & (mask <= 1.0)):
      raise InputError(f'Float masks must lie in [0, 1]; got range [{np.nanmin(mask)}, '
                       f'{np.nanmax(mask)}].', 'unsupported')
    return mask.astype(np.float32)
  raise InputError(f'Unsupported mask dtype {mask.dtype}: use bool, an integer type or float.',
                   'unsupported')


def known_mask(mask: np.ndarray, polarity: Literal['hole_white', 'keep_white'],
               threshold: float = DEFAULT_MASK_THRESHOLD) -> np.ndarray:
  """float32 [..., 1], 1 = known, from a mask array [..., H, W] or [..., H, W, 1|3].

  Grey levels: bool as is; an integer mask whose only values are 0 and 1 is binary (1 =
  white) whatever its dtype; otherwise uint8 and uint16 are scaled by their maximum (255,
  65535) and other integer types holding 0..255 by 255; floats must lie in [0, 1].
  'hole_white' means white = hole, 'keep_white' white = known. The mask is thresholded at
  `threshold` (of white; mid-grey by default); InputError for a mask that is not (nearly)
  binary (see MAX_GREY_FRACTION and MAX_GREY_SHARE), and for one with non-black pixels of
  which none reaches the threshold (8-bit data in a 16-bit array, for instance), whose scale
  would be a guess.
  """
  if polarity not in ('hole_white', 'keep_white'):
    raise ValueError(f"polarity must be 'hole_white' or 'keep_white', got {polarity!r}.")
  if not 0.0 < threshold < 1.0:
    raise ValueError(f'mask_threshold={threshold}: must lie strictly between 0 and 1.')
  mask = np.asarray(mask)
  brightness = _mask_brightness(mask)
  grey = (brightness > 0.1) & (brightness < 0.9)
  # The hole and its edges: every pixel that is not clearly of the known colour.
  hole_area = brightness > 0.1 if polarity == 'hole_white' else brightness < 0.9
  grey_fraction = float(np.mean(grey)) if mask.size else 0.0
  grey_share = float(grey.sum() / max(int(hole_area.sum()), 1))
  if grey_fraction > MAX_GREY_FRACTION and grey_share > MAX_GREY_SHARE:
    raise InputError(
        f'The mask is not binary: {grey_share:.0%} of its hole area ({grey_fraction:.0%} of '
        'its pixels) is neither near black nor near white; anti-aliased edges are at most '
        f'{MAX_GREY_SHARE:.0%} of it. Threshold it yourself, e.g. mask > 127, if that is '
        'what you mean.', 'not binary')
  white = brightness > threshold
  if brightness.size and not white.any() and brightness.max() > 0.0:
    raise InputError(
        f'The mask has non-black pixels but none as bright as the threshold {threshold:.0%} '
        f'(brightest {float(brightness.max()):.2%} of white, dtype {mask.dtype}): its scale '
        'is unclear. Use 0/1, 0/255 (uint8) or 0/65535 (uint16).', 'not binary')
  return (white if polarity == 'keep_white' else ~white).astype(np.float32)


def read_mask_file(path: str | os.PathLike, polarity: Literal['hole_white', 'keep_white'],
                   max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """uint8 [H, W], 1 = known, of a mask file: the rules of `known_mask`, as for inpaint's
  --mask, so a folder of photos is refused rather than thresholded. InputError names it."""
  name = os.fspath(path)
  pixels = mask_pixels(open_image(path, max_pixels=max_pixels), name)
  try:
    return known_mask(pixels, polarity).astype(np.uint8)
  except InputError as error:
    raise InputError(str(error).replace('The mask', name), error.reason) from error


def input_name(item: Any, default: str) -> str:
  return os.fspath(item) if isinstance(item, (str, os.PathLike)) else default


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
    return stack([image_array(open_input(item, input_name(item, f'Image {i}'), max_pixels), None)
                   for i, item in enumerate(image)], 'image')
  name = input_name(image, 'The image')
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
  name = input_name(mask, 'The mask')
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
