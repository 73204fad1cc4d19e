"""Training-mask sources and the registry of mask kinds (config.input.masks).

Adding a kind of mask is one builder `(config, process_count) -> MaskMaker` and one
MASK_SOURCES entry; adding a TFDS mask set is one
masks.MASK_SETS entry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import ml_collections
import numpy as np

from define_jax.data import image_sources
from define_jax.data import masks as mask_lib
from define_jax.data import skips
from define_jax.data.masks import MASK_SETS, STORED_POLARITY, MaskSet
from define_jax.files import image_files

if TYPE_CHECKING:
  import tensorflow_datasets as tfds


# Mask-set draws that are unreadable or degenerate (no hole / all hole) before
# a generated mask stands in.
_MAX_MASK_DRAWS = 16


class MaskMaker(Protocol):

  def draw(self, rng: np.random.Generator) -> np.ndarray:
    """uint8 [size, size], 1 = known."""
    ...


class GeneratedMasks:

  def __init__(self, size: int, hole_ratio_range: tuple[float, float]) -> None:
    ratio_min, ratio_max = hole_ratio_range
    if not 0.0 <= ratio_min <= ratio_max <= 1.0:
      raise ValueError(f'need 0 <= hole_ratio_min <= hole_ratio_max <= 1, got {hole_ratio_range}')
    self._size = size
    self._hole_ratio_range = hole_ratio_range

  def draw(self, rng: np.random.Generator) -> np.ndarray:
    return mask_lib.generate_irregular_mask(rng, self._size, self._size, self._hole_ratio_range)


class MaskSetMasks:
  """Masks drawn from a TFDS mask set, optionally augmented, some generated instead.

  Unreadable and degenerate masks (no hole or all hole) are skipped and
  counted; augmented masks that lost every hole are redrawn. After
  _MAX_MASK_DRAWS failures a generated mask stands in, so every element still
  gets a deterministic mask.
  """

  def __init__(
      self,
      source: image_sources.TfdsRecords,
      size: int,
      augment: bool,
      generated: GeneratedMasks,
      generated_fraction: float,
  ) -> None:
    if not 0.0 <= generated_fraction <= 1.0:
      raise ValueError(
          f'config.input.generated_mask_fraction={generated_fraction} must lie in [0, 1]'
      )
    self._source = source
    self._size = size
    self._augment = augment
    self._generated = generated
    self._generated_fraction = generated_fraction

  def draw(self, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < self._generated_fraction:
      return self._generated.draw(rng)
    source = self._source
    for _ in range(_MAX_MASK_DRAWS):
      index = int(rng.integers(len(source)))
      try:
        known = read_stored_mask(source, index)
      except image_files.InputError as error:
        skips.SKIPS.record('masks', source.name(index), str(error))
        continue
      if mask_lib.is_degenerate(known):
        skips.SKIPS.record('masks', source.name(index), 'no hole or no known pixel')
        continue
      if self._augment:
        # A crop can miss every hole: an ordinary redraw, not a bad input.
        known = mask_lib.augment_mask(known, rng, (self._size, self._size))
      else:
        known = mask_lib.resize_mask(known, (self._size, self._size))
        if mask_lib.is_degenerate(known):
          reason = f'no hole left at {self._size}x{self._size}'
          skips.SKIPS.record('masks', source.name(index), reason)
      if not mask_lib.is_degenerate(known):
        return known
    return self._generated.draw(rng)


class FacePartMasks:
  """A fraction of the masks of another source replaced by a hole over one face part (an eye,
  the nose, the mouth; masks.face_part_mask) placed on the face template: the training faces
  are aligned to it, so the hole hides that part and the mirror input (models.py) can show
  the other side's."""

  def __init__(self, inner: MaskMaker, size: int, template: np.ndarray, fraction: float) -> None:
    if not 0.0 <= fraction <= 1.0:
      raise ValueError(f'config.input.face_part_mask_fraction={fraction} must lie in [0, 1]')
    self._inner = inner
    self._size = size
    self._landmarks = np.asarray(template, np.float64) * size
    self._fraction = fraction

  def draw(self, rng: np.random.Generator) -> np.ndarray:
    if rng.random() >= self._fraction:
      return self._inner.draw(rng)
    part = sorted(mask_lib.FACE_PARTS)[int(rng.integers(len(mask_lib.FACE_PARTS)))]
    return mask_lib.face_part_mask(rng, self._size, self._size, self._landmarks, part)


def read_stored_mask(records: image_sources.TfdsRecords, index: int) -> np.ndarray:
  """uint8 [H, W], 1 = known, of mask `index` of a prepared mask set (InputError naming it)."""
  return image_files.read_mask(records.load_bytes(index), STORED_POLARITY,
                               name=records.name(index), max_pixels=None)


def prepared_mask_set(
    mask_set: MaskSet, config: ml_collections.ConfigDict, process_count: int = 1
) -> tfds.core.DatasetBuilder:
  """The mask set's TFDS builder, prepared from config.input.mask_dir on first use (single host)."""
  from define_jax.datasets import prepare  # imports TFDS only when needed

  builder = prepare.make_builder(mask_set.tfds_name, config.input.data_dir)
  if builder.is_prepared():
    return builder
  if not config.input.mask_dir or process_count > 1:
    raise FileNotFoundError(
        f'{mask_set.tfds_name} is not prepared in {builder.data_dir}; set config.input.mask_dir '
        f'(single host) or run: {image_sources.prepare_command(mask_set.tfds_name, config)}'
    )
  return prepare.prepare_dataset(mask_set.tfds_name, config.input.mask_dir, config.input.data_dir)


def _generated(config: ml_collections.ConfigDict, process_count: int) -> GeneratedMasks:
  """Strokes and ellipses with a hole ratio in [hole_ratio_min, hole_ratio_max]."""
  del process_count  # generated masks need no prepared data
  return GeneratedMasks(
      int(config.model.image_size),
      (float(config.input.hole_ratio_min), float(config.input.hole_ratio_max)),
  )


def _from_mask_set(
    mask_set: MaskSet, config: ml_collections.ConfigDict, process_count: int
) -> MaskSetMasks:
  return MaskSetMasks(
      image_sources.TfdsRecords(
          prepared_mask_set(mask_set, config, process_count), mask_set.train_split, 'mask'
      ),
      int(config.model.image_size),
      bool(config.input.mask_augment),
      _generated(config, process_count),
      float(config.input.generated_mask_fraction),
  )


MASK_SOURCES: dict[str, Callable[[ml_collections.ConfigDict, int], MaskMaker]] = {
    'generated': _generated,
    **{name: functools.partial(_from_mask_set, mask_set) for name, mask_set in MASK_SETS.items()},
}


def mask_maker(config: ml_collections.ConfigDict, process_count: int) -> MaskMaker:
  """The training masks of config.input.masks, a fraction of them over face parts
  (config.input.face_part_mask_fraction)."""
  masks = image_sources.lookup(MASK_SOURCES, 'masks', config.input.masks)(config, process_count)
  fraction = float(config.input.face_part_mask_fraction)
  if not fraction:
    return masks
  from define_jax.faces import faces  # pylint: disable=g-import-not-at-top  # Only face-part runs.
  template = (faces.FACE_TEMPLATE if config.model.face_template is None
              else np.asarray(config.model.face_template))
  return FacePartMasks(masks, int(config.model.image_size), template, fraction)
