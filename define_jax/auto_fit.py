"""fit='auto': inpaints a photo of any size and framing through the model's canvas.

Face tools never feed a whole photo to a face network: each face is warped to the training
framing, processed there and pasted back. Here every canvas (each face with a hole on it,
aligned by its five landmarks onto the template; and the whole photo scaled to the canvas)
gets the network's fill and the biharmonic fill of the same canvas; their difference is the
network's *correction* of diffusion at the model's scale. The photo's own fill is the
biharmonic fill at its native resolution (which keeps the fine detail at hole borders that
a scaled fill blurs) plus the corrections warped back: on a face, that face's (feathered
at its canvas border, faces that overlap share by weight); elsewhere the whole photo's.
Known pixels are the photo's own, exactly. Why this split, and what it was tuned on: README
("Photos of any size").
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from define_jax import align

# (canvas images [K, S, S, 3], canvas known [K, S, S, 1]) -> (network composites, biharmonic
# fills), both [K, S, S, 3].
CanvasFills = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
# (image [H, W, 3], known [H, W, 1], start [H, W, 3]) -> biharmonic fill at native resolution.
NativeDiffusion = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class FitReport:
  """How one photo was inpainted (for the CLI and the demo to tell users)."""

  faces_found: int
  faces_inpainted: int  # Faces with a hole on them, filled through their aligned canvas.
  # Photo pixels per canvas pixel of the most enlarged face fill (1 or less: none).
  upscale: float
  boxes: list[tuple[float, float, float, float]]  # x0, y0, x1, y1 of every face found.

  def describe(self) -> str:
    faces = (f'{self.faces_inpainted} of {self.faces_found} faces found inpainted through '
             'their aligned crop' if self.faces_found else 'no face found')
    upscaled = (f'; the model works at a lower resolution, its fill was upscaled '
                f'{self.upscale:.1f}× (the biharmonic fill keeps native detail at the hole '
                'borders)' if self.upscale > 1.05 else '')
    return faces + upscaled


def _faces_on_holes(faces: Sequence[Any], holes: np.ndarray, template: np.ndarray,
                    size: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """(matrix, weight [H, W]) of each face whose canvas covers a hole pixel."""
  height, width = holes.shape
  chosen = []
  for face in faces:
    matrix = align.face_matrix(np.asarray(face.landmarks, np.float64), template, size)
    weight = align.canvas_weight(matrix, size, height, width)
    if (weight[holes] > 0).any():
      chosen.append((matrix, weight))
  return chosen


def auto_fill(image: np.ndarray, known: np.ndarray, faces: Sequence[Any],
              template: np.ndarray, size: int, canvas_fills: CanvasFills,
              native_diffusion: NativeDiffusion, whole_photo_correction: bool = True
              ) -> tuple[np.ndarray, FitReport]:
  """(composite float32 [H, W, 3], report) of image [H, W, 3] in [0, 1] and known
  [H, W, 1] (1 = known), given the faces found on it (each with .landmarks [5, 2] and .box)."""
  height, width = known.shape[:2]
  known = (known >= 0.5).astype(np.float32)
  holes = known[..., 0] == 0
  on_faces = _faces_on_holes(faces, holes, template, size)
  matrices = [align.whole_photo_matrix(height, width, size)] + [m for m, _ in on_faces]
  warped = [align.warp_to_canvas(image, known, m, size) for m in matrices]
  network, diffusion = canvas_fills(np.stack([w[0] for w in warped]),
                                    np.stack([w[1] for w in warped]))
  start = align.warp_from_canvas(diffusion[0], matrices[0], height, width)
  fill = native_diffusion(image, known, start)
  corrections = [align.warp_from_canvas(n - d, m, height, width)
                 for n, d, m in zip(network, diffusion, matrices)]
  face_weights = [w[..., None] for _, w in on_faces]
  total = sum(face_weights, np.zeros((height, width, 1), np.float32))
  share = 1.0 / np.maximum(total, 1.0)  # Overlapping faces split the weight.
  if whole_photo_correction:
    fill = fill + (1.0 - np.minimum(total, 1.0)) * corrections[0]
  for weight, correction in zip(face_weights, corrections[1:]):
    fill = fill + weight * share * correction
  composite = np.where(known > 0, image, np.clip(fill, 0.0, 1.0)).astype(np.float32)
  upscale = max((1.0 / align.scale_of(m) for m in matrices[1:]), default=1.0)
  report = FitReport(len(faces), len(on_faces), upscale,
                     [tuple(float(v) for v in face.box) for face in faces])
  return composite, report
