"""Geometry of inpainting a photo through the model's canvas: similarity transforms, warps
that never turn a hole into a known pixel, and the weights that paste a fill back.

A canvas is the model's size×size input; `matrix` ([2, 3], float64) maps photo pixel
coordinates (x, y) to canvas coordinates. A face's canvas comes from its five landmarks and
the template (the training faces' mean landmarks, as fractions of the canvas).

NumPy and OpenCV: this runs outside the compiled core, once per photo.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from define_jax.faces import faces

# Width of the soft border (fraction of the canvas) over which a face's fill fades into
# the fill of the rest of the photo when pasted back.
FEATHER = 0.1


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
  """[2, 3] rotation + uniform scale + translation mapping source points [K, 2] closest to
  target points [K, 2] in the least-squares sense (no reflection)."""
  source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
  x, y = source[:, 0], source[:, 1]
  ones, zeros = np.ones_like(x), np.zeros_like(x)
  # Unknowns (a, b, tx, ty): x' = a x - b y + tx, y' = b x + a y + ty.
  rows = np.concatenate([np.stack([x, -y, ones, zeros], 1), np.stack([y, x, zeros, ones], 1)])
  (a, b, tx, ty), *_ = np.linalg.lstsq(rows, np.concatenate([target[:, 0], target[:, 1]]),
                                       rcond=None)
  return np.array([[a, -b, tx], [b, a, ty]])


def face_matrix(landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
  """Photo -> canvas transform putting the five landmarks on the template (fractions)."""
  return similarity_transform(landmarks, faces.canvas_points(np.asarray(template, np.float64),
                                                             size))


def scale_of(matrix: np.ndarray) -> float:
  """Canvas pixels per photo pixel."""
  return math.hypot(matrix[0, 0], matrix[1, 0])


def rotation_of(matrix: np.ndarray) -> float:
  """Rotation angle in radians (counter-clockwise in x-right, y-down pixel coordinates)."""
  return math.atan2(matrix[1, 0], matrix[0, 0])


def window_matrix(matrix: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int,
                  height: int, width: int, spread: faces.FramingSpread) -> np.ndarray | None:
  """For a face whose photo -> canvas transform (face_matrix) is `matrix`: a transform that
  is a whole-pixel shift instead, so the canvas is a size×size window of the photo (no
  resampling), placed as near as it can be to putting the landmarks' centre on the
  template's while keeping as much of it inside the photo as possible. Only for a face
  already framed like the training faces there: `matrix` has a scale and rotation within
  `spread`, and the landmarks' centre lands within spread.shift of the template's;
  otherwise None."""
  if (abs(math.log(scale_of(matrix))) > spread.log_scale
      or abs(rotation_of(matrix)) > spread.rotation):
    return None
  target = faces.canvas_points(np.asarray(template, np.float64), size).mean(axis=0)
  ideal = np.asarray(landmarks, np.float64).mean(axis=0) - target  # Window's top-left (x, y).
  overhang = np.array([width - size, height - size])
  offset = np.clip(np.round(ideal), np.minimum(overhang, 0), np.maximum(overhang, 0))
  if np.abs(offset - ideal).max() > spread.shift * size:
    return None
  return np.array([[1.0, 0.0, -offset[0]], [0.0, 1.0, -offset[1]]])


def box_downsample(image: np.ndarray, known: np.ndarray, factor: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """factor×factor means of the known pixels; a coarse pixel is known only if all its
  photo pixels are (the margin beyond the photo counts as hole)."""
  height, width = known.shape[:2]
  pad = ((0, -height % factor), (0, -width % factor), (0, 0))
  image, known = np.pad(image * known, pad), np.pad(known, pad)
  blocks = lambda x: x.reshape(x.shape[0] // factor, factor, x.shape[1] // factor, factor,
                               x.shape[2]).sum(axis=(1, 3))
  coarse_known = (blocks(known) >= factor * factor - 0.5).astype(np.float32)
  return blocks(image) / (factor * factor) * coarse_known, coarse_known


def box_upsample(coarse: np.ndarray, factor: int, height: int, width: int) -> np.ndarray:
  """coarse [h, w, C] on box_downsample's grid, interpolated (bilinear) at every pixel of
  the [height, width] photo it came from."""
  # Coarse pixel j's centre is photo coordinate factor j + (factor - 1) / 2, as resize has it.
  photo = cv2.resize(np.asarray(coarse, np.float32),
                     (coarse.shape[1] * factor, coarse.shape[0] * factor),
                     interpolation=cv2.INTER_LINEAR)
  return photo.reshape(photo.shape[0], photo.shape[1], -1)[:height, :width]


def warp_to_canvas(image: np.ndarray, known: np.ndarray, matrix: np.ndarray, size: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(canvas image [S, S, C], canvas known [S, S, 1]) of float32 image [H, W, C] and known
  [H, W, 1] (1 = known). A canvas pixel is known only if every photo pixel it is
  interpolated from is known and inside the photo, so hole content never reaches it.
  Shrinking by 2× or more first averages factor×factor blocks (no aliasing)."""
  image = np.asarray(image, np.float32)
  known = (np.asarray(known, np.float32) >= 0.5).astype(np.float32)
  factor = max(1, math.floor(1.0 / scale_of(matrix) + 1e-6))
  if factor > 1:
    image, known = box_downsample(image, known, factor)
    # Coarse pixel j's centre is photo coordinate factor j + (factor - 1) / 2.
    offset = matrix[:, :2].sum(axis=1, keepdims=True) * (factor - 1) / 2
    matrix = np.concatenate([matrix[:, :2] * factor, matrix[:, 2:] + offset], axis=1)
  flags = cv2.INTER_LINEAR
  canvas = cv2.warpAffine(image * known, matrix, (size, size), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  holes = cv2.warpAffine(1.0 - known[..., 0], matrix, (size, size), flags=flags,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)
  canvas_known = (holes <= 1e-6).astype(np.float32)[..., None]
  return canvas.reshape(size, size, -1) * canvas_known, canvas_known


def warp_from_canvas(canvas: np.ndarray, matrix: np.ndarray, height: int, width: int
                     ) -> np.ndarray:
  """The canvas [S, S, C] sampled at every photo pixel (bilinear): [H, W, C]."""
  photo = cv2.warpAffine(np.asarray(canvas, np.float32), matrix, (width, height),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
  return photo.reshape(height, width, -1)


def canvas_weight(matrix: np.ndarray, size: int, height: int, width: int,
                  feather: float = FEATHER) -> np.ndarray:
  """[H, W] how much each photo pixel trusts this canvas: 1 well inside it, falling to 0
  over `feather`×size canvas pixels towards its edges, 0 outside."""
  ramp = np.minimum(np.arange(size) + 0.5, size - 0.5 - np.arange(size)) / (feather * size)
  ramp = np.clip(ramp, 0.0, 1.0).astype(np.float32)
  weight = np.minimum(ramp[:, None], ramp[None, :])
  return cv2.warpAffine(weight, matrix, (width, height),
                        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
