"""Classical inpainting: the methods a user could pick instead of the network, for comparison,
and the biharmonic fill and harmonic seam fit='auto' builds on (the network's own diffusion
prefill, in JAX, is define_jax.model.prefill).

Every method takes one float32 image [H, W, 3] in [0, 1] and its known-pixel mask [H, W, 1]
(1 = known, 0 = hole) and returns the composite: the fill inside the holes, the input's own
pixels everywhere else, so the methods are scored exactly like the network's composite.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import cv2
import jax
import numpy as np
from tqdm import tqdm

from define_jax.faces import align
from define_jax.model import masking
from define_jax.model import prefill

# Neighbourhood radius (pixels) that Telea and Navier–Stokes consider around each hole pixel;
# OpenCV's documentation and samples use 3.
CV2_INPAINT_RADIUS = 3

# inpaint_biharmonic solves a sparse linear system per hole: measured on one CPU core at 50%
# holes, about 0.2 s per 256² image and 1.1 s per 512² image (evaluate shows its progress).
# Its cost grows faster than the hole count (measured on the shared 2-core CPU: 0.58 GB and
# 9 to 30 s at 154k holes): fit='auto' solves exactly up to this many hole pixels (any 512²
# photo up to half hole), more on a block-averaged copy of the photo.
EXACT_BIHARMONIC_HOLES = 2 ** 17


def _holes_u8(known: np.ndarray) -> np.ndarray:
  """OpenCV's mask convention: non-zero = pixel to fill."""
  return (np.asarray(known)[..., 0] < masking.KNOWN_THRESHOLD).astype(np.uint8)


def _paste_known(fill: np.ndarray, image: np.ndarray, known: np.ndarray) -> np.ndarray:
  known = (np.asarray(known) >= masking.KNOWN_THRESHOLD).astype(np.float32)
  return np.asarray(masking.composite(fill, image, known), np.float32)


def _cv2_inpaint(image: np.ndarray, known: np.ndarray, flags: int) -> np.ndarray:
  # cv2.inpaint needs 8-bit input; only the filled pixels are quantised, known ones are pasted back.
  image_u8 = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
  fill = cv2.inpaint(image_u8, _holes_u8(known), CV2_INPAINT_RADIUS, flags)
  return _paste_known(fill.astype(np.float32) / 255.0, image, known)


def telea(image: np.ndarray, known: np.ndarray) -> np.ndarray:
  """Fast marching method of Telea (2004), OpenCV's INPAINT_TELEA."""
  return _cv2_inpaint(image, known, cv2.INPAINT_TELEA)


def navier_stokes(image: np.ndarray, known: np.ndarray) -> np.ndarray:
  """Fluid-dynamics inpainting of Bertalmio et al. (2001), OpenCV's INPAINT_NS."""
  return _cv2_inpaint(image, known, cv2.INPAINT_NS)


def biharmonic(image: np.ndarray, known: np.ndarray, max_holes: int | None = None) -> np.ndarray:
  """Biharmonic equation fill, scikit-image's inpaint_biharmonic (an exact sparse solve).

  max_holes bounds the time and memory (fit='auto' passes EXACT_BIHARMONIC_HOLES): with more
  hole pixels, the photo is block-averaged by the smallest factor that brings them under
  max_holes, solved there, upsampled and made to meet the known pixels with seam_exact.
  """
  if max_holes is not None:
    height, width = known.shape[:2]
    factor = math.ceil(math.sqrt(np.count_nonzero(known[..., 0] < 0.5) / max_holes))
    if factor > 1:
      coarse_image, coarse_known = align.box_downsample(image, known, factor)
      coarse = biharmonic(coarse_image, coarse_known, max_holes)
      fill = align.box_upsample(coarse, factor, height, width)
      return np.where(known > 0, image, seam_exact(fill, image, known)).astype(np.float32)
  from skimage.restoration import inpaint_biharmonic  # pylint: disable=g-import-not-at-top

  holes = _holes_u8(known).astype(bool)
  fill = inpaint_biharmonic(np.asarray(image, np.float64), holes, channel_axis=-1)
  return _paste_known(np.clip(fill, 0.0, 1.0), image, known)


_harmonic_fill = jax.jit(prefill.harmonic_fill)


def seam_exact(fill: np.ndarray, image: np.ndarray, known: np.ndarray) -> np.ndarray:
  """fill [H, W, 3] plus the harmonic interpolation over the holes of its mismatch with the
  image on the known pixels (known [H, W, 1], 1 = known): it meets the known pixels exactly
  at every hole border, and where fill already matches them it is returned unchanged."""
  mismatch = np.where(known > 0, image - fill, 0.0).astype(np.float32)
  if not mismatch.any():
    return fill
  return fill + np.asarray(_harmonic_fill(mismatch[None], known[None]))[0]


@dataclasses.dataclass(frozen=True)
class Baseline:
  name: str  # As reported in tables.
  short_name: str  # As titled in image grids.
  inpaint: Callable[[np.ndarray, np.ndarray], np.ndarray]

  def inpaint_batch(self, images: np.ndarray, known: np.ndarray) -> np.ndarray:
    """inpaint of each image [N, H, W, 3] with its mask [N, H, W, 1], one at a time, with a
    progress bar on a terminal (biharmonic takes seconds per image at 512² and more)."""
    pairs = tqdm(zip(images, known), total=len(images), desc=self.short_name, unit='image',
                 leave=False, disable=None)
    return np.stack([self.inpaint(image, mask) for image, mask in pairs])


TELEA = Baseline('Telea (OpenCV)', 'Telea', telea)
BIHARMONIC = Baseline('Biharmonic (scikit-image)', 'Biharm.', biharmonic)
BASELINES = (TELEA, Baseline('Navier–Stokes (OpenCV)', 'NS', navier_stokes), BIHARMONIC)
