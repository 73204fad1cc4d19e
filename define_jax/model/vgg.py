"""The VGG16 trunk (conv1_1 .. conv3_3) whose pooled features feed the perceptual and style losses.

Weights are loaded by define_jax.model.vgg_weights; parameters are named Conv_0 .. Conv_6 in
the order conv1_1, conv1_2, conv2_1, conv2_2, conv3_1, conv3_2, conv3_3.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from define_jax.model import kernels

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
      x = kernels.max_pool_2x2(x)
      pools.append(x)
    return tuple(pools)
