"""tf.data input pipeline for DeFINe: face images plus hole masks.

The input pipeline only builds tf.data datasets; it holds no model code.

Elements (numpy-convertible dicts, D = local devices, B = per-device batch):
  'image'  float32 [D, B, H, W, 3] in [0, 1], RGB
  'mask'   float32 [D, B, H, W, 1], 1 = known pixel, 0 = hole
  'weight' float32 [D, B] (eval only): 1 for a real image, 0 for padding

Determinism and O(1) resume: training element number i = step * global_batch
+ position is the only input of its content. The image is entry i mod N of a
permutation of the N training images seeded by (seed, epoch = i // N); crop,
flip and mask come from NumPy generators seeded by (seed, stream, i). So a
pipeline started at step k computes exactly the batches an uninterrupted one
yields from step k, without replaying anything, and host p of P simply takes
positions [p*G/P, (p+1)*G/P) of every global batch of G.

Per-element work (decode, crop/resize, mask drawing) is NumPy/PIL/OpenCV run
through `tf.numpy_function` in a parallel, order-preserving map: those
libraries release the GIL, so elements are made concurrently. Random access
to TFDS-stored data uses ArrayRecord data sources (`builder.as_data_source`).

Unusable inputs are skipped deterministically (the next image of the same
epoch's order is used), counted per kind in `skipped_input_counts()`, and
summarised in the log once per epoch.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import functools
import gc
import io
import math
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import jax
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from define_jax import masks as mask_lib
from define_jax.datasets import image_folder, quickstart

if TYPE_CHECKING:
  import tensorflow_datasets as tfds

# tf.data runs on the host CPU; JAX owns every accelerator.
try:
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TF's devices were already initialised (by the caller): leave them.
  pass


@atexit.register
def _release_iterators_before_exit() -> None:
  """Works around a TensorFlow exit hang.

  A tf.data iterator that is still alive when Python finalises may deadlock
  the exit: its threads need the GIL to run this module's NumPy functions.
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


# Fixed seed of the evaluation set, independent of config.seed so that runs
# with different seeds are evaluated on the same images and masks.
EVAL_SEED = 20240917
# Independent random streams per element, so that e.g. replacing an unreadable
# image does not change the element's mask.
_PERMUTATION_STREAM, _IMAGE_STREAM, _MASK_STREAM = 1, 2, 3
# Fraction of the shorter image side that a training crop spans. Faces are
# aligned, so only the position along the longer side varies; the few
# quickstart photos need strong crop augmentation.
_FACE_CROP_FRACTIONS = (1.0, 1.0)
_QUICKSTART_CROP_FRACTIONS = (0.4, 1.0)
# Mask-set draws that are unreadable or degenerate (no hole / all hole) before
# a generated mask stands in.
_MAX_MASK_DRAWS = 16
# Distinct unusable inputs logged by name; later ones are only counted.
_MAX_NAMED_SKIP_WARNINGS = 10
_MASK_SETS = {  # config.masks -> (TFDS dataset, training split, evaluation split)
    'nvidia_irregular': ('nvidia_irregular_masks', 'test', 'test'),
    'qd_imd': ('qd_imd', 'train', 'test'),
}


class UnreadableInputError(Exception):
  """An image or mask that cannot be decoded."""


# ----------------------------------------------------------------------------
# Counting skipped inputs.


class _SkipLog:
  """Process-wide counts of skipped inputs, by kind ('images', 'masks')."""

  def __init__(self) -> None:
    self._lock = threading.Lock()
    self._totals: collections.Counter[str] = collections.Counter()
    self._named: set[str] = set()

  def record(self, kind: str, item: str, reason: str) -> None:
    with self._lock:
      self._totals[kind] += 1
      if item not in self._named and len(self._named) < _MAX_NAMED_SKIP_WARNINGS:
        self._named.add(item)
        logging.warning('Input pipeline skips unusable %s %s: %s', kind[:-1], item, reason)

  def totals(self) -> dict[str, int]:
    with self._lock:
      return {'images': self._totals['images'], 'masks': self._totals['masks']}


_SKIPS = _SkipLog()


