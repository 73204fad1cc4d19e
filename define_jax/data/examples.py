"""Training element number i as a pure function of (seed, i): the determinism contract.

Element i = step * global_batch + position is the only input of its content. The
image is entry i mod N of a permutation of the N training images seeded by (seed,
epoch = i // N); crop, flip and mask come from NumPy generators seeded by (seed,
stream, i). So a pipeline started at step k computes exactly the batches an
uninterrupted one yields from step k, without replaying anything, and any host can
compute any element.

Unusable inputs are skipped deterministically (the next image of the same epoch's
order is used), counted in `skips`, and summarised in the log once per epoch.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from define_jax.data import image_sources
from define_jax.data import mask_sources
from define_jax.data import skips

# Independent random streams per element, so that e.g. replacing an unreadable
# image does not change the element's mask.
PERMUTATION_STREAM, IMAGE_STREAM, MASK_STREAM = 1, 2, 3


def element_rng(seed: int, stream: int, index: int) -> np.random.Generator:
  return np.random.default_rng((seed, stream, index))


class Examples:
  """Makes training element number i (a pure function of seed and i, see module doc)."""

  def __init__(
      self,
      split: image_sources.ImageSplit,
      masks: mask_sources.MaskMaker,
      image_size: int,
      seed: int,
  ) -> None:
    self._split = split
    self._masks = masks
    self._size = image_size
    self._seed = seed
    self._num_images = len(split.images)
    self._known_unreadable: set[int] = set()
    self._epoch_skips = skips.EpochSkipSummary(split.images.description)
    self._permutation_lock = threading.Lock()
    self._permutations: dict[int, np.ndarray] = {}
    # JPEG may decode at a reduced scale as long as the smallest crop keeps full resolution.
    self._min_side = math.ceil(image_size / split.crop_fractions[0])

  def _permutation(self, epoch: int) -> np.ndarray:
    with self._permutation_lock:
      if epoch not in self._permutations:
        if len(self._permutations) >= 2:  # elements in flight span at most two epochs
          del self._permutations[min(self._permutations)]
        rng = element_rng(self._seed, PERMUTATION_STREAM, epoch)
        self._permutations[epoch] = rng.permutation(self._num_images)
      return self._permutations[epoch]

  def _load(self, index: int, min_side: int) -> np.ndarray | None:
    """The decoded image, or None (counted) if it is unreadable."""
    if index in self._known_unreadable:
      skips.SKIPS.record('images', self._split.images.name(index), 'unreadable (seen before)')
      return None
    image = image_sources.load_or_skip(self._split.images, index, min_side)
    if image is None:
      self._known_unreadable.add(index)
    return image

  def first_readable(self) -> None:
    """Fails at once, naming the data, if no training image can be read."""
    for index in self._permutation(0):
      if self._load(int(index), self._size) is not None:
        return
    raise ValueError(f'no readable image in {self._split.images.description}')

  def __call__(self, element: np.int64) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [S, S, 3], mask uint8 [S, S, 1]) of global element number `element`."""
    element = int(element)
    epoch, offset = divmod(element, self._num_images)
    self._epoch_skips.observe(epoch)
    permutation = self._permutation(epoch)
    # An unreadable image is replaced by the next readable one of this epoch's order.
    for attempt in range(self._num_images):
      image = self._load(int(permutation[(offset + attempt) % self._num_images]), self._min_side)
      if image is not None:
        break
      self._epoch_skips.record(epoch)
    else:
      raise ValueError(f'no readable image left in {self._split.images.description}')
    image = image_sources.crop_and_resize(
        image,
        self._size,
        element_rng(self._seed, IMAGE_STREAM, element),
        self._split.crop_fractions,
    )
    mask = self._masks.draw(element_rng(self._seed, MASK_STREAM, element))
    return image, mask[..., None]
