"""Masks inside the compute core (1 = known pixel, 0 = hole): the model side and the loss
side both import this, neither imports the other."""

from __future__ import annotations

import jax

# A soft mask value (after resizing, say) at or above which a pixel counts as known.
KNOWN_THRESHOLD = 0.5


def composite(output: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """The known pixels from target, the holes from output."""
  return mask * target + (1 - mask) * output