def skipped_input_counts() -> dict[str, int]:
  """Inputs skipped so far in this process: {'images': n, 'masks': m}.

  Counts every time an element needed a replacement (an unreadable image
  drawn in three epochs counts three times), in train and eval datasets.
  """
  return _SKIPS.totals()


class _EpochSkipSummary:
  """Logs, once per training epoch, how many images that epoch skipped."""

  def __init__(self, description: str) -> None:
    self._description = description
    self._lock = threading.Lock()
    self._latest_epoch = -1
    self._per_epoch: collections.Counter[int] = collections.Counter()

  def record(self, epoch: int) -> None:
    with self._lock:
      self._per_epoch[epoch] += 1

  def observe(self, epoch: int) -> None:
    """Called per element; the first element of a later epoch closes earlier ones."""
    with self._lock:
      if epoch <= self._latest_epoch:
        return
      for finished in sorted(e for e in self._per_epoch if e < epoch):
        logging.warning(
            'Input pipeline, %s, epoch %d: skipped %d unreadable images (total so far: %s).',
            self._description,
            finished,
            self._per_epoch.pop(finished),
            skipped_input_counts(),
        )
      self._latest_epoch = epoch


# ----------------------------------------------------------------------------
# Decoding and geometry.


def decode_rgb(data: bytes, min_side: int = 0) -> np.ndarray:
  """Decodes any PIL-readable image to RGB uint8 [H, W, 3].

  Converts what can be converted: greyscale and palette to RGB, alpha is
  dropped, 16-bit samples are scaled to 8 bits. `min_side` lets JPEG decode
  at a reduced DCT scale while keeping the shorter side >= min_side. Raises
  UnreadableInputError for corrupt or truncated data.
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      if image.format == 'JPEG' and min_side > 0:
        image.draft(image.mode, (min_side, min_side))
      image.load()
      return _to_rgb8(image)
  except Image.UnidentifiedImageError as error:  # its message names a BytesIO object
    raise UnreadableInputError('not an image in a known format, or corrupt') from error
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
    raise UnreadableInputError(str(error) or type(error).__name__) from error


def _to_rgb8(image: Image.Image) -> np.ndarray:
  if image.mode == 'RGB':
    return np.asarray(image)
  if image.mode.startswith('I;16') or image.mode == 'I':  # 16-bit greyscale PNG
    grey = (np.asarray(image, np.int64) // 257).clip(0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  return np.asarray(image.convert('RGB'))


def crop_and_resize(
    image: np.ndarray,
    size: int,
    rng: np.random.Generator | None,
    crop_fractions: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
  """Square crop resized to size x size (antialiased when shrinking).

  rng None: centre crop spanning the shorter side (evaluation). Otherwise a
  random crop spanning a random fraction in `crop_fractions` of the shorter
  side at a random position, mirrored left-right with probability 1/2.
  """
  height, width = image.shape[:2]
  shorter = min(height, width)
  if rng is None:
    side = shorter
    top, left = (height - side) // 2, (width - side) // 2
  else:
    side = max(1, round(rng.uniform(*crop_fractions) * shorter))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
  crop = image[top : top + side, left : left + side]
  interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
  resized = (
      cv2.resize(crop, (size, size), interpolation=interpolation) if side != size else crop.copy()
  )
  if rng is not None and rng.random() < 0.5:
    resized = cv2.flip(resized, 1)
  return resized


# ----------------------------------------------------------------------------
# Image sources: random access by index.


class _ImageSource(Protocol):
  description: str  # names the data (a directory, a TFDS dataset) in messages

  def __len__(self) -> int:
    ...

  def name(self, index: int) -> str:
    ...

  def load(self, index: int, min_side: int) -> np.ndarray:
    """RGB uint8 [H, W, 3]; raises UnreadableInputError."""
    ...


class _FileImages:

  def __init__(self, root: Path, relative_paths: Sequence[str]) -> None:
    self.description = str(root)
    self._root = root
    self._relative_paths = list(relative_paths)

  def __len__(self) -> int:
    return len(self._relative_paths)

  def name(self, index: int) -> str:
    return str(self._root / self._relative_paths[index])

  def load(self, index: int, min_side: int) -> np.ndarray:
    try:
      data = (self._root / self._relative_paths[index]).read_bytes()
    except OSError as error:
      raise UnreadableInputError(str(error)) from error
    return decode_rgb(data, min_side)


class _DecodedImages:
  """Images held decoded in memory (the few quickstart photos)."""

  def __init__(self, description: str, names: Sequence[str], images: Sequence[np.ndarray]) -> None:
    self.description = description
    self._names = list(names)
    self._images = list(images)

  def __len__(self) -> int:
    return len(self._images)

  def name(self, index: int) -> str:
    return self._names[index]

  def load(self, index: int, min_side: int) -> np.ndarray:
    return self._images[index]


class _TfdsRecords:
  """One encoded image feature of one split of an ArrayRecord TFDS dataset."""

  def __init__(self, builder: tfds.core.DatasetBuilder, split: str, feature: str) -> None:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,redefined-outer-name

    self.description = f'{builder.info.full_name} {split} in {builder.data_dir}'
    self._feature = feature
    self._source = builder.as_data_source(split, decoders={feature: tfds.decode.SkipDecoding()})

  def __len__(self) -> int:
    return len(self._source)

  def name(self, index: int) -> str:
    return f'{self.description} #{index}'

  def load(self, index: int, min_side: int) -> np.ndarray:
    return decode_rgb(self._source[index][self._feature], min_side)

  def load_bytes(self, index: int) -> bytes:
    return self._source[index][self._feature]


@dataclasses.dataclass(frozen=True)
class _ImageSplit:
  images: _ImageSource
  crop_fractions: tuple[float, float]  # of the shorter side, for random crops
  eval_random_crops: bool  # evaluate on fixed random crops instead of centre crops


# ----------------------------------------------------------------------------
# Mask makers.


class _MaskMaker(Protocol):

  def train_mask(self, rng: np.random.Generator) -> np.ndarray:
    ...

  def eval_mask(self, rng: np.random.Generator) -> np.ndarray:
    """uint8 [size, size], 1 = known."""
    ...


class _GeneratedMasks:

  def __init__(self, size: int, hole_ratio_range: tuple[float, float]) -> None:
    ratio_min, ratio_max = hole_ratio_range
    if not 0.0 <= ratio_min <= ratio_max <= 1.0:
      raise ValueError(f'need 0 <= hole_ratio_min <= hole_ratio_max <= 1, got {hole_ratio_range}')
    self._size = size
    self._hole_ratio_range = hole_ratio_range

  def train_mask(self, rng: np.random.Generator) -> np.ndarray:
    return mask_lib.generate_irregular_mask(rng, self._size, self._size, self._hole_ratio_range)

  eval_mask = train_mask


class _MaskSetMasks:
  """Masks drawn from a TFDS mask set; training masks optionally augmented.

  Unreadable and degenerate masks (no hole or all hole) are skipped and
  counted; augmented masks that lost every hole are redrawn. After
  _MAX_MASK_DRAWS failures a generated mask stands in, so every element still
  gets a deterministic mask.
  """

  def __init__(
      self,
      train_source: _TfdsRecords,
      eval_source: _TfdsRecords,
      size: int,
      augment: bool,
      fallback: _GeneratedMasks,
      generated_fraction: float,
  ) -> None:
    if not 0.0 <= generated_fraction <= 1.0:
      raise ValueError(f'config.generated_mask_fraction={generated_fraction} must lie in [0, 1]')
    self._sources = {True: train_source, False: eval_source}
    self._size = size
    self._augment = augment
    self._fallback = fallback
    self._generated_fraction = generated_fraction

  def train_mask(self, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < self._generated_fraction:
      return self._fallback.train_mask(rng)
    return self._draw(rng, training=True, augment=self._augment)

  def eval_mask(self, rng: np.random.Generator) -> np.ndarray:
    return self._draw(rng, training=False, augment=False)

  def _draw(self, rng: np.random.Generator, training: bool, augment: bool) -> np.ndarray:
    source = self._sources[training]
    for _ in range(_MAX_MASK_DRAWS):
      index = int(rng.integers(len(source)))
      try:
        known = _decode_stored_mask(source.load_bytes(index))
      except UnreadableInputError as error:
        _SKIPS.record('masks', source.name(index), str(error))
        continue
      if mask_lib.is_degenerate(known):
        _SKIPS.record('masks', source.name(index), 'no hole or no known pixel')
        continue
      if augment:
        # A crop can miss every hole: an ordinary redraw, not a bad input.
        known = mask_lib.augment_mask(known, rng, (self._size, self._size))
      else:
        known = mask_lib.resize_mask(known, (self._size, self._size))
        if mask_lib.is_degenerate(known):
          _SKIPS.record('masks', source.name(index), f'no hole left at {self._size}x{self._size}')
      if not mask_lib.is_degenerate(known):
        return known
    return self._fallback.train_mask(rng)


def _decode_stored_mask(data: bytes) -> np.ndarray:
  """A mask as the project's builders store it: PNG, uint8 0/1, 1 = known."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      known = np.asarray(image)
  except (OSError, SyntaxError, ValueError) as error:
    raise UnreadableInputError(str(error)) from error
  if known.ndim == 3:
    known = known[..., 0]
  return (known > 0).astype(np.uint8)


