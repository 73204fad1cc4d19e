"""The TFDS mask sets (define_jax.datasets) and how their manual files are read: each set's
polarity is stated here once, for its builder, the training masks and evaluate's --mask_dir.

Below data/ and datasets/ (both import it), so the builders need nothing from data/.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
from absl import logging

from define_jax.files import image_files

Key = TypeVar('Key')


@dataclasses.dataclass(frozen=True)
class MaskSet:
  """A TFDS mask set (define_jax.datasets) and how its manual files are read."""

  tfds_name: str
  train_split: str
  eval_split: str
  # Whether white is hole or keep in the set's files; stated only here, used by its TFDS
  # builder and by evaluate's --mask_dir.
  polarity: image_files.MaskPolarity


# The TFDS builders store masks as 0/1 PNGs, 1 = known: binary data whose white is kept.
STORED_POLARITY = 'keep_white'

MASK_SETS = {
    'nvidia_irregular': MaskSet('nvidia_irregular_masks', 'test', 'test', 'hole_white'),
    'qd_imd': MaskSet('qd_imd', 'train', 'test', 'keep_white'),
}


def read_mask_set_files(name: str,
                        files: Iterable[tuple[Key, Path]]) -> Iterator[tuple[Key, np.ndarray]]:
  """(key, uint8 [H, W, 1], 1 = known) of the manual files of MASK_SETS[name], read with its
  polarity: what its TFDS builder stores. Unreadable and non-binary files are skipped with
  a warning naming them."""
  polarity = MASK_SETS[name].polarity
  for key, path in files:
    try:
      known = image_files.read_mask(path, polarity, max_pixels=None)
    except image_files.InputError as error:
      logging.warning('Skipping %s', error)
      continue
    yield key, known[..., None]
