"""The VGG16 trunk (conv1_1 .. conv3_3) whose pooled features feed the perceptual and style losses.

Weights are loaded by define_jax.vgg_weights; parameters are named Conv_0 .. Conv_6 in
the order conv1_1, conv1_2, conv2_1, conv2_2, conv3_1, conv3_2, conv3_3.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Output channels of each conv, grouped by the blocks that end in a 2x2 max-pool.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256))


class VGG16Features(nn.Module):
  """Preprocessed images [N,H,W,3] -> (pool1, pool2, pool3), in dtype."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    pools = []
    for block in VGG16_BLOCKS:
      for features in block:
        x = nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                    param_dtype=jnp.float32)(x)
        x = nn.relu(x)
      x = max_pool_2x2(x)
      pools.append(x)
    return tuple(pools)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pool, stride 2, no padding (an odd last row or column is dropped), NHWC.

  nn.max_pool's values and gradient (a tie's gradient goes to the first maximum in
  row-major order, as in PyTorch), written as a reshape and max with a hand-written
  backward pass: XLA:CPU differentiates reduce_window max through an argmax reduce-window
  over index arrays, which cost about a fifth of a training step on a 2-core CPU.
  """
  return jnp.max(_blocks(x), axis=(2, 4))


def _blocks(x: jax.Array) -> jax.Array:
  """[N,H,W,C] -> [N,H/2,2,W/2,2,C], the odd last row or column dropped."""
  n, h, w, c = x.shape
  return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)


def _max_pool_forward(x):
  pooled = max_pool_2x2(x)
  return pooled, (x, pooled)


def _max_pool_backward(residuals, grad):
  x, pooled = residuals
  blocks = _blocks(x)
  taken = jnp.zeros(pooled.shape, bool)
  rows = []
  for i in range(2):
    row = []
    for j in range(2):
      first_max = (blocks[:, :, i, :, j] == pooled) & ~taken
      taken = taken | first_max
      row.append(jnp.where(first_max, grad, 0))
    rows.append(jnp.stack(row, axis=3))
  grad_blocks = jnp.stack(rows, axis=2)  # [N,H/2,2,W/2,2,C]
  n, h, w, c = x.shape
  grad_x = grad_blocks.reshape(n, h // 2 * 2, w // 2 * 2, c)
  return (jnp.pad(grad_x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_max_pool_forward, _max_pool_backward)