# ----------------------------------------------------------------------------
# Elements.


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
  return np.random.default_rng((seed, stream, index))


class _Examples:
  """Makes element number i (a pure function of seed and i, see module doc)."""

  def __init__(self, split: _ImageSplit, masks: _MaskMaker, image_size: int, seed: int) -> None:
    self._split = split
    self._masks = masks
    self._size = image_size
    self._seed = seed
    self._num_images = len(split.images)
    self._known_unreadable: set[int] = set()
    self._epoch_skips = _EpochSkipSummary(split.images.description)
    self._permutation_lock = threading.Lock()
    self._permutations: dict[int, np.ndarray] = {}
    # JPEG may decode at a reduced scale as long as the smallest crop keeps full resolution.
    self._train_min_side = math.ceil(image_size / split.crop_fractions[0])

  def _permutation(self, epoch: int) -> np.ndarray:
    with self._permutation_lock:
      if epoch not in self._permutations:
        if len(self._permutations) >= 2:  # elements in flight span at most two epochs
          del self._permutations[min(self._permutations)]
        rng = _rng(self._seed, _PERMUTATION_STREAM, epoch)
        self._permutations[epoch] = rng.permutation(self._num_images)
      return self._permutations[epoch]

  def _load(self, index: int, min_side: int) -> np.ndarray | None:
    """The decoded image, or None (counted) if it is unreadable."""
    images = self._split.images
    if index in self._known_unreadable:
      _SKIPS.record('images', images.name(index), 'unreadable (seen before)')
      return None
    try:
      return images.load(index, min_side)
    except UnreadableInputError as error:
      self._known_unreadable.add(index)
      _SKIPS.record('images', images.name(index), str(error))
      return None

  def first_readable(self, order: Sequence[int]) -> None:
    """Fails at once, naming the data, if no image in `order` can be read."""
    for index in order:
      if self._load(index, self._size) is not None:
        return
    raise ValueError(f'no readable image in {self._split.images.description}')

  def train_order(self) -> np.ndarray:
    return self._permutation(0)

  def train_example(self, element: np.int64) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [S, S, 3], mask uint8 [S, S, 1]) of global element number `element`."""
    element = int(element)
    epoch, offset = divmod(element, self._num_images)
    self._epoch_skips.observe(epoch)
    permutation = self._permutation(epoch)
    # An unreadable image is replaced by the next readable one of this epoch's order.
    for attempt in range(self._num_images):
      image = self._load(
          int(permutation[(offset + attempt) % self._num_images]), self._train_min_side
      )
      if image is not None:
        break
      self._epoch_skips.record(epoch)
    else:
      raise ValueError(f'no readable image left in {self._split.images.description}')
    image = crop_and_resize(
        image, self._size, _rng(self._seed, _IMAGE_STREAM, element), self._split.crop_fractions
    )
    mask = self._masks.train_mask(_rng(self._seed, _MASK_STREAM, element))
    return image, mask[..., None]

  def eval_order(self, num_eval_images: int) -> np.ndarray:
    """Image index of each evaluation position: a fixed sample of the split."""
    if self._split.eval_random_crops:
      return np.arange(num_eval_images) % self._num_images
    rng = _rng(EVAL_SEED, _PERMUTATION_STREAM, 0)
    return rng.permutation(self._num_images)[:num_eval_images]

  def eval_example(
      self, position: np.int64, order: np.ndarray
  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, mask, weight) of evaluation position `position`; weight 0 marks padding."""
    position = int(position)
    blank = (
        np.zeros((self._size, self._size, 3), np.uint8),
        np.ones((self._size, self._size, 1), np.uint8),
    )
    if position >= len(order):  # padding of the final batch
      return *blank, np.float32(0.0)
    image = self._load(int(order[position]), self._size)
    if image is None:  # already counted; the weight keeps it out of the metrics
      return *blank, np.float32(0.0)
    crop_rng = _rng(EVAL_SEED, _IMAGE_STREAM, position) if self._split.eval_random_crops else None
    image = crop_and_resize(image, self._size, crop_rng, self._split.crop_fractions)
    mask = self._masks.eval_mask(_rng(EVAL_SEED, _MASK_STREAM, position))
    return image, mask[..., None], np.float32(1.0)


