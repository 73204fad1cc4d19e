"""fit='auto': inpaints a photo of any size and framing through the model's canvas.

Face tools never feed a whole photo to a face network: each face is warped to the training
framing, processed there and pasted back. Here the photo is first filled at its native
resolution (the 'pad' path: what measured best away from faces, see README "Photos of any
size"). Each face with a hole on it is then aligned by its five landmarks onto the template
on the model's canvas. A face already framed like the training faces (scale, rotation and
place within faces.FRAMING_SPREAD of the template) is not warped: its canvas is a window of
the photo, as is, since resampling it only blurs the known pixels and widens the holes
(on 128² faces at the training framing a warp cost 0.85 dB, README "Photos of any size").
Where such a face is larger than the canvas, the native fill gives way
to the biharmonic fill (by how much the face is upscaled, all of it from 2x): the network
met that face at the photo's resolution larger than it was trained on, and the smooth fill
measured better under the corrections (README "Photos of any size"). This is the *base*.
Where no face lies on a hole, the result is the native fill, or, on a photo more than twice
the canvas's side, its mean with the biharmonic fill (what measured best there). The faces
are looked for once, on the native fill (a second look on the biharmonic fill, which found
faces under large holes for the 128² model, changed nothing measurable with the 256² one:
lab notebook, rule R5).
The network fills each face on its canvas, and the difference between that fill and the
base seen on the same canvas is the face network's *correction*, warped back and added on
the face (feathered at its canvas border; faces that overlap share by weight).
Where the canvas is coarser than the photo the correction is smooth: it brings the face
network's content, and the base keeps its detail. The *seam*: warped back, a
correction also reaches a little onto the known pixels around a hole (a canvas pixel spans
several photo pixels); that mismatch on the known pixels is interpolated harmonically over
the holes and taken away, so the fill meets every known pixel exactly (it also tempers the
correction near and inside holes that are narrow against the canvas's pixels; measured
better than cutting the correction off at the canvas's holes, README "Photos of any
size"). Known pixels are the photo's own, exactly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np

from define_jax.faces import align
from define_jax.faces.faces import FramingSpread
from define_jax.inference import baselines
from define_jax.inference import memory

# (canvas images [K, S, S, 3], canvas known [K, S, S, 1]) -> network composites [K, S, S, 3].
CanvasFills = Callable[[np.ndarray, np.ndarray], np.ndarray]
# (image [H, W, 3], known [H, W, 1]) -> composite at native resolution.
NativeFill = Callable[[np.ndarray, np.ndarray], np.ndarray]
# image [H, W, 3] in [0, 1] -> the faces found on it (faces.FaceDetector).
Detect = Callable[[np.ndarray], Sequence[Any]]


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
    upscaled = (f'; a face is larger than the model\'s canvas: its correction was upscaled '
                f'{self.upscale:.1f}× (the fill at the photo\'s resolution keeps the detail at '
                'the hole borders)'
                if self.upscale > 1.05 else '')
    return faces + upscaled


# A face's canvas with its footprint in the photo: (matrix, (rows, columns)).
FaceCanvas = tuple[np.ndarray, tuple[slice, slice]]


def _weight(face: FaceCanvas, size: int) -> np.ndarray:
  """canvas_weight of a face on its footprint only."""
  matrix, (rows, columns) = face
  return align.canvas_weight(align.shifted(matrix, rows, columns), size,
                             rows.stop - rows.start, columns.stop - columns.start)


def _faces_on_holes(faces: Sequence[Any], holes: np.ndarray, template: np.ndarray,
                    spread: FramingSpread, size: int) -> list[FaceCanvas]:
  """The canvas of each face that covers a hole pixel."""
  height, width = holes.shape
  chosen = []
  for face in faces:
    landmarks = np.asarray(face.landmarks, np.float64)
    matrix = align.face_matrix(landmarks, template, size)
    window = align.window_matrix(matrix, landmarks, template, size, height, width, spread)
    if window is not None:
      matrix = window
    box = align.footprint(matrix, size, height, width)
    if box is not None and (_weight((matrix, box), size)[holes[box]] > 0).any():
      chosen.append((matrix, box))
  return chosen


def _network_fills(canvas_fills: CanvasFills, images: np.ndarray, known: np.ndarray
                   ) -> np.ndarray:
  """canvas_fills of up to memory.FACE_BATCH canvases, the batch padded to a power of two
  (at most four programs are compiled)."""
  padded = 2 ** math.ceil(math.log2(len(images)))
  repeat = lambda x: np.concatenate([x, np.repeat(x[-1:], padded - len(x), axis=0)])
  return canvas_fills(repeat(images), repeat(known))[:len(images)]


def _with_face_corrections(base: np.ndarray, image: np.ndarray, known: np.ndarray,
                           on_faces: list[FaceCanvas], size: int, canvas_fills: CanvasFills
                           ) -> np.ndarray:
  """base [H, W, 3] plus each face network's correction, warped back and feathered on its
  footprint (overlapping faces share by weight). memory.FACE_BATCH faces at a time, each
  confined to its footprint: time grows with the faces' area, memory not with their
  number (memory.py counts one batch of canvases)."""
  total = np.zeros(known.shape[:2], np.float32)
  for face in on_faces:
    total[face[1]] += _weight(face, size)
  share = 1.0 / np.maximum(total, 1.0)  # Overlapping faces split the weight.
  del total
  fill, everywhere = base.copy(), np.ones_like(known)
  for start in range(0, len(on_faces), memory.FACE_BATCH):
    batch = on_faces[start:start + memory.FACE_BATCH]
    warped = [align.warp_to_canvas(image, known, matrix, size) for matrix, _ in batch]
    network = _network_fills(canvas_fills, np.stack([i for i, _ in warped]),
                             np.stack([k for _, k in warped]))
    for (matrix, (rows, columns)), face_fill in zip(batch, network):
      # Against the base, not the running sum: overlapping faces add their shares.
      base_on_canvas, _ = align.warp_to_canvas(base, everywhere, matrix, size)
      correction = align.warp_from_canvas(face_fill - base_on_canvas,
                                          align.shifted(matrix, rows, columns),
                                          rows.stop - rows.start, columns.stop - columns.start)
      weight = _weight((matrix, (rows, columns)), size) * share[rows, columns]
      fill[rows, columns] += weight[..., None] * correction
  return fill


def auto_fill(image: np.ndarray, known: np.ndarray, detect: Detect,
              template: np.ndarray, spread: FramingSpread, size: int, canvas_fills: CanvasFills,
              native_fill: NativeFill) -> tuple[np.ndarray, FitReport]:
  """(composite float32 [H, W, 3], report) of image [H, W, 3] in [0, 1] and known
  [H, W, 1] (1 = known). `detect` finds the faces (each with .landmarks [5, 2] and .box) on
  the photo with its holes already filled natively: the pixels under a hole are never looked
  at, by the detector no more than by the network (an evaluation's ground truth stays unseen,
  and a user's occluder does not steer the alignment)."""
  known = (known >= 0.5).astype(np.float32)
  native = native_fill(image, known)
  # The detector sees the photo with its holes filled, never what they hide.
  faces = detect(np.where(known > 0, image, np.clip(native, 0.0, 1.0)))
  on_faces = _faces_on_holes(faces, known[..., 0] == 0, template, spread, size)
  upscale = max((1.0 / align.scale_of(m) for m, _ in on_faces), default=1.0)
  # The biharmonic fill needs a known pixel (allow_all_hole admits photos without any).
  can_smooth = bool(known.any())
  fill = native
  if on_faces:
    base = native
    if upscale > 1.0 and can_smooth:
      # A face larger than the canvas: the network met it, at the photo's resolution, larger
      # than it was trained on, and the biharmonic fill measured better under the corrections.
      smooth = baselines.biharmonic(image, known, baselines.EXACT_BIHARMONIC_HOLES)
      base = native + min(upscale - 1.0, 1.0) * (smooth - native)
    fill = _with_face_corrections(base, image, known, on_faces, size, canvas_fills)
    fill = baselines.seam_exact(fill, image, known)
  elif can_smooth and min(known.shape[:2]) > 2 * size:
    # No face on the holes of a photo over twice the canvas: the network's native fill there
    # meets content far larger than its training faces, and its mean with the biharmonic fill
    # measured best on such photos (lab notebook, rules H and R5).
    fill = 0.5 * (native + baselines.biharmonic(image, known, baselines.EXACT_BIHARMONIC_HOLES))
  composite = np.where(known > 0, image, np.clip(fill, 0.0, 1.0)).astype(np.float32)
  report = FitReport(len(faces), len(on_faces), upscale,
                     [tuple(float(v) for v in face.box) for face in faces])
  return composite, report
