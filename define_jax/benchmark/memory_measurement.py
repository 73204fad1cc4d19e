"""Measures peak memory of inference per photo size and fits define_jax.inference.memory's model.

`python -m define_jax.benchmark memory` runs each path once per photo size in a child
process (niced, without the compilation cache, so each run compiles as a user's first photo
of a size does), which writes its peak resident set size (VmHWM: that of its own program,
unlike getrusage, which counts the forking parent's pages too) when it exits:
  decode  reading the photo and its mask (image_files.open_image and the pixel arrays);
  auto, resize, pad  `python -m define_jax.inpaint --fit ...` with the packaged model;
  demo    the demo's inference path (demo.Demo.inpaint: editor layers, the network with
          fit='auto' and OpenCV's Telea beside it).
The photo is the public-domain astronaut scaled to the size, its face partly a hole, so
fit='auto' finds a face and fills it through its aligned crop. A least-squares line
per path, peak = baseline + bytes per pixel × pixels, is the model; memory.py holds its
rounded-up coefficients. With --at_limit GB each path runs once at its largest square photo
under that bound (memory.max_pixels), which checks the model where it matters.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from define_jax.inference import memory
from define_jax.runtime import compilation_cache

# Prefixed to every child's program: its peak resident memory (kB) to DEFINE_JAX_PEAK_FILE
# at exit.
_PEAK_AT_EXIT = """
import atexit, os, sys
def _write_peak():
  with open('/proc/self/status') as status:
    peak = next(line for line in status if line.startswith('VmHWM:')).split()[1]
  with open(os.environ['DEFINE_JAX_PEAK_FILE'], 'w') as out:
    out.write(peak)
atexit.register(_write_peak)
"""

_INPAINT = """
import runpy
sys.argv[0] = 'inpaint'
runpy.run_module('define_jax.inpaint', run_name='__main__')
"""

_DECODE = """
from define_jax.files import image_files
photo, mask = sys.argv[1:3]
image_files.photo_pixels(image_files.open_image(photo, max_pixels=None), photo)
image_files.mask_pixels(image_files.open_image(mask, max_pixels=None), mask)
"""

_DEMO = """
import numpy as np
from PIL import Image
from define_jax.demo import demo
from define_jax.files import image_files
from define_jax.inference import Inpainter
photo, mask = sys.argv[1:3]
background = image_files.open_image(photo, max_pixels=None).convert('RGB')
holes = np.asarray(image_files.open_image(mask, max_pixels=None).convert('L')) > 127
layer = np.zeros(holes.shape + (4,), np.uint8)
layer[holes] = (255, 0, 255, 255)
value = {'background': background, 'layers': [Image.fromarray(layer)],
         'composite': background}
demo.Demo(Inpainter.pretrained(), max_memory_gb=1000).inpaint(value)
"""


def write_photo(directory: Path, side: int) -> tuple[Path, Path]:
  """The astronaut scaled to side×side (PNG) and a hole_white mask over half of its face."""
  import skimage.data

  photo = Image.fromarray(skimage.data.astronaut()).resize((side, side), Image.BICUBIC)
  photo_path, mask_path = directory / f'photo_{side}.png', directory / f'mask_{side}.png'
  photo.save(photo_path, compress_level=1)
  mask = np.zeros((side, side), np.uint8)
  scale = side / 512  # The face lies around rows 40..200, columns 150..300 of the 512² photo.
  mask[round(110 * scale):round(170 * scale), round(170 * scale):round(280 * scale)] = 255
  Image.fromarray(mask).save(mask_path)
  return photo_path, mask_path


def command(path: str, photo: Path, mask: Path, out: Path) -> list[str]:
  """The child's argv: Python running `path` on the photo, writing its peak at exit."""
  if path in ('decode', 'demo'):
    return [sys.executable, '-c', _PEAK_AT_EXIT + (_DECODE if path == 'decode' else _DEMO),
            str(photo), str(mask)]
  return [sys.executable, '-c', _PEAK_AT_EXIT + _INPAINT, '--image', str(photo), '--mask',
          str(mask), '--polarity', 'hole_white', '--fit', path, '--out', str(out),
          '--overwrite', '--max_memory_gb', '1000']


