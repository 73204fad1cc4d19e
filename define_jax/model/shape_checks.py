"""Input checks shared by the models and the losses.

Shape checks work on tracers, so under jit/pmap they raise while tracing, before XLA
compiles anything. Mask values can only be checked on concrete arrays; inside a traced
function that check is skipped.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def check_image_and_mask(image: Any, mask: Any, layers: int | None = None) -> None:
  """Raises ValueError unless `image` [N,H,W,C] and `mask` [N|1,H,W,1|C] fit together.

  Args:
    image: images, NHWC.
    mask: 1 = known pixel, 0 = hole; its batch may be 1 (shared by all images) and its
      channels 1 (shared by all channels) or C (per channel).
    layers: U-Net depth; H and W must then be divisible by 2**layers so every
      downsampling halves exactly and the decoder's skips line up.
  """
  image_shape, mask_shape = np.shape(image), np.shape(mask)
  if len(image_shape) != 4:
    raise ValueError(f'image must have rank 4 [N, H, W, C]; got shape {image_shape}.')
  if len(mask_shape) != 4:
    raise ValueError(f'mask must have rank 4 [N, H, W, 1 or C]; got shape {mask_shape}.')
  n, h, w, c = image_shape
  mask_n, mask_h, mask_w, mask_c = mask_shape
  if (mask_h, mask_w) != (h, w) or mask_n not in (1, n):
    raise ValueError(
        f'mask of shape {mask_shape} does not match image of shape {image_shape}: '
        f'need the same H, W and a batch of {n} or 1.')
  if mask_c not in (1, c):
    raise ValueError(
        f'mask has {mask_c} channels; need 1 (shared) or {c} (one per image channel).')
  if layers is not None and (h % 2**layers or w % 2**layers):
    raise ValueError(
        f'image size {h}x{w} is not divisible by 2**layers = {2**layers} (layers={layers}); '
        'use layers=7 for 256x256, 8 for 512x512, or pad/crop the image.')
  if not isinstance(mask, jax.core.Tracer):
    mask_values = np.asarray(mask)
    # Written so that NaN fails too.
    if not np.all((mask_values >= 0) & (mask_values <= 1)):
      raise ValueError(
          f'mask values must lie in [0, 1] (1 = known, 0 = hole); got range '
          f'[{np.nanmin(mask_values)}, {np.nanmax(mask_values)}]'
          f'{" with NaNs" if np.isnan(mask_values).any() else ""}.')
