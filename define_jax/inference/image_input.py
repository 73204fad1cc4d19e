"""Images and masks as the inference API takes them: arrays, PIL images, paths, lists.

Files are read by define_jax.files.image_files (the pixel limit, modes, the mask rules); this
module turns what `Inpainter.__call__` is given into batches of pixels and grey-level masks,
and results back into PIL images of the input's mode. Pure NumPy/Pillow, no JAX.
"""

from __future__ import annotations

import os
from typing import Any, Sequence, Union

import numpy as np
from PIL import Image

from define_jax.files import image_files
from define_jax.files.image_files import InputError

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
  if like.mode in image_files.SIXTEEN_BIT_MODES:
    return Image.fromarray(np.clip(np.round(_luma(pixels)), 0, 65535).astype(np.uint16))
  if like.mode == 'F':
    return Image.fromarray(_luma(pixels).astype(np.float32), mode='F')
  result = Image.fromarray(pixels)
  return result.convert('L') if like.mode == 'L' else result


def to_8bit(image: Image.Image) -> Image.Image:
  """'I;16' and 'F' greys as 8-bit 'L' (scaled, not clipped), for formats without 16 bit."""
  if image.mode in image_files.SIXTEEN_BIT_MODES or image.mode == 'F':
    return Image.fromarray(image_files.to_uint8(np.asarray(image)))
  return image


def open_input(item: Any, name: str, max_pixels: int | None) -> Any:
  """A path opened (header checked against max_pixels first); PIL images size-checked."""
  if isinstance(item, (str, os.PathLike)):
    return image_files.open_image(item, name=name, max_pixels=max_pixels)
  if isinstance(item, Image.Image):  # A lazily opened file is still undecoded here.
    image_files.check_size(*item.size, name, max_pixels)
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
    return stack([image_array(open_input(item, image_files.source_name(item, f'Image {i}'),
                                         max_pixels), None)
                  for i, item in enumerate(image)], 'image')
  name = image_files.source_name(image, 'The image')
  image = open_input(image, name, max_pixels)
  if isinstance(image, Image.Image):
    return image_files.photo_pixels(image, name)
  image = np.asarray(image)
  if image.ndim not in (3, 4) or image.shape[-1] != 3:
    raise InputError(f'Expected an RGB image [H, W, 3] or a batch [N, H, W, 3]; got shape '
                     f'{image.shape}. Convert greyscale with np.repeat(image[..., None], 3, -1).',
                     'unsupported')
  if image.ndim == 4 and image.shape[0] == 0:
    raise InputError('An empty batch (0 images): nothing to inpaint.', 'empty')
  image_files.check_size(image.shape[-2], image.shape[-3], name, max_pixels)
  return image


def mask_array(mask: Any, batched: bool, max_pixels: int | None) -> np.ndarray:
  """The mask as [N, H, W] or [N, H, W, C] (a channel axis is kept if given)."""
  if isinstance(mask, (list, tuple)):
    if not batched:
      raise InputError(f'A list of {len(mask)} masks for a single image.', 'ragged batch')
    return stack([mask_array(item, False, max_pixels)[0] for item in mask], 'mask')
  name = image_files.source_name(mask, 'The mask')
  mask = open_input(mask, name, max_pixels)
  if isinstance(mask, Image.Image):
    mask = image_files.mask_pixels(mask, name)
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