def peak_rss_bytes(argv: Sequence[str]) -> int:
  """Runs argv niced; the child's peak resident set size. RuntimeError if it fails."""
  with tempfile.TemporaryDirectory(prefix='define_jax_peak_') as directory:
    peak_file = Path(directory, 'peak_kb')
    # No compilation cache: every run compiles, as a user's first photo of a size does.
    done = subprocess.run(['nice', '-n', '10', *argv], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False,
                          env={**os.environ, compilation_cache.ENV_VAR: 'off',
                               'DEFINE_JAX_PEAK_FILE': str(peak_file)})
    if done.returncode != 0 or not peak_file.exists():
      raise RuntimeError(f'{" ".join(argv[3:6])} … failed ({done.returncode}): '
                         f'{done.stderr.decode(errors="replace")[-2000:]}')
    return int(peak_file.read_text()) * 1024


def fit_line(pixels: Sequence[float], peaks: Sequence[float]) -> tuple[float, float]:
  """(baseline bytes, bytes per pixel) of the least-squares line through the points."""
  slope, intercept = np.polyfit(np.asarray(pixels, np.float64), np.asarray(peaks, np.float64),
                                1)
  return float(intercept), float(slope)


def measure(sides_by_path: dict[str, Sequence[int]]) -> dict[str, dict[int, int]]:
  """Peak RSS in bytes of each path at each of its sides."""
  peaks: dict[str, dict[int, int]] = {path: {} for path in sides_by_path}
  with tempfile.TemporaryDirectory(prefix='define_jax_memory_') as directory:
    for side in sorted({side for sides in sides_by_path.values() for side in sides}):
      photo, mask = write_photo(Path(directory), side)
      for path in (path for path, sides in sides_by_path.items() if side in sides):
        peaks[path][side] = peak_rss_bytes(command(path, photo, mask,
                                                   Path(directory, f'out_{path}.png')))
        print(f'{path:>6} {side}²: {peaks[path][side] / memory.GB:.2f} GB', file=sys.stderr,
              flush=True)
  return peaks


def limit_sides(paths: Sequence[str], max_memory_gb: float) -> dict[str, list[int]]:
  """Each path's largest square photo under the bound, by memory.py's model."""
  return {path: [math.isqrt(memory.max_pixels(path, max_memory_gb))] for path in paths}


def limit_report(peaks: dict[str, dict[int, int]], max_memory_gb: float) -> str:
  """A Markdown table: each path at its limit, estimated and measured peak."""
  lines = [f'At the limit of {max_memory_gb:g} GB on {machine()}:', '',
           '| path | photo | estimated peak (GB) | measured peak (GB) |', '|---|---|---|---|']
  for path, by_side in peaks.items():
    for side, peak in by_side.items():
      lines.append(f'| {path} | {side}² | {memory.peak_bytes(path, side * side) / memory.GB:.2f}'
                   f' | {peak / memory.GB:.2f} |')
  return '\n'.join(lines)


def machine() -> str:
  return f'{os.cpu_count()}-core {platform.machine()} CPU, {platform.system()}'


def report(peaks: dict[str, dict[int, int]]) -> tuple[str, dict[str, dict[str, float]]]:
  """A Markdown table (peak GB per path and size, the fitted line) and the fitted model."""
  sides = sorted({side for by_side in peaks.values() for side in by_side})
  lines = [f'Peak RSS (GB) on {machine()}:', '',
           '| path | ' + ' | '.join(f'{s}²' for s in sides) + ' | baseline (GB) | bytes/pixel |',
           '|---' * (len(sides) + 3) + '|']
  model = {}
  for path, by_side in peaks.items():
    baseline, per_pixel = fit_line([s * s for s in by_side], list(by_side.values()))
    model[path] = {'baseline_gb': round(baseline / memory.GB, 3),
                   'bytes_per_pixel': round(per_pixel, 1)}
    cells = [f'{by_side[s] / memory.GB:.2f}' if s in by_side else '' for s in sides]
    lines.append(f'| {path} | ' + ' | '.join(cells) +
                 f' | {baseline / memory.GB:.2f} | {per_pixel:.0f} |')
  return '\n'.join(lines), model


def run(paths: Sequence[str], sides: Sequence[int], at_limit: float | None) -> dict:
  """Prints the table (per size, or with `at_limit` each path at its limit under that many
  GB); returns benchmark's JSON row."""
  row = {'benchmark': 'memory', 'machine': machine()}
  if at_limit:
    peaks = measure(limit_sides(paths, at_limit))
    print(limit_report(peaks, at_limit), flush=True)
    return {**row, 'max_memory_gb': at_limit, 'peak_bytes': peaks}
  table, model = report(measure({path: sides for path in paths}))
  print(table, flush=True)
  return {**row, 'sides': list(sides), 'model': model}
