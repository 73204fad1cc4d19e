"""Hole masks for inpainting: a fast irregular-mask generator, augmentation of masks from a
mask set, and the mask sets themselves (MASK_SETS: the TFDS sets of define_jax.datasets, each
set's polarity stated here once, for its builder, the training masks and evaluate's
--mask_dir; files are read by define_jax.files.image_files).

Convention everywhere in this module: masks are uint8 arrays [H, W] with
1 = known pixel and 0 = hole (callers add the trailing channel axis and cast).
Drawing happens on a "hole canvas" (1 = hole) because OpenCV draws the
foreground colour; the public functions return the known-pixel convention.

Everything is deterministic given the `np.random.Generator` passed in, and uses
OpenCV drawing/warping calls (C code that releases the GIL) so that many masks
can be made in parallel inside tf.data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from absl import logging

from define_jax.files import image_files

# A generated mask is built from at most this many accepted or rejected
# primitives before the deterministic top-up guarantees the hole ratio.
_MAX_PRIMITIVES = 64
# Each rejected primitive (it overshot the maximum hole ratio) shrinks the next.
_SHRINK_AFTER_OVERSHOOT = 0.6
_STROKE_PROBABILITY = 0.75


def generate_irregular_mask(
    rng: np.random.Generator,
    height: int,
    width: int,
    hole_ratio_range: tuple[float, float] = (0.1, 0.6),
) -> np.ndarray:
  """Free-form mask of brush strokes (random walks) and ellipses.

  The hole fraction is drawn uniformly from `hole_ratio_range` as a target;
  primitives are added until the target is reached, a primitive that would
  push the fraction above the maximum is rejected and the next one is drawn
  smaller. The result always lies within [min, max] (a final top-up grows the
  hole ring by ring in the rare case the primitive budget runs out).

  Returns uint8 [height, width], 1 = known, 0 = hole.
  """
  ratio_min, ratio_max = hole_ratio_range
  if not 0.0 <= ratio_min <= ratio_max <= 1.0:
    raise ValueError(f'need 0 <= hole_ratio_min <= hole_ratio_max <= 1, got {hole_ratio_range}')
  area = height * width
  # The tolerance keeps e.g. 0.3 * 10000 = 3000.0000000000005 at 3000 pixels.
  min_holes = math.ceil(ratio_min * area - 1e-6)
  max_holes = math.floor(ratio_max * area + 1e-6)
  if min_holes > max_holes:
    raise ValueError(
        f'hole ratio range {hole_ratio_range} is narrower than one pixel of {height}x{width}'
    )
  target_holes = min(max(min_holes, round(rng.uniform(ratio_min, ratio_max) * area)), max_holes)

  hole = np.zeros((height, width), np.uint8)
  hole_count = 0
  size = math.sqrt(area)
  primitives = _RandomPrimitives(rng, _MAX_PRIMITIVES, height, width)
  for index in range(_MAX_PRIMITIVES):
    if hole_count >= target_holes:
      break
    candidate = hole.copy()
    primitives.draw(index, candidate, size)
    candidate_count = cv2.countNonZero(candidate)
    if candidate_count <= max_holes:
      hole, hole_count = candidate, candidate_count
    else:
      size *= _SHRINK_AFTER_OVERSHOOT
  if hole_count < min_holes:
    hole = _grow_hole_to(hole, min_holes, rng)
  return 1 - hole


class _RandomPrimitives:
  """Random brush strokes and ellipses, sampled in one vectorised go.

  Sampling every parameter up front (most go unused) costs far less than
  the Python overhead of many small random calls per primitive. Lengths are
  in units of the size passed to `draw`, so rejected primitives can make the
  following ones smaller.
  """

  _MAX_SEGMENTS = 9

  def __init__(self, rng: np.random.Generator, count: int, height: int, width: int) -> None:
    self._is_stroke = (rng.random(count) < _STROKE_PROBABILITY).tolist()
    self._origins = rng.uniform((0.0, 0.0), (width, height), (count, 2))
    # A random walk whose heading changes smoothly looks like a brush stroke.
    headings = rng.uniform(0.0, 2.0 * math.pi, (count, 1)) + np.cumsum(
        rng.normal(0.0, 0.6, (count, self._MAX_SEGMENTS)), axis=1
    )
    lengths = rng.uniform(0.04, 0.14, (count, self._MAX_SEGMENTS))
    steps = np.stack([np.cos(headings) * lengths, np.sin(headings) * lengths], axis=-1)
    self._walks = np.concatenate([np.zeros((count, 1, 2)), np.cumsum(steps, axis=1)], axis=1)
    self._num_vertices = rng.integers(4, self._MAX_SEGMENTS + 2, count).tolist()
    self._thicknesses = rng.uniform(0.015, 0.06, count).tolist()
    self._ellipse_axes = rng.uniform(0.02, 0.12, (count, 2)).tolist()
    self._ellipse_angles = rng.uniform(0.0, 180.0, count).tolist()

  def draw(self, index: int, hole: np.ndarray, size: float) -> None:
    """Draws primitive `index` (value 1) onto `hole` in place, scaled by `size` pixels."""
    if self._is_stroke[index]:
      walk = self._walks[index, : self._num_vertices[index]]
      vertices = (self._origins[index] + walk * size).round().astype(np.int32)
      thickness = max(1, int(self._thicknesses[index] * size))
      cv2.polylines(hole, [vertices], isClosed=False, color=1, thickness=thickness)
    else:
      center = tuple(int(c) for c in self._origins[index])
      axes = tuple(max(1, int(a * size)) for a in self._ellipse_axes[index])
      angle = self._ellipse_angles[index]
      cv2.ellipse(hole, center, axes, angle, 0.0, 360.0, color=1, thickness=-1)


def _grow_hole_to(hole: np.ndarray, min_holes: int, rng: np.random.Generator) -> np.ndarray:
  """Grows the hole by one-pixel rings (only a partial last ring) to exactly `min_holes` pixels."""
  hole = hole.copy()
  if not hole.any():
    hole[int(rng.integers(hole.shape[0])), int(rng.integers(hole.shape[1]))] = 1
  kernel = np.ones((3, 3), np.uint8)
  while (hole_count := cv2.countNonZero(hole)) < min_holes:
    ring = np.flatnonzero(cv2.dilate(hole, kernel) - hole)
    hole.flat[ring[: min_holes - hole_count]] = 1
  return hole


def augment_mask(
    known: np.ndarray,
    rng: np.random.Generator,
    out_size: tuple[int, int],
    *,
    max_dilation_fraction: float = 0.01,
    crop_fraction_range: tuple[float, float] = (0.4, 0.7),
) -> np.ndarray:
  """The paper's augmentation of a mask-set mask: random dilation of the hole,
  then one affine warp that takes a randomly placed (translated), rotated,
  optionally mirrored square crop and rescales it to `out_size`.

  The crop side is a fraction of the source's shorter side; fractions up to
  1/sqrt(2) let every rotation fit inside the source, so no straight source
  border shows up as an artificial hole edge. `known` is uint8 [h, w] with
  1 = known, any size; returns uint8 [out_h, out_w], 1 = known. The result
  may have no hole or be all hole: callers decide what to do.
  """
  out_height, out_width = out_size
  source_height, source_width = known.shape
  hole = (known == 0).astype(np.uint8) * 255

  max_radius = int(max_dilation_fraction * min(source_height, source_width))
  radius = int(rng.integers(0, max_radius + 1))
  if radius > 0:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    hole = cv2.dilate(hole, kernel)

  crop_side = rng.uniform(*crop_fraction_range) * min(source_height, source_width)
  angle = rng.uniform(0.0, 360.0)
  radians = math.radians(angle)
  half_extent = min(
      crop_side * (abs(math.cos(radians)) + abs(math.sin(radians))) / 2,
      min(source_height, source_width) / 2,
  )
  crop_center = rng.uniform(
      (half_extent, half_extent), (source_width - half_extent, source_height - half_extent)
  )
  flip = rng.random() < 0.5
  scale = min(out_height, out_width) / crop_side

  # Source -> destination: move the crop centre to the origin, rotate and scale,
  # optionally mirror x, then move to the output centre.
  rotate_scale = cv2.getRotationMatrix2D((0.0, 0.0), angle, scale)[:, :2]
  if flip:
    rotate_scale = np.diag([-1.0, 1.0]) @ rotate_scale
  offset = np.array([out_width / 2, out_height / 2]) - rotate_scale @ crop_center
  matrix = np.concatenate([rotate_scale, offset[:, None]], axis=1)
  warped = cv2.warpAffine(
      hole, matrix, (out_width, out_height), flags=cv2.INTER_LINEAR, borderValue=0
  )
  return (warped < 128).astype(np.uint8)


def resize_mask(known: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
  """Resizes a uint8 1 = known mask (area interpolation, threshold at 0.5)."""
  out_height, out_width = out_size
  if known.shape == (out_height, out_width):
    return known
  resized = cv2.resize(known * np.uint8(255), (out_width, out_height), interpolation=cv2.INTER_AREA)
  return (resized >= 128).astype(np.uint8)


def is_degenerate(known: np.ndarray) -> bool:
  """A mask without any hole or without any known pixel teaches nothing."""
  known_count = np.count_nonzero(known)
  return known_count == 0 or known_count == known.size


# The face parts a face-part hole hides, by the five landmarks (left eye, right eye, nose,
# left and right mouth corner) it is placed on, and its half-size (width, height) as a
# fraction of the inter-ocular distance: an eye with its lids and brow edge, the nose from
# its bridge to the nostrils, the lips with their corners.
FACE_PARTS = {
    'left_eye': ((0,), (0.42, 0.30)),
    'right_eye': ((1,), (0.42, 0.30)),
    'nose': ((2,), (0.30, 0.40)),
    'mouth': ((3, 4), (0.60, 0.32)),
}


def face_part_mask(rng: np.random.Generator | None, height: int, width: int,
                   landmarks: np.ndarray, part: str) -> np.ndarray:
  """uint8 [H, W], 1 = known: an ellipse hiding one face part (FACE_PARTS) of the face with
  these five landmarks (pixels, x then y). rng None: the ellipse as FACE_PARTS sizes it, on
  the part's landmarks (evaluation); otherwise scaled by 0.8-1.3 per axis, moved by up to
  0.1 of the inter-ocular distance and turned by up to 15 degrees (training)."""
  if part not in FACE_PARTS:
    raise ValueError(f'face part {part!r}: expected one of {sorted(FACE_PARTS)}.')
  points, (half_width, half_height) = FACE_PARTS[part]
  landmarks = np.asarray(landmarks, np.float64)
  interocular = float(np.linalg.norm(landmarks[1] - landmarks[0]))
  centre = landmarks[list(points)].mean(axis=0)
  angle = 0.0
  axes = np.array([half_width, half_height]) * interocular
  if rng is not None:
    axes = axes * rng.uniform(0.8, 1.3, size=2)
    centre = centre + rng.uniform(-0.1, 0.1, size=2) * interocular
    angle = float(rng.uniform(-15.0, 15.0))
  hole = np.zeros((height, width), np.uint8)
  cv2.ellipse(hole, (int(round(centre[0])), int(round(centre[1]))),
              (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))), angle, 0, 360, 1, -1)
  return (1 - hole).astype(np.uint8)


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
