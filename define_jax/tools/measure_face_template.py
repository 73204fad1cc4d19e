r"""Measures the mean five face landmarks of a model's training faces, in its canvas framing.

  python -m define_jax.tools.measure_face_template --image_dir ../shared/data/faces \
      --num_images 2000

The files are those of the training split of `dataset='image_folder'` (split by file name,
--validation_fraction, the training run's config.validation_fraction), an evenly spaced
sample of them.
Training frames each photo as its square crop across the shorter side (the whole photo
for UTKFace's 200x200 crops) resized to the canvas, mirrored left-right half of the time;
the landmarks are measured on that square at the photo's resolution, as fractions of its
side, and the mean is averaged with its mirror image, as the flips make the model see it.
Prints the template (faces.FACE_TEMPLATE's values), the spread and how many faces were found,
then how far the training faces (and their mirror images) sit from the template: the
similarity transform taking each face's landmarks onto it, its scale, rotation and the shift
of the landmarks' centre, as percentiles (faces.FRAMING_SPREAD's values).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from define_jax.data import image_folder
from define_jax.faces import align
from define_jax.faces import faces
from define_jax.files import image_files

LANDMARK_NAMES = ('left eye', 'right eye', 'nose', 'left mouth', 'right mouth')
# Left-right mirroring maps each landmark onto this one (the eyes and mouth corners swap).
_MIRRORED = (1, 0, 2, 4, 3)


def mirrored(landmarks: np.ndarray) -> np.ndarray:
  """[..., 5, 2] fractions of the canvas, as they are in the left-right flipped canvas."""
  flipped = landmarks[..., _MIRRORED, :].copy()
  flipped[..., 0] = 1.0 - flipped[..., 0]
  return flipped


def canvas_landmarks(detector: faces.FaceDetector, image: np.ndarray) -> np.ndarray | None:
  """The best face's landmarks as fractions of the training crop's square, or None."""
  height, width = image.shape[:2]
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  found = detector(image[top:top + side, left:left + side])
  if not found:
    return None
  return faces.canvas_fractions(found[0].landmarks, side)


def framing_offsets(points: np.ndarray, template: np.ndarray) -> np.ndarray:
  """[N, 3]: |log scale|, |rotation| (radians) and the largest per-axis shift of the
  landmarks' centre (fraction of the side) of the similarity transform taking each face's
  landmarks points [N, 5, 2] (fractions of the canvas) onto the template."""
  offsets = []
  for landmarks in points:
    matrix = align.similarity_transform(landmarks, template)
    shift = np.abs(template.mean(axis=0) - landmarks.mean(axis=0)).max()
    offsets.append((abs(math.log(align.scale_of(matrix))),
                    abs(align.rotation_of(matrix)), shift))
  return np.array(offsets)


def training_files(image_dir: Path, validation_fraction: float, num_images: int) -> list[str]:
  files = image_folder.list_image_files(image_dir)
  train, _ = image_folder.split_image_files(files, validation_fraction)
  if not train:
    raise ValueError(f'{image_dir}: no training images')
  picks = np.linspace(0, len(train) - 1, min(num_images, len(train))).round().astype(int)
  return [train[i] for i in picks]


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m define_jax.tools.measure_face_template',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--image_dir', required=True, help='the training photo folder')
  parser.add_argument('--num_images', type=int, default=2000,
                      help='how many training photos to measure (evenly spaced)')
  parser.add_argument('--validation_fraction', type=float, default=0.1,
                      help="the training run's config.validation_fraction (configs/default.py)")
  args = parser.parse_args(argv)

  image_dir = Path(args.image_dir)
  try:
    files = training_files(image_dir, args.validation_fraction, args.num_images)
  except (FileNotFoundError, ValueError) as error:
    print(f'--image_dir: {error}', file=sys.stderr)
    sys.exit(2)
  detector = faces.FaceDetector.pretrained()
  measured, missed, start = [], [], time.time()
  for i, name in enumerate(files, 1):
    try:
      image = image_files.read_photo(image_dir / name, max_pixels=None)
    except image_files.InputError as error:
      print(f'skipped {error}', file=sys.stderr)
      continue
    landmarks = canvas_landmarks(detector, image)
    if landmarks is None:
      missed.append(name)
    else:
      measured.append(landmarks)
    if i % 200 == 0 or i == len(files):
      print(f'{i}/{len(files)} photos, {len(measured)} faces, {time.time() - start:.0f} s',
            flush=True)
  if not measured:
    print('No face found in any photo: no template.', file=sys.stderr)
    sys.exit(1)
  points = np.stack(measured)
  mean = points.mean(axis=0)
  template = (mean + mirrored(mean)) / 2
  spread = points.std(axis=0)
  print(f'\nFaces found in {len(measured)} of {len(files)} training photos of {image_dir} '
        f'({len(missed)} without a face{": " + ", ".join(missed[:5]) if missed else ""}'
        f'{" ..." if len(missed) > 5 else ""}).')
  print('landmark       mean x  mean y   std x   std y   template x, y (mirror-averaged)')
  for k, label in enumerate(LANDMARK_NAMES):
    print(f'{label:12s}  {mean[k, 0]:6.4f}  {mean[k, 1]:6.4f}  {spread[k, 0]:6.4f}  '
          f'{spread[k, 1]:6.4f}   {template[k, 0]:.4f}, {template[k, 1]:.4f}')
  rows = ', '.join(f'[{x:.4f}, {y:.4f}]' for x, y in template)
  print(f'\nFACE_TEMPLATE = np.array([{rows}], np.float32)')
  offsets = framing_offsets(np.concatenate([points, mirrored(points)]), template)
  print('\nFraming of the training faces against the template (and their mirror images):')
  print('percentile  |log scale|  |rotation| deg  |centre shift| (fraction of the side)')
  for q in (50, 90, 95, 99):
    log_scale, rotation, shift = np.percentile(offsets, q, axis=0)
    print(f'{q:10d}  {log_scale:11.4f}  {math.degrees(rotation):14.2f}  {shift:.4f}')
  log_scale, rotation, shift = np.percentile(offsets, faces.FRAMING_PERCENTILE, axis=0)
  print(f'\nFRAMING_SPREAD = FramingSpread(log_scale={log_scale:.4f}, '
        f'rotation={rotation:.4f}, shift={shift:.4f})')


if __name__ == '__main__':
  main()