# ----------------------------------------------------------------------------
# Configuration.


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
      global_batch=int(config.batch_size),
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


def _seed(config: ml_collections.ConfigDict) -> int:
  return int(config.seed) % 2**32  # NumPy seeds must be non-negative


def _prepare_command(name: str, config: ml_collections.ConfigDict) -> str:
  data_dir = config.data_dir
  return f'python -m define_jax.datasets.prepare --dataset {name} --manual_dir DIR' + (
      f' --data_dir {data_dir}' if data_dir else ''
  )


def _image_split(config: ml_collections.ConfigDict, split: str) -> _ImageSplit:
  """The images of `split` ('train' or 'validation') of config.dataset."""
  dataset = config.dataset
  if dataset == 'image_folder':
    image_dir = config.image_dir
    if not image_dir:
      raise ValueError("dataset='image_folder' needs config.image_dir")
    root = Path(image_dir).expanduser()
    files = image_folder.list_image_files(root)
    if not files:
      raise ValueError(f"no image files ({', '.join(image_folder.IMAGE_EXTENSIONS)}) in {root}")
    fraction = float(config.validation_fraction)
    train_files, validation_files = image_folder.split_image_files(files, fraction)
    chosen = train_files if split == 'train' else validation_files
    if not chosen:
      raise ValueError(
          f'the {split} split of {root} is empty '
          f'({len(files)} files, validation_fraction={fraction})'
      )
    return _ImageSplit(_FileImages(root, chosen), _FACE_CROP_FRACTIONS, eval_random_crops=False)
  if dataset == 'ffhq':
    from define_jax.datasets import prepare  # imports TFDS only when needed

    ffhq_config = config.ffhq_config  # 'ffhq/256' or just '256'
    name = ffhq_config if ffhq_config.startswith('ffhq/') else f'ffhq/{ffhq_config}'
    builder = prepare.make_builder(name, config.data_dir)
    if not builder.is_prepared():
      raise FileNotFoundError(
          f'{name} is not prepared in {builder.data_dir}; run: {_prepare_command(name, config)}'
      )
    return _ImageSplit(
        _TfdsRecords(builder, split, 'image'), _FACE_CROP_FRACTIONS, eval_random_crops=False
    )
  if dataset == 'quickstart':
    paths = quickstart.photo_files(split)
    images = [decode_rgb(path.read_bytes()) for path in paths]
    source = _DecodedImages(
        f'quickstart {split} photos in {quickstart.photo_dir()}', [p.name for p in paths], images
    )
    return _ImageSplit(source, _QUICKSTART_CROP_FRACTIONS, eval_random_crops=True)
  raise ValueError(f"unknown dataset {dataset!r}; expected 'ffhq', 'image_folder' or 'quickstart'")


