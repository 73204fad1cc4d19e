"""Peak memory of inference per photo size (measured), and the photo limit it implies.

A photo costs memory in proportion to its pixels: the decoded photo and mask, their float32
copies, resize buffers, and, where the network runs at the photo's own resolution ('pad',
and 'auto', whose native fill is a 'pad' pass), the network's activations on a canvas of
the photo's size. Each way through inference (a `Path`: a fit, the decoding alone, or the
demo, which also keeps the editor's layers and runs OpenCV's Telea) is modelled as a line,

  peak = baseline + bytes per pixel × pixels,

fitted to measured peak resident memory and rounded up. A path's photo limit is where its
line meets the bound (--max_memory_gb, default 4 GB); it is checked from the file's
header before anything is decoded, so a small file claiming a huge size never allocates.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import math
import os
import warnings
from typing import Any, Literal

import numpy as np
from PIL import Image

from define_jax.files.image_files import InputError, pixel_count

Path = Literal['decode', 'resize', 'pad', 'auto', 'demo']
GB = 1e9
DEFAULT_MAX_MEMORY_GB = 4.0


@dataclasses.dataclass(frozen=True)
class Cost:
  """Peak memory of one path: baseline_gb + bytes_per_pixel × photo pixels, of which
  network_bytes_per_pixel (the network's activations at the photo's resolution) grows with
  the model's width."""

  baseline_gb: float
  bytes_per_pixel: float
  network_bytes_per_pixel: float = 0.0


# Measured with `python -m define_jax.benchmark memory` (memory_measurement.py: peak
# resident memory of a child process, compiling without the cache, the packaged faces128
# model with 32 base features; square photos 512², 1024², 2048², 3000²) on this project's
# 2-core x86-64 CPU, shared. Fitted lines (baseline GB + bytes per pixel), GB at 3000²:
#   decode 0.05 + 14 (0.17), resize 0.66 + 98 (1.55), pad 0.62 + 312 (3.43),
#   auto 0.79 + 321 (3.71), demo 0.78 + 346 (3.89);
# rounded up below (baseline +0.15 GB or more for the compiler's variation, about 10 % more
# per pixel). At their limits under 4 GB (`benchmark memory --at_limit 4`) the paths
# peaked at 3.42 to 3.48 GB. 'resize' runs the network on the model's canvas only: its
# cost per pixel is the photo's float copies and resizing; the network at the photo's
# resolution adds about 215 bytes per pixel ('pad' less 'resize'). XLA on CPU; an
# accelerator keeps the network's activations in its own memory instead. 'auto' with the
# biharmonic base under a face larger than the canvas (its sparse solve bounded by
# baselines.EXACT_BIHARMONIC_HOLES) was re-checked with a 46 % hole, a face found on it: 0.79
# GB at 512² and 1.27 GB at 1024², under this model's 1.09 and 1.37 GB.
COSTS: dict[str, Cost] = {
    'decode': Cost(0.1, 16.0),
    'resize': Cost(0.8, 110.0),
    'pad': Cost(0.8, 340.0, 230.0),
    'auto': Cost(1.0, 350.0, 230.0),
    'demo': Cost(1.0, 380.0, 230.0),
}
# The width the network's share was measured at; wider models cost more per pixel.
MEASURED_BASE_FEATURES = 32

_DESCRIPTIONS = {'decode': 'decoding it', 'resize': "inpainting it with fit='resize'",
                 'pad': "inpainting it with fit='pad'", 'auto': "inpainting it with fit='auto'",
                 'demo': 'inpainting it in the demo'}


def _per_pixel(path: str, base_features: int) -> float:
  cost = COSTS[path]
  wider = max(1.0, base_features / MEASURED_BASE_FEATURES)
  return cost.bytes_per_pixel + cost.network_bytes_per_pixel * (wider - 1.0)


def peak_bytes(path: str, pixels: int, base_features: int = MEASURED_BASE_FEATURES) -> float:
  """Estimated peak resident memory of `path` on a photo (or batch) of `pixels` pixels."""
  return COSTS[path].baseline_gb * GB + _per_pixel(path, base_features) * pixels


