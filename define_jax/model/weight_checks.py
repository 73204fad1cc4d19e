"""Sanity of stored weights and of what they compute: a damaged or diverged checkpoint.

NaN or infinite weights, negative BatchNorm variances and magnitudes no trained network
reaches turn every fill into black or garbage pixels, so they are refused when a model is
loaded or exported rather than discovered in the pictures.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

# Far above any trained weight or BatchNorm statistic (they stay within about ±1e3), far
# below what flipped exponent bits give (1e37 and more).
MAX_ABS_WEIGHT = 1e8


def check_variables(variables: Any, name: str) -> None:
  """ValueError naming `name` and the first bad array of a variables tree."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    values = np.asarray(leaf, np.float32)
    where = f'{name}: {jax.tree_util.keystr(path)}'
    if not np.isfinite(values).all():
      raise ValueError(f'{where} holds {int(np.size(values) - np.isfinite(values).sum())} '
                       'NaN or infinite values; the weights are damaged or diverged.')
    largest = float(np.abs(values).max(initial=0.0))
    if largest > MAX_ABS_WEIGHT:
      raise ValueError(f'{where} holds a value of magnitude {largest:.1e} (over '
                       f'{MAX_ABS_WEIGHT:.0e}); the weights are damaged.')
    if getattr(path[-1], 'key', None) == 'var' and (values < 0).any():
      raise ValueError(f'{where} holds negative BatchNorm variances; the weights are damaged.')


def check_finite_result(result: np.ndarray) -> None:
  """ValueError when a model's output holds NaN or infinities: never a picture of them."""
  bad = int(np.size(result) - np.isfinite(result).sum())
  if bad:
    raise ValueError(f'The model produced {bad} NaN or infinite values (of {np.size(result)}); '
                     'its weights are broken. No result was written.')
