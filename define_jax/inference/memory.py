"""Peak memory of inference per photo size (measured) and the photo limit it implies; and
the train step's memory per device (XLA's analysis), with the batch each card holds.

A photo costs memory in proportion to its pixels (the decoded photo and mask, their float32
copies, resize buffers, the fills at its resolution) and to the pixels of the network
canvases it needs at once: for 'resize' the model's canvas; for 'pad' the photo's own,
each side padded up to a size the U-Net accepts (a 1×150,000 strip needs a 128×150,016
canvas, 128 times its pixels); for 'auto' and the demo that and one batch of FACE_BATCH
face canvases (auto_fit runs the faces batch by batch, whatever their number). Each way
through inference (a `Path`: a fit, the decoding alone, or the demo, which also keeps the
editor's layers and runs OpenCV's Telea) is modelled as

  peak = baseline + bytes per photo pixel × photo pixels
                  + bytes per canvas pixel × canvas pixels (× the network's width / 32),

fitted to measured peak resident memory and rounded up. A photo over the bound
(--max_memory_gb, default 4 GB) is refused from the file's header before anything is
decoded, so a small file claiming a huge size never allocates; a batch is split into calls
that fit (Inpainter), and only a photo that alone cannot fit is refused.

The train step's peak per device is XLA's memory analysis of the compiled step
(`step_peak_bytes`); `python -m define_jax.benchmark memory --train --config FILE` tables it
with the largest batch per device that CARD_GB cards hold at JAX's default memory fraction
(docs/memory.md), and training warns before its first step when a device would not hold it.
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
# Face canvases auto_fit sends through the network at once (memory counts one such batch).
FACE_BATCH = 8
# Accelerator memory (GB) of the cards the train step's batch is tabled for, and the share
# of it JAX takes by default (XLA_PYTHON_CLIENT_MEM_FRACTION; launch/ raises it to 0.90).
CARD_GB = (16, 24, 40, 80)
JAX_MEMORY_FRACTION = 0.75


@dataclasses.dataclass(frozen=True)
class Cost:
  """Peak memory of one path: baseline_gb + bytes_per_pixel × photo pixels +
  network_bytes_per_pixel × canvas pixels (the network's activations, padded inputs and
  outputs, growing with the model's width)."""

  baseline_gb: float
  bytes_per_pixel: float
  network_bytes_per_pixel: float = 0.0


@dataclasses.dataclass(frozen=True)
class Network:
  """What the canvases cost: the model's canvas side, the multiple each padded side is
  rounded up to (2 ** levels) and the width of its first level."""

  size: int = 128
  multiple: int = 128
  base_features: int = 32


# The default packaged model (faces256: 256², 7 levels, 32 base features). COSTS was measured
# with faces128 (128², the same levels and width), whose canvas pixels cost the same.
PACKAGED = Network(size=256)

# Measured with `python -m define_jax.benchmark memory` (memory_measurement.py: peak
# resident memory of a child process, compiling without the cache, the packaged faces128
# model; square photos 512², 1024², 2048², 3000²) on this project's 2-core x86-64 CPU,
# shared. Fitted lines (baseline GB + bytes per photo pixel), GB at 3000²:
#   decode 0.05 + 14 (0.17), resize 0.66 + 98 (1.55), pad 0.62 + 312 (3.43),
#   auto 0.79 + 321 (3.71), demo 0.78 + 346 (3.89);
# rounded up below (baseline +0.15 GB or more for the compiler's variation, about 10 % more
# per pixel). 'resize' runs the network on the model's canvas only, so its cost per pixel
# is the photo's float copies and resizing; the network on a canvas of the photo's size
# adds about 215 bytes per canvas pixel ('pad' less 'resize'; 230 here). XLA on CPU; an
# accelerator keeps the network's activations in its own memory instead. At their limits
# under 4 GB (`benchmark memory --at_limit 4`) the paths peaked at 3.42 to 3.48 GB. 'auto'
# with the biharmonic base under a face larger than the canvas (its sparse solve bounded by
# baselines.EXACT_BIHARMONIC_HOLES) was re-checked with a 46 % hole, a face found on it: 0.79
# GB at 512² and 1.27 GB at 1024², under this model's 1.09 and 1.37 GB. Photos with many
# faces and thin strips: see README "Memory".
COSTS: dict[str, Cost] = {
    'decode': Cost(0.1, 16.0),
    'resize': Cost(0.8, 110.0, 230.0),
    'pad': Cost(0.8, 110.0, 230.0),
    'auto': Cost(1.0, 120.0, 230.0),
    'demo': Cost(1.0, 150.0, 230.0),
}
# The width the network's share was measured at; wider models cost more per canvas pixel.
MEASURED_BASE_FEATURES = 32
# Bytes per pixel of a batch's results kept while its later photos are inpainted (float32).
RESULT_BYTES_PER_PIXEL = 12

_DESCRIPTIONS = {'decode': 'decoding it', 'resize': "inpainting it with fit='resize'",
                 'pad': "inpainting it with fit='pad'", 'auto': "inpainting it with fit='auto'",
                 'demo': 'inpainting it in the demo'}


def padded_canvas(height: int, width: int, size: int, multiple: int) -> tuple[int, int]:
  """fit='pad''s canvas of a height×width photo: each side at least `size` and a multiple of
  `multiple` (the U-Net's total downsampling)."""
  return tuple(max(size, math.ceil(side / multiple) * multiple) for side in (height, width))


def canvas_pixels(path: str, height: int, width: int, network: Network = PACKAGED) -> int:
  """Pixels of the network canvases one photo of `path` needs at once (see the docstring)."""
  if path == 'decode':
    return 0
  model_canvas = network.size * network.size
  if path == 'resize':
    return model_canvas
  canvas_height, canvas_width = padded_canvas(height, width, network.size, network.multiple)
  faces = FACE_BATCH * model_canvas if path in ('auto', 'demo') else 0
  return canvas_height * canvas_width + faces


def peak_bytes(path: str, height: int, width: int, count: int = 1,
               network: Network = PACKAGED) -> float:
  """Estimated peak resident memory of `path` on `count` photos of height×width at once."""
  cost = COSTS[path]
  wider = max(1.0, network.base_features / MEASURED_BASE_FEATURES)
  per_photo = (cost.bytes_per_pixel * height * width +
               cost.network_bytes_per_pixel * wider * canvas_pixels(path, height, width, network))
  return cost.baseline_gb * GB + count * per_photo


def max_side(path: str, max_memory_gb: float, network: Network = PACKAGED) -> int:
  """The largest side of a square photo that `path` handles under max_memory_gb (0 when
  none does)."""
  low, high = 0, 1
  while peak_bytes(path, high, high, network=network) <= max_memory_gb * GB:
    low, high = high, 2 * high
  while high - low > 1:  # peak_bytes(low²) fits, peak_bytes(high²) does not.
    middle = (low + high) // 2
    if peak_bytes(path, middle, middle, network=network) <= max_memory_gb * GB:
      low = middle
    else:
      high = middle
  return low


def max_pixels(path: str, max_memory_gb: float, network: Network = PACKAGED) -> int:
  """The pixels of the largest square photo `path` handles under max_memory_gb."""
  return max_side(path, max_memory_gb, network) ** 2


def check(path: str, width: int, height: int, name: str, max_memory_gb: float | None, *,
          count: int = 1, network: Network = PACKAGED) -> None:
  """InputError (reason 'too large') when `count` photos of width×height at once would take
  `path` over max_memory_gb (None: no bound)."""
  peak = peak_bytes(path, height, width, count, network)
  if max_memory_gb is None or peak <= max_memory_gb * GB:
    return
  side = max_side(path, max_memory_gb, network)
  photos = f'{count} photos of ' if count > 1 else ''
  canvas = ''
  if path != 'decode' and path != 'resize':
    canvas_height, canvas_width = padded_canvas(height, width, network.size, network.multiple)
    if canvas_height * canvas_width > 1.5 * height * width:
      canvas = (f', padded to a {canvas_width}×{canvas_height} network canvas '
                f'({pixel_count(canvas_height * canvas_width)})')
  raise InputError(
      f'{name} is {photos}{width}×{height} ({pixel_count(count * width * height)}){canvas}: '
      f'{_DESCRIPTIONS[path]} would peak at about {peak / GB:.3g} GB, over the bound of '
      f'{max_memory_gb:g} GB (max_memory_gb, --max_memory_gb), which allows square photos of '
      f'{pixel_count(side * side)} (about {side}×{side}). Downscale it or raise the bound.',
      'too large')


def photos_per_call(path: str, width: int, height: int, count: int, name: str,
                    max_memory_gb: float | None, network: Network = PACKAGED) -> int:
  """How many of `count` photos of width×height to inpaint at once under max_memory_gb: all
  when they fit, else as many as fit beside the results of all `count` (kept until the last
  call). InputError when not even one photo fits."""
  if max_memory_gb is None:
    return count
  check(path, width, height, name, max_memory_gb, network=network)  # One photo must fit.
  if peak_bytes(path, height, width, count, network) <= max_memory_gb * GB:
    return count
  baseline = COSTS[path].baseline_gb * GB
  kept = count * width * height * RESULT_BYTES_PER_PIXEL
  per_photo = peak_bytes(path, height, width, 1, network) - baseline
  fitting = math.floor((max_memory_gb * GB - baseline - kept) / per_photo)
  if fitting < 1:
    raise InputError(
        f'{name} is {count} photos of {width}×{height}: their results alone take about '
        f'{kept / GB:.3g} GB, too much beside inpainting one of them under the bound of '
        f'{max_memory_gb:g} GB (max_memory_gb, --max_memory_gb). Pass fewer photos per call '
        'or raise the bound.', 'too large')
  return min(count, fitting)


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
                network: Network = PACKAGED) -> int | None:
  """photos_per_call on a photo's (or batch's) size as photo_size reads it, before anything
  is decoded: InputError when one photo alone is over the bound; else how many photos of a
  batch to inpaint at once, or None for all of them (also when there is no bound or the
  size cannot be read: the reader then says why)."""
  size = photo_size(item) if max_memory_gb is not None else None
  if size is None:
    return None
  width, height, count = size
  at_once = photos_per_call(path, width, height, count, name, max_memory_gb, network)
  return None if at_once >= count else at_once