def max_pixels(path: str, max_memory_gb: float,
               base_features: int = MEASURED_BASE_FEATURES) -> int:
  """The most pixels `path` handles under max_memory_gb (0 when the baseline is over it)."""
  room = max_memory_gb * GB - COSTS[path].baseline_gb * GB
  return max(0, math.floor(room / _per_pixel(path, base_features)))


def check(path: str, width: int, height: int, name: str, max_memory_gb: float | None, *,
          count: int = 1, base_features: int = MEASURED_BASE_FEATURES) -> None:
  """InputError (reason 'too large') when `count` photos of width×height would take `path`
  over max_memory_gb (None: no bound)."""
  pixels = width * height * count
  if max_memory_gb is None or pixels <= max_pixels(path, max_memory_gb, base_features):
    return
  limit = max_pixels(path, max_memory_gb, base_features)
  photos = f'{count} photos of ' if count > 1 else ''
  raise InputError(
      f'{name} is {photos}{width}×{height} ({pixel_count(pixels)}): {_DESCRIPTIONS[path]} '
      f'would peak at about {peak_bytes(path, pixels, base_features) / GB:.3g} GB, over the '
      f'bound of {max_memory_gb:g} GB (max_memory_gb, --max_memory_gb), which allows '
      f'{pixel_count(limit)} (about {math.isqrt(limit)}×{math.isqrt(limit)}). Downscale it '
      'or raise the bound.', 'too large')


def photo_size(item: Any) -> tuple[int, int, int] | None:
  """(width, height, count) of a photo without decoding it: a file (path or bytes) from its
  header, a PIL image, an array [H, W(, C)] or batch [N, H, W, C], or a list of one of
  these (its first item's size, times its length); None where the header cannot be read
  (the reader then says why)."""
  if isinstance(item, (list, tuple)):
    first = photo_size(item[0]) if item else None
    return None if first is None else (first[0], first[1], len(item))
  if isinstance(item, Image.Image):
    return (*item.size, 1)
  if isinstance(item, np.ndarray):
    if item.ndim == 4:
      return item.shape[2], item.shape[1], item.shape[0]
    return (item.shape[1], item.shape[0], 1) if item.ndim >= 2 else None
  if isinstance(item, (bytes, bytearray)):
    item = io.BytesIO(item)
  elif not isinstance(item, (str, os.PathLike)):
    return None
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      with Image.open(item) as image:  # Lazy: reads the header only.
        return (*image.size, 1)
  except Exception:  # pylint: disable=broad-except
    return None  # Unreadable (or over Pillow's bomb limit): the reader reports it.


def check_input(path: str, item: Any, name: str, max_memory_gb: float | None, *,
                base_features: int = MEASURED_BASE_FEATURES) -> None:
  """check() on a photo's size as photo_size reads it, before anything is decoded."""
  size = photo_size(item) if max_memory_gb is not None else None
  if size is not None:
    check(path, size[0], size[1], name, max_memory_gb, count=size[2],
          base_features=base_features)


def positive_gb(text: str) -> float:
  value = float(text)
  if not 0 < value < math.inf:
    raise argparse.ArgumentTypeError(f'must be a positive number of GB, got {text}')
  return value


def limits_text(max_memory_gb: float, paths: tuple[str, ...] = ('auto', 'pad', 'resize')
                ) -> str:
  """'about 8.6 megapixels with --fit auto, … pad, … resize' under max_memory_gb."""
  return 'about ' + ', '.join(
      pixel_count(max_pixels(path, max_memory_gb)) +
      (' in the demo' if path == 'demo' else f' with --fit {path}') for path in paths)


def add_argument(parser: argparse.ArgumentParser,
                 paths: tuple[str, ...] = ('auto', 'pad', 'resize')) -> None:
  """--max_memory_gb, its help naming the photo limit of each of `paths`."""
  parser.add_argument(
      '--max_memory_gb', type=positive_gb, default=DEFAULT_MAX_MEMORY_GB,
      help='Refuse photos whose inpainting would take more memory than this many GB, '
      "estimated from the size in the file's header before decoding (default "
      f'{DEFAULT_MAX_MEMORY_GB:g}: {limits_text(DEFAULT_MAX_MEMORY_GB, paths)}; '
      'define_jax/inference/memory.py).')
