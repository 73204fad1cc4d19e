r"""Figures for a model card: training curves of a run and a before/after on a public photo.

  python -m define_jax.tools.model_card_figures --checkpoint faces128.msgpack \
      --workdir runs/faces128 --out docs/pretrained

Writes OUT/curves.png (the run's training loss and evaluation L1/PSNR, from its TensorBoard
events) and OUT/astronaut.png: scikit-image's public-domain astronaut portrait with
hand-drawn holes | scikit-image biharmonic | Telea | the model | the photo. No licensed
training image appears in either figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import skimage.data

from define_jax.eval import grids
from define_jax.eval import scoring
from define_jax.inference import Inpainter
from define_jax.inference import baselines
from define_jax.runtime import console
from define_jax.training import training_curves


def astronaut_face(size: int) -> np.ndarray:
  """float32 [size, size, 3]: the astronaut's face, framed like an aligned face crop."""
  photo = skimage.data.astronaut()[20:240, 110:330]
  return cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def astronaut_holes(size: int) -> np.ndarray:
  """float32 [size, size, 1] known-mask: a thin scratch, a brush stroke over an eye and the
  mouth, and a blob on the cheek."""
  hole = np.zeros((size, size), np.uint8)
  scale = size / 128
  points = lambda p: (np.asarray(p) * scale).astype(np.int32)
  cv2.polylines(hole, [points([[10, 20], [60, 35], [118, 15]])], False, 1, max(1, int(scale)))
  cv2.polylines(hole, [points([[35, 50], [55, 58], [75, 85], [70, 100]])], False, 1,
                int(7 * scale))
  cv2.ellipse(hole, tuple(points([95, 80])), tuple(points([10, 14])), 20, 0, 360, 1, -1)
  return (1 - hole).astype(np.float32)[..., None]


def astronaut_comparison(methods: dict[str, scoring.Method],
                         size: int) -> tuple[np.ndarray, list[str]]:
  """The astronaut face and holes at size², filled by every method: input | each method |
  photo, enlarged to at least 256 pixels; and the column titles."""
  image, known = astronaut_face(size)[None], astronaut_holes(size)[None]
  columns = grids.comparison(image, known, [fill(image, known) for fill in methods.values()])
  return grids.grid([grids.enlarge(c, 256) for c in columns]), ['input', *methods, 'photo']


def before_after(inpainter: Inpainter) -> tuple[np.ndarray, list[str]]:
  return astronaut_comparison({'biharmonic': baselines.BIHARMONIC.inpaint_batch,
                               'Telea': baselines.TELEA.inpaint_batch,
                               'DeFINe': inpainter.inpaint_arrays}, inpainter.image_size)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m define_jax.tools.model_card_figures',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  console.add_checkpoint_argument(parser)
  parser.add_argument('--workdir', default='',
                      help='Training workdir whose TensorBoard events give the curves.')
  parser.add_argument('--out', required=True, help='Directory for the PNG files.')
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  options = parse_args(sys.argv[1:] if argv is None else argv)
  out = Path(options.out)

  def write_figures() -> str:
    inpainter = Inpainter.load(options.checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    picture, titles = before_after(inpainter)
    grids.save_png(str(out / 'astronaut.png'), picture, titles=titles)
    written = ['astronaut.png']
    if options.workdir:
      curves = training_curves.read(Path(options.workdir))
      if not curves:
        raise ValueError(f'No training curves in {options.workdir}.')
      training_curves.plot(out / 'curves.png', {Path(options.workdir).name: curves})
      written.append('curves.png')
    return f'Wrote {", ".join(str(out / name) for name in written)}.'

  return console.exit_status(write_figures)

if __name__ == '__main__':
  sys.exit(main())