def _mask_maker(config: ml_collections.ConfigDict, process_count: int) -> _MaskMaker:
  size = int(config.image_size)
  generated = _GeneratedMasks(
      size, (float(config.hole_ratio_min), float(config.hole_ratio_max))
  )
  kind = config.masks
  if kind == 'generated':
    return generated
  if kind not in _MASK_SETS:
    raise ValueError(
        f"unknown masks {kind!r}; expected 'generated', {', '.join(map(repr, _MASK_SETS))}"
    )
  from define_jax.datasets import prepare  # imports TFDS only when needed

  name, train_split, eval_split = _MASK_SETS[kind]
  builder = prepare.make_builder(name, config.data_dir)
  if not builder.is_prepared():
    mask_dir = config.mask_dir
    if not mask_dir or process_count > 1:
      raise FileNotFoundError(
          f'{name} is not prepared in {builder.data_dir}; set config.mask_dir (single host) '
          f'or run: {_prepare_command(name, config)}'
      )
    builder = prepare.prepare_dataset(name, mask_dir, config.data_dir)
  return _MaskSetMasks(
      _TfdsRecords(builder, train_split, 'mask'),
      _TfdsRecords(builder, eval_split, 'mask'),
      size,
      bool(config.mask_augment),
      generated,
      float(config.generated_mask_fraction),
  )


