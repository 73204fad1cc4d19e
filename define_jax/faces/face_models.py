"""MTCNN's three face-detection networks (Zhang et al., 2016) as Flax modules.

The layer names and the layout follow facenet-pytorch 2.6.0's PNet/RNet/ONet, whose
weights define_jax/tools/port_mtcnn.py converts: images are NHWC, normalised as
(pixel - 127.5) / 128 on a 0..255 scale. The dense layers read the features in the
order of PyTorch's `permute(0, 3, 2, 1)` (width, height, channels), so the ported dense
kernels are the PyTorch weights transposed and nothing else.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


class PReLU(nn.Module):
  """PReLU with one learnt slope per channel (flax's nn.PReLU has a single one)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    slope = self.param('negative_slope', nn.initializers.constant(0.25), (x.shape[-1],))
    return jnp.where(x >= 0, x, slope * x)


def _max_pool_ceil(x: jax.Array, window: int, stride: int) -> jax.Array:
  """Max pooling with PyTorch's ceil_mode=True: a partial last window still counts."""
  pads = []
  for size in x.shape[1:3]:
    out = math.ceil((size - window) / stride) + 1
    pads.append((0, (out - 1) * stride + window - size))
  return nn.max_pool(x, (window, window), (stride, stride), padding=pads)


def _conv_prelu_layers(x: jax.Array, layers, first: int = 1) -> jax.Array:
  """conv{i} (VALID) and prelu{i}, then a ceil-mode max pool where one is given, for each
  (features, kernel side, (pool window, pool stride) or None), numbered from `first`."""
  for index, (features, kernel, pool) in enumerate(layers, first):
    x = nn.Conv(features, (kernel, kernel), padding='VALID', name=f'conv{index}')(x)
    x = PReLU(name=f'prelu{index}')(x)
    if pool:
      x = _max_pool_ceil(x, *pool)
  return x


def _flatten_like_torch(x: jax.Array) -> jax.Array:
  """NHWC -> [N, W*H*C], the order of PyTorch's x.permute(0, 3, 2, 1).view(N, -1)."""
  return x.transpose(0, 2, 1, 3).reshape(x.shape[0], -1)


class PNet(nn.Module):
  """Proposal net, fully convolutional: one 12x12 window per output cell, stride 2.

  Returns (box regression [N, h, w, 4], face probability [N, h, w]). `valid` ([N, H, W],
  1 = image) lets x hold several images (pyramid levels) apart from each other and from
  padding: each image at even (row, column) offsets, 2 invalid pixels around it. The
  outputs of each image's own cells are then exactly those of the image alone, PyTorch's
  partial last pooling window included; the other outputs are meaningless.
  """

  @nn.compact
  def __call__(self, x: jax.Array,
               valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    x = PReLU(name='prelu1')(nn.Conv(10, (3, 3), padding='VALID', name='conv1')(x))
    if valid is not None:  # Nothing outside an image may win a max-pooling window.
      outside = nn.max_pool(1.0 - valid[..., None].astype(x.dtype), (3, 3), padding='VALID')
      x = jnp.where(outside > 0, -jnp.inf, x)
    x = _max_pool_ceil(x, 2, 2)
    x = _conv_prelu_layers(x, ((16, 3, None), (32, 3, None)), first=2)
    logits = nn.Conv(2, (1, 1), name='conv4_1')(x)
    regression = nn.Conv(4, (1, 1), name='conv4_2')(x)
    return regression, jax.nn.softmax(logits, axis=-1)[..., 1]


class RNet(nn.Module):
  """Refinement net on 24x24 crops: (box regression [N, 4], face probability [N])."""

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = _conv_prelu_layers(x, ((28, 3, (3, 2)), (48, 3, (3, 2)), (64, 2, None)))
    x = PReLU(name='prelu4')(nn.Dense(128, name='dense4')(_flatten_like_torch(x)))
    logits = nn.Dense(2, name='dense5_1')(x)
    regression = nn.Dense(4, name='dense5_2')(x)
    return regression, jax.nn.softmax(logits, axis=-1)[..., 1]


class ONet(nn.Module):
  """Output net on 48x48 crops.

  Returns (box regression [N, 4], landmarks [N, 10] as five x then five y, each a
  fraction of the crop, face probability [N]).
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    x = _conv_prelu_layers(x, ((32, 3, (3, 2)), (64, 3, (3, 2)), (64, 3, (2, 2)), (128, 2, None)))
    x = PReLU(name='prelu5')(nn.Dense(256, name='dense5')(_flatten_like_torch(x)))
    logits = nn.Dense(2, name='dense6_1')(x)
    regression = nn.Dense(4, name='dense6_2')(x)
    landmarks = nn.Dense(10, name='dense6_3')(x)
    return regression, landmarks, jax.nn.softmax(logits, axis=-1)[..., 1]
