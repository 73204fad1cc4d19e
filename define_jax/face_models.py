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


def _flatten_like_torch(x: jax.Array) -> jax.Array:
  """NHWC -> [N, W*H*C], the order of PyTorch's x.permute(0, 3, 2, 1).view(N, -1)."""
  return x.transpose(0, 2, 1, 3).reshape(x.shape[0], -1)


class PNet(nn.Module):
  """Proposal net, fully convolutional: one 12x12 window per output cell, stride 2.

  Returns (box regression [N, h, w, 4], face probability [N, h, w]).
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = PReLU(name='prelu1')(nn.Conv(10, (3, 3), padding='VALID', name='conv1')(x))
    x = _max_pool_ceil(x, 2, 2)
    x = PReLU(name='prelu2')(nn.Conv(16, (3, 3), padding='VALID', name='conv2')(x))
    x = PReLU(name='prelu3')(nn.Conv(32, (3, 3), padding='VALID', name='conv3')(x))
    logits = nn.Conv(2, (1, 1), name='conv4_1')(x)
    regression = nn.Conv(4, (1, 1), name='conv4_2')(x)
    return regression, jax.nn.softmax(logits, axis=-1)[..., 1]


class RNet(nn.Module):
  """Refinement net on 24x24 crops: (box regression [N, 4], face probability [N])."""

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = PReLU(name='prelu1')(nn.Conv(28, (3, 3), padding='VALID', name='conv1')(x))
    x = _max_pool_ceil(x, 3, 2)
    x = PReLU(name='prelu2')(nn.Conv(48, (3, 3), padding='VALID', name='conv2')(x))
    x = _max_pool_ceil(x, 3, 2)
    x = PReLU(name='prelu3')(nn.Conv(64, (2, 2), padding='VALID', name='conv3')(x))
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
    x = PReLU(name='prelu1')(nn.Conv(32, (3, 3), padding='VALID', name='conv1')(x))
    x = _max_pool_ceil(x, 3, 2)
    x = PReLU(name='prelu2')(nn.Conv(64, (3, 3), padding='VALID', name='conv2')(x))
    x = _max_pool_ceil(x, 3, 2)
    x = PReLU(name='prelu3')(nn.Conv(64, (3, 3), padding='VALID', name='conv3')(x))
    x = _max_pool_ceil(x, 2, 2)
    x = PReLU(name='prelu4')(nn.Conv(128, (2, 2), padding='VALID', name='conv4')(x))
    x = PReLU(name='prelu5')(nn.Dense(256, name='dense5')(_flatten_like_torch(x)))
    logits = nn.Dense(2, name='dense6_1')(x)
    regression = nn.Dense(4, name='dense6_2')(x)
    landmarks = nn.Dense(10, name='dense6_3')(x)
    return regression, landmarks, jax.nn.softmax(logits, axis=-1)[..., 1]
