"""Classical inpainting methods a user could pick instead of the network, for comparison.

Every method takes one float32 image [H, W, 3] in [0, 1] and its known-pixel mask [H, W, 1]
(1 = known, 0 = hole) and returns the composite: the fill inside the holes, the input's own
pixels everywhere else, so the methods are scored exactly like the network's composite.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import cv2
import numpy as np
from tqdm import tqdm

from define_jax.model import masking

# Neighbourhood radius (pixels) that Telea and Navier–Stokes consider around each hole pixel;
# OpenCV's documentation and samples use 3.
CV2_INPAINT_RADIUS = 3

# inpaint_biharmonic solves a sparse linear system per hole: measured on one CPU core at 50%
# holes, about 0.2 s per 256² image and 1.1 s per 512² image (evaluate shows its progress).
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


def biharmonic(image: np.ndarray, known: np.ndarray) -> np.ndarray:
  """Biharmonic equation fill, scikit-image's inpaint_biharmonic."""
  from skimage.restoration import inpaint_biharmonic  # pylint: disable=g-import-not-at-top

  holes = _holes_u8(known).astype(bool)
  fill = inpaint_biharmonic(np.asarray(image, np.float64), holes, channel_axis=-1)
  return _paste_known(np.clip(fill, 0.0, 1.0), image, known)


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
