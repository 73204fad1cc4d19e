"""Image grids for TensorBoard, PNG files and reports, drawn with NumPy and Pillow (no JAX):
the example grids of `evaluate`, the study and training.

A comparison shows the masked input, each method's composite and the ground truth side by
side; examples are the images scoring.score kept the composites of.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from define_jax.data import bands
from define_jax.eval.evaluation_set import EvalSet

# A hole shown in the masked input: mid grey, so it reads as "missing" on faces.
HOLE_GREY = 0.5
# Tiles of evaluate's band grids are enlarged to at least this many pixels so small models'
# examples are visible.
MIN_BAND_GRID_TILE = 128
# Rows of the study's grid: one per band, spread over the bands that have images.
SPREAD_GRID_ROWS = 4


def masked_input(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """The network's view: known pixels, holes painted grey."""
  return image * mask + HOLE_GREY * (1.0 - mask)


def grid(columns: Sequence[np.ndarray], *, max_rows: int = 8, pad: int = 2) -> np.ndarray:
  """Tiles equally shaped [N,H,W,C] batches as columns (C=1 is shown as grey) into one
  float image [rows*(H+pad)-pad, cols*(W+pad)-pad, 3] in [0, 1], white separators."""
  columns = [np.clip(np.asarray(c, np.float32)[:max_rows], 0.0, 1.0) for c in columns]
  columns = [np.repeat(c, 3, axis=-1) if c.shape[-1] == 1 else c for c in columns]
  rows, height, width, _ = columns[0].shape
  out = np.ones((rows * (height + pad) - pad, len(columns) * (width + pad) - pad, 3), np.float32)
  for col, batch in enumerate(columns):
    for row in range(rows):
      top, left = row * (height + pad), col * (width + pad)
      out[top:top + height, left:left + width] = batch[row]
  return out


def inpainting_grid(image: np.ndarray, mask: np.ndarray, composite: np.ndarray, *,
                    max_rows: int = 8) -> np.ndarray:
  """masked input | mask | composite | ground truth."""
  return grid([masked_input(image, mask), mask, composite, image], max_rows=max_rows)


def to_uint8(image: np.ndarray) -> np.ndarray:
  """[0, 1] -> 0..255; NaN (a diverged model's output) shows as black."""
  return np.round(np.clip(np.nan_to_num(image, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)


def save_png(path: str, image: np.ndarray, *, titles: Sequence[str] | None = None) -> None:
  """Writes an image in [0, 1] as PNG atomically; optional column titles in a header strip.

  Also into a bucket (gs://...): Pillow writes only local files, so a remote picture is
  written to a temporary file and copied.
  """
  if '://' in path:
    from etils import epath  # pylint: disable=g-import-not-at-top  # Only for remote workdirs.

    with tempfile.TemporaryDirectory() as local_dir:
      local = os.path.join(local_dir, os.path.basename(path))
      save_png(local, image, titles=titles)
      target = epath.Path(path)
      target.parent.mkdir(parents=True, exist_ok=True)
      epath.Path(local).copy(target, overwrite=True)
    return
  picture = Image.fromarray(to_uint8(image))
  if titles:
    header = 14
    canvas = Image.new('RGB', (picture.width, picture.height + header), 'white')
    canvas.paste(picture, (0, header))
    draw = ImageDraw.Draw(canvas)
    step = picture.width / len(titles)
    for i, title in enumerate(titles):
      draw.text((int(i * step) + 2, 1), title, fill='black')
    picture = canvas
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp'
  picture.save(tmp, format='PNG')
  os.replace(tmp, path)


def comparison(images: np.ndarray, known: np.ndarray,
               composites: Sequence[np.ndarray]) -> list[np.ndarray]:
  """The columns masked input | each composite | ground truth."""
  return [masked_input(images, known), *composites, images]


def enlarge(images: np.ndarray, min_size: int) -> np.ndarray:
  """Images [N, H, W, C] repeated by a whole factor to at least min_size pixels high."""
  factor = max(1, math.ceil(min_size / images.shape[1]))
  return images.repeat(factor, axis=1).repeat(factor, axis=2)


def band_grid_name(band: int) -> str:
  low, high = (round(100 * e) for e in bands.BAND_EDGES[band:band + 2])
  return f'band_{low:02d}-{high:02d}.png'


def write_band_grids(out_dir: Path, eval_set: EvalSet, example_composites: dict[str, np.ndarray],
                     titles: dict[str, str]) -> list[str]:
  """band_<low>-<high>.png per band: masked input | each method | ground truth."""
  examples = bands.example_indices(eval_set.bands)
  example_bands = eval_set.bands[examples]
  images, known = eval_set.images[examples], eval_set.known[examples]
  paths = []
  for band in range(bands.NUM_BANDS):
    rows = example_bands == band
    if not rows.any():
      continue
    columns = comparison(images[rows], known[rows],
                         [composites[rows] for composites in example_composites.values()])
    path = out_dir / band_grid_name(band)
    save_png(str(path), grid([enlarge(c, MIN_BAND_GRID_TILE) for c in columns]),
             titles=['input'] + [titles[name] for name in example_composites] + ['truth'])
    paths.append(path.name)
  return paths


def _short_titles(names: Sequence[str]) -> list[str]:
  """Names without their common prefix up to an underscore (loss_l1 -> l1), for grid titles."""
  common = os.path.commonprefix(list(names))
  cut = common.rfind('_') + 1
  return [name[cut:] for name in names]


def write_spread_grid(path: Path, eval_set: EvalSet,
                      example_composites: dict[str, np.ndarray]) -> list[int]:
  """masked input | every method | truth, one row per band spread over the populated bands;
  returns the evaluation-set indices shown."""
  # The composites that scoring.score kept: the first few images of each band.
  examples = np.asarray(bands.example_indices(eval_set.bands))
  example_bands = eval_set.bands[examples]
  populated = sorted(set(example_bands.tolist()))
  spread = np.linspace(0, len(populated) - 1,
                       min(SPREAD_GRID_ROWS, len(populated))).round().astype(int)
  rows = [int(np.flatnonzero(example_bands == populated[k])[0]) for k in spread]
  shown = examples[rows]
  columns = comparison(eval_set.images[shown], eval_set.known[shown],
                       [composites[rows] for composites in example_composites.values()])
  titles = ['input'] + _short_titles(list(example_composites)) + ['truth']
  save_png(str(path), grid(columns, max_rows=SPREAD_GRID_ROWS), titles=titles)
  return [int(i) for i in shown]
