"""Data parallelism for inference and scoring: jitted per-example functions with the batch
split across the local devices (jax.sharding). Training keeps jax.pmap (steps.py)."""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


class DataParallel:
  """Runs jitted per-example functions with the batch split across the local devices.

  Batches are padded to a multiple of the device count (repeating the last example) and the
  padding is dropped from the results, so any batch size works.
  """

  def __init__(self, devices: list[jax.Device] | None = None):
    self.devices = list(devices or jax.local_devices())
    mesh = Mesh(np.asarray(self.devices), ('batch',))
    self._batch_sharding = NamedSharding(mesh, PartitionSpec('batch'))
    self._replicated = NamedSharding(mesh, PartitionSpec())

  def replicate(self, tree: Any) -> Any:
    return jax.device_put(tree, self._replicated)

  def padded_size(self, size: int) -> int:
    return math.ceil(size / len(self.devices)) * len(self.devices)

  def __call__(self, fn: Callable[..., Any], replicated: Any, *batch: np.ndarray) -> Any:
    """fn(replicated, *batch) with every array of `batch` split along axis 0; NumPy result."""
    size = len(batch[0])
    pad = self.padded_size(size) - size
    padded = [np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) for x in batch]
    sharded = [jax.device_put(x, self._batch_sharding) for x in padded]
    result = jax.device_get(fn(replicated, *sharded))
    return jax.tree.map(lambda x: np.asarray(x)[:size], result)
