"""Whether a filled face part lands where the face's own is: the part's landmark error.

A hole over an eye, the nose or the mouth (evaluate --masks face_parts) can come back as a
plausible texture in the wrong place, or as a smear the face detector reads as no part at
all; PSNR and LPIPS see neither clearly. The detector (faces.FaceDetector, the one that
placed the hole) runs on each composite; the hidden part's landmarks found there are
compared with those it found on the original photo, in units of the original face's
inter-ocular distance (IOD). The same detector on both sides cancels its own bias: a fill
identical to the photo scores 0.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from define_jax.data import masks

# The error of a composite on which no face is found near the original one: as far off as
# one inter-ocular distance (a face the detector no longer sees has lost its parts).
NOT_FOUND_ERROR = 1.0


def part_landmark_errors(detect: Callable[[np.ndarray], Sequence[Any]],
                         composites: np.ndarray, landmarks: np.ndarray,
                         parts: Sequence[str]) -> np.ndarray:
  """float32 [N]: for composite k [H, W, 3], the mean distance between the landmarks of
  parts[k] (masks.FACE_PARTS) that `detect` finds on it and landmarks[k] ([5, 2] pixels,
  found on the original), over the original's inter-ocular distance. The composite's face
  is the one whose landmarks lie nearest the original's; NOT_FOUND_ERROR when none lies
  within one inter-ocular distance."""
  errors = np.empty(len(composites), np.float32)
  for k, (composite, truth, part) in enumerate(zip(composites, landmarks, parts)):
    truth = np.asarray(truth, np.float64)
    interocular = float(np.linalg.norm(truth[1] - truth[0]))
    points = list(masks.FACE_PARTS[part][0])
    offsets = [np.linalg.norm(np.asarray(face.landmarks, np.float64) - truth, axis=1)
               for face in detect(composite)]  # Each face's landmarks from the photo's.
    nearest = min(offsets, default=None, key=np.mean)
    if nearest is None or nearest.mean() > interocular:
      errors[k] = NOT_FOUND_ERROR
      continue
    errors[k] = nearest[points].mean() / interocular
  return errors