# ----------------------------------------------------------------------------
# tf.data assembly.


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
  def convert(image: tf.Tensor, mask: tf.Tensor, *weight: tf.Tensor) -> dict[str, tf.Tensor]:
    leading = [layout.local_devices, layout.per_device_batch]
    batch = {
        'image': tf.reshape(tf.cast(image, tf.float32) / 255.0, leading + [size, size, 3]),
        'mask': tf.reshape(tf.cast(mask, tf.float32), leading + [size, size, 1]),
    }
    if weight:
      batch['weight'] = tf.reshape(weight[0], leading)
    return batch

  return convert


def _finish(
    dataset: tf.data.Dataset, layout: _BatchLayout, config: ml_collections.ConfigDict
) -> tf.data.Dataset:
  dataset = dataset.batch(layout.local_batch, drop_remainder=True)
  dataset = dataset.map(
      _to_device_batches(layout, int(config.image_size)), num_parallel_calls=tf.data.AUTOTUNE
  )
  prefetch = config.prefetch
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
  size = int(config.image_size)
  examples = _Examples(
      _image_split(config, 'train'), _mask_maker(config, layout.process_count), size, _seed(config)
  )
  examples.first_readable(examples.train_order())

  dataset = tf.data.Dataset.counter(int(start_step) * layout.local_batch)
  dataset = dataset.map(functools.partial(_global_element, layout=layout))
  dataset = _parallel_numpy_map(
      dataset, examples.train_example, (tf.uint8, tf.uint8), ([size, size, 3], [size, size, 1])
  )
  return _finish(dataset, layout, config)


def create_eval_dataset(
    config: ml_collections.ConfigDict,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> tf.data.Dataset:
  """The fixed evaluation set: the same images and masks on every pass.

  `num_eval_images` images of the validation split (all of them if it is
  smaller), each once; the final global batch is padded with weight 0.
  """
  layout = _batch_layout(config, process_index, process_count)
  if int(config.num_eval_images) < 1:
    raise ValueError(f'num_eval_images must be positive, got {config.num_eval_images}')
  size = int(config.image_size)
  examples = _Examples(
      _image_split(config, 'validation'),
      _mask_maker(config, layout.process_count),
      size,
      _seed(config),
  )
  order = examples.eval_order(int(config.num_eval_images))
  examples.first_readable(order)
  num_steps = math.ceil(len(order) / layout.global_batch)

  dataset = tf.data.Dataset.range(num_steps * layout.local_batch)
  dataset = dataset.map(functools.partial(_global_element, layout=layout))
  dataset = _parallel_numpy_map(
      dataset,
      functools.partial(examples.eval_example, order=order),
      (tf.uint8, tf.uint8, tf.float32),
      ([size, size, 3], [size, size, 1], []),
  )
  return _finish(dataset, layout, config)