def positive_gb(text: str) -> float:
  value = float(text)
  if not 0 < value < math.inf:
    raise argparse.ArgumentTypeError(f'must be a positive number of GB, got {text}')
  return value


def limits_text(max_memory_gb: float, paths: tuple[str, ...] = ('auto', 'pad', 'resize')
                ) -> str:
  """'about 8.6 megapixels with --fit auto, … pad, … resize' (square photos, the packaged
  model) under max_memory_gb."""
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


def step_peak_bytes(compiled: Any) -> int:
  """Peak memory per device of a compiled (pmapped) step by XLA's memory analysis: its
  arguments and temporaries, and the outputs not written over donated arguments."""
  stats = compiled.memory_analysis()
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes
          - stats.alias_size_in_bytes + stats.temp_size_in_bytes)


def device_memory_limit() -> int | None:
  """The bytes JAX may use of the first local device (on GPU and TPU: its allocator's limit,
  XLA_PYTHON_CLIENT_MEM_FRACTION of the card); None where unknown (CPU)."""
  import jax  # pylint: disable=g-import-not-at-top  # Only training asks.

  stats = jax.local_devices()[0].memory_stats()
  return stats.get('bytes_limit') if stats else None


def largest_batch(fixed_bytes: float, bytes_per_image: float, budget_bytes: float) -> int:
  """The most images per device whose step stays within the budget (0: not even one)."""
  return max(0, math.floor((budget_bytes - fixed_bytes) / bytes_per_image))
