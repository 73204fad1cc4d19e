"""The hole-ratio bands every score is reported in, and the hole ratio that sorts masks into them.

The PConv paper's (and the NVIDIA mask set's) six 10% bands from 0 to 60%. NumPy only.
"""

from __future__ import annotations

import numpy as np

# Hole-area fractions of the PConv paper's (and the NVIDIA mask set's) bands: a mask with
# hole ratio r belongs to band b when BAND_EDGES[b] < r <= BAND_EDGES[b + 1].
BAND_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
NUM_BANDS = len(BAND_EDGES) - 1
# The label of the row over the images of every band.
OVERALL = 'All'
# Images per band whose composites the reports show.
EXAMPLES_PER_BAND = 4


def band_label(band: int, dash: str = '–') -> str:
  """'0–10%', …, '50–60%'."""
  return f'{BAND_EDGES[band] * 100:.0f}{dash}{BAND_EDGES[band + 1] * 100:.0f}%'


def band_labels() -> list[str]:
  """Every band's label, then OVERALL: the columns or row groups of a report."""
  return [band_label(b) for b in range(NUM_BANDS)] + [OVERALL]


def band_index(hole_ratios: np.ndarray) -> np.ndarray:
  """Band of each hole ratio, -1 outside (0, 60%] (no hole, or more hole than any band)."""
  hole_ratios = np.asarray(hole_ratios, np.float64)
  bands = np.searchsorted(BAND_EDGES, hole_ratios, side='left') - 1
  return np.where((hole_ratios > 0) & (hole_ratios <= BAND_EDGES[-1]), bands, -1)


def hole_ratio(known: np.ndarray) -> np.ndarray:
  """Hole fraction of each known-mask [N, H, W, 1] (1 = known).

  Computed as a mean of hole indicators, so that e.g. 30 of 100 is exactly the band edge 0.3
  (1 - 0.7 would round above it).
  """
  return np.mean(1.0 - np.asarray(known, np.float64), axis=(1, 2, 3))


def example_indices(bands: np.ndarray) -> list[int]:
  """The first EXAMPLES_PER_BAND images of each band, in image order."""
  chosen = [np.flatnonzero(bands == band)[:EXAMPLES_PER_BAND] for band in range(NUM_BANDS)]
  return sorted(int(i) for indices in chosen for i in indices)
