"""Image grids for TensorBoard, PNG files and reports (NumPy + Pillow only)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

# A hole shown in the masked input: mid grey, so it reads as "missing" on faces.
HOLE_GREY = 0.5


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
  """Writes an image in [0, 1] as PNG atomically; optional column titles in a header strip."""
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
