"""The tf.data training pipeline: infinite batches of face images and hole masks.

Elements (numpy-convertible dicts, D = local devices, B = per-device batch):
  'image'  float32 [D, B, H, W, 3] in [0, 1], RGB
  'mask'   float32 [D, B, H, W, 1], 1 = known pixel, 0 = hole

Determinism and O(1) resume (see `examples`): element i = step * global_batch +
position is a pure function of (seed, i). So a pipeline started at step k yields
exactly the batches an uninterrupted one yields from step k, and host p of P
simply takes positions [p*G/P, (p+1)*G/P) of every global batch of G.

Per-element work (decode, crop/resize, mask drawing) is NumPy/PIL/OpenCV run
through `tf.numpy_function` in a parallel, order-preserving map: those
libraries release the GIL, so elements are made concurrently. Random access
to TFDS-stored data uses ArrayRecord data sources (`builder.as_data_source`).

This is the only module of define_jax.data that imports TensorFlow.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import gc
import sys
from collections.abc import Callable

import jax
import ml_collections
import tensorflow as tf

from define_jax.data import examples
from define_jax.data import image_sources
from define_jax.data import mask_sources

# tf.data runs on the host CPU; JAX owns every accelerator.
try:
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TF's devices were already initialised (by the caller): leave them.
  pass


@atexit.register
def _release_iterators_before_exit() -> None:
  """Works around a TensorFlow exit hang.

  A tf.data iterator that is still alive when Python finalises may deadlock
  the exit: its threads need the GIL to run this package's NumPy functions.
  Iterators local to a function are gone by then; this drops the references
  that survive main(): __main__ globals and the traceback of an uncaught
  exception (which otherwise turns a crash into a hang).
  """
  for name in ('last_type', 'last_value', 'last_traceback', 'last_exc'):
    if hasattr(sys, name):
      delattr(sys, name)
  main_globals = vars(sys.modules['__main__']) if '__main__' in sys.modules else {}
  for name, value in list(main_globals.items()):
    if type(value).__module__.startswith('tensorflow.python.data'):
      del main_globals[name]
  gc.collect()


@dataclasses.dataclass(frozen=True)
class _BatchLayout:
  global_batch: int
  process_index: int
  process_count: int
  local_devices: int

  @property
  def local_batch(self) -> int:
    return self.global_batch // self.process_count

  @property
  def per_device_batch(self) -> int:
    return self.local_batch // self.local_devices


def _batch_layout(
    config: ml_collections.ConfigDict, process_index: int | None, process_count: int | None
) -> _BatchLayout:
  layout = _BatchLayout(
      global_batch=int(config.optim.batch_size),
      process_index=jax.process_index() if process_index is None else process_index,
      process_count=jax.process_count() if process_count is None else process_count,
      local_devices=jax.local_device_count(),
  )
  devices = layout.process_count * layout.local_devices
  if layout.global_batch <= 0 or layout.global_batch % devices:
    raise ValueError(
        f'batch_size={layout.global_batch} must be a positive multiple of process_count * '
        f'local_device_count = {layout.process_count} * {layout.local_devices} = {devices}'
    )
  if not 0 <= layout.process_index < layout.process_count:
    raise ValueError(f'process_index {layout.process_index} outside [0, {layout.process_count})')
  return layout


def _global_element(local_element: tf.Tensor, layout: _BatchLayout) -> tf.Tensor:
  """Host-local element counter -> global element number (this host's share of each batch)."""
  step, position = local_element // layout.local_batch, local_element % layout.local_batch
  return step * layout.global_batch + layout.process_index * layout.local_batch + position


def _parallel_numpy_map(
    dataset: tf.data.Dataset, function: Callable, output_dtypes: tuple, output_shapes: tuple
) -> tf.data.Dataset:
  def call(*args):
    outputs = tf.numpy_function(function, args, output_dtypes, stateful=False)
    return tuple(tf.ensure_shape(output, shape) for output, shape in zip(outputs, output_shapes))

  return dataset.map(call, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _to_device_batches(layout: _BatchLayout, size: int) -> Callable:
  def convert(image: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
    leading = [layout.local_devices, layout.per_device_batch]
    return {
        'image': tf.reshape(tf.cast(image, tf.float32) / 255.0, leading + [size, size, 3]),
        'mask': tf.reshape(tf.cast(mask, tf.float32), leading + [size, size, 1]),
    }

  return convert


def _finish(
    dataset: tf.data.Dataset, layout: _BatchLayout, config: ml_collections.ConfigDict
) -> tf.data.Dataset:
  dataset = dataset.batch(layout.local_batch, drop_remainder=True)
  dataset = dataset.map(
      _to_device_batches(layout, int(config.model.image_size)), num_parallel_calls=tf.data.AUTOTUNE
  )
  prefetch = config.input.prefetch
  dataset = dataset.prefetch(tf.data.AUTOTUNE if prefetch is None else int(prefetch))
  options = tf.data.Options()
  options.deterministic = True
  return dataset.with_options(options)


def create_train_dataset(
    config: ml_collections.ConfigDict,
    *,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> tf.data.Dataset:
  """Infinite training batches from `start_step` on (see module doc for the element spec).

  process_index / process_count default to JAX's; pass them to simulate hosts.
  """
  layout = _batch_layout(config, process_index, process_count)
  size = int(config.model.image_size)
  make_example = examples.Examples(
      image_sources.image_split(config, 'train'),
      mask_sources.mask_maker(config, layout.process_count),
      size,
      int(config.seed) % 2**32,  # NumPy seeds must be non-negative
  )
  make_example.first_readable()

  dataset = tf.data.Dataset.counter(int(start_step) * layout.local_batch)
  dataset = dataset.map(functools.partial(_global_element, layout=layout))
  dataset = _parallel_numpy_map(
      dataset, make_example, (tf.uint8, tf.uint8), ([size, size, 3], [size, size, 1])
  )
  return _finish(dataset, layout, config)
