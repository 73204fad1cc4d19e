r"""Scores a model per hole-ratio band, optionally against classical inpainting.

  python -m define_jax.evaluate --checkpoint runs/ffhq256 --masks nvidia_irregular \
      --mask_dir /data/nvidia_masks --image_dir /data/faces --num_images 600 --baselines

--checkpoint is a training workdir, a checkpoint directory or a model file written by
define_jax.export; without it the packaged face model is scored. Reports L1 (×100), PSNR,
SSIM, LPIPS-VGG and LPIPS-Alex of the composite (known pixels pasted back) per band of hole ratio
(0–10%, …, 50–60%, as in the PConv paper) and overall, as a Markdown table on stdout and in
OUT/report.md (--out; default WORKDIR/eval for a workdir, ./eval otherwise; a report already
there is replaced, but no other file, and --out may not lie inside --image_dir or --mask_dir;
both are checked before scoring), with every per-image score in report.json and one PNG grid
of examples per band. Unreadable files below --image_dir are skipped, counted and listed.

Images: the validation split of the checkpoint's own dataset (default, as training-time
evaluation reads it); or, with --image_dir, the first --num_images photos below it (sorted
relative paths), or with --image_dir and --split validation only the part of that folder
that training with dataset='image_folder' holds out (the same file-name rule). Images are
centre-cropped and resized to --image_size (default: the model's size) like validation.
Masks: files below --mask_dir (thresholded at 50% grey; white = hole for nvidia_irregular,
white = keep for qd_imd) or generated strokes and ellipses. Image k gets a mask of band
k mod 6, so every band is covered equally: mask files are visited in a fixed shuffled
order and sorted into bands by their hole ratio after resizing (not by their nominal band).
Everything is seeded, so the same command gives the same images, masks and numbers.

--config.SECTION.FIELD=VALUE overrides the checkpoint's stored config, e.g.
--config.model.dtype=bfloat16 (inference precision) or --config.input.image_dir=DIR (the
folder whose validation split is scored when the training run's folder is elsewhere).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import ml_collections
import numpy as np
from tqdm import tqdm

from define_jax import baselines
from define_jax import compilation_cache
from define_jax import console
from define_jax import metrics
from define_jax import scoring
from define_jax import visualize
from define_jax.data import evaluation
from define_jax.inference import FITS, Inpainter

MODEL_METHOD = 'DeFINe'
# Grid tiles are enlarged to at least this many pixels so small models' examples are visible.
_MIN_TILE = 128
# Smallest evaluation size: LPIPS's VGG gives NaN below it.
MIN_IMAGE_SIZE = 16
# Decimals shown per metric in the tables.
METRIC_DIGITS = {'l1': 2, 'psnr': 2, 'ssim': 4, 'lpips': 4, 'lpips_alex': 4}


def _mask_dir(options: argparse.Namespace, config: ml_collections.ConfigDict) -> str:
  """--mask_dir, else the training config's mask_dir when it holds masks of the same kind."""
  if options.mask_dir:
    return options.mask_dir
  if config.input.masks == options.masks and config.input.mask_dir:
    return config.input.mask_dir
  raise ValueError(f'--masks {options.masks} needs --mask_dir (a folder of its mask files).')


def build_eval_set(options: argparse.Namespace, config: ml_collections.ConfigDict,
                   size: int) -> evaluation.EvalSet:
  mask_dir = '' if options.masks == 'generated' else _mask_dir(options, config)
  skipped = []
  if options.image_dir and options.split != 'validation':
    images, image_names, skipped = evaluation.folder_images(options.image_dir, size,
                                                            options.num_images)
    for line in skipped:
      print(f'skipped {line}', file=sys.stderr)
  else:
    images, image_names = evaluation.validation_images(config, size, options.num_images,
                                                       options.image_dir)
  # Each image k times in a row: with k = 6 (metrics.NUM_BANDS), one mask of every band.
  images = np.repeat(images, options.masks_per_image, axis=0)
  image_names = [name for name in image_names for _ in range(options.masks_per_image)]
  if mask_dir:
    known, mask_names = evaluation.masks_from_dir(
        mask_dir, evaluation.MASK_POLARITIES[options.masks], size, len(images), options.seed)
  else:
    known, mask_names = evaluation.generated_masks(size, len(images), options.seed)
  return evaluation.EvalSet(images, known, image_names, mask_names, skipped)


def _methods(inpainter: Inpainter, with_baselines: bool,
             fit: str) -> tuple[dict[str, scoring.Method], dict[str, str]]:
  """Batch functions (images, known) -> composites in report order, and grid titles."""
  methods: dict[str, scoring.Method] = {
      MODEL_METHOD: functools.partial(inpainter.inpaint_arrays, fit=fit)}
  titles = {MODEL_METHOD: MODEL_METHOD}
  for baseline in baselines.BASELINES if with_baselines else []:
    methods[baseline.name] = functools.partial(_inpaint_each, baseline)
    titles[baseline.name] = baseline.short_name
  return methods, titles


def _inpaint_each(baseline: baselines.Baseline, images: np.ndarray,
                  known: np.ndarray) -> np.ndarray:
  """One image at a time, with a progress bar on a terminal (biharmonic takes seconds per
  image at 512² and more)."""
  pairs = tqdm(zip(images, known), total=len(images), desc=baseline.short_name, unit='image',
               leave=False, disable=None)
  return np.stack([baseline.inpaint(image, mask) for image, mask in pairs])


def best_per_group(rows: list[dict]) -> set[tuple[int, str]]:
  """(row index, metric) of the best method of each band and metric, for bold type."""
  best = set()
  for band in {row['band'] for row in rows}:
    indices = [i for i, row in enumerate(rows) if row['band'] == band]
    if len(indices) < 2:
      continue
    for metric, (_, higher_is_better) in metrics.METRICS.items():
      pick = max if higher_is_better else min
      best.add((pick(indices, key=lambda i: rows[i][metric]), metric))
  return best


def markdown_table(rows: list[dict]) -> str:
  headings = ['Hole ratio', 'Images', 'Method'] + [h for h, _ in metrics.METRICS.values()]
  best = best_per_group(rows)
  lines = ['| ' + ' | '.join(headings) + ' |', '|' + '---|' * 3 + '---:|' * len(metrics.METRICS)]
  previous_band = None
  for i, row in enumerate(rows):
    first = row['band'] != previous_band
    previous_band = row['band']
    cells = [row['band'] if first else '', str(row['images']) if first else '', row['method']]
    for metric in metrics.METRICS:
      text = f'{row[metric]:.{METRIC_DIGITS[metric]}f}'
      cells.append(f'**{text}**' if (i, metric) in best else text)
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _enlarge(images: np.ndarray) -> np.ndarray:
  factor = max(1, math.ceil(_MIN_TILE / images.shape[1]))
  return images.repeat(factor, axis=1).repeat(factor, axis=2)


def grid_name(band: int) -> str:
  low, high = (round(100 * e) for e in metrics.BAND_EDGES[band:band + 2])
  return f'band_{low:02d}-{high:02d}.png'


def write_example_grids(out_dir: Path, eval_set: evaluation.EvalSet,
                        example_composites: dict[str, np.ndarray],
                        titles: dict[str, str]) -> list[str]:
  """band_<low>-<high>.png per band: masked input | each method | ground truth."""
  examples = scoring.example_indices(eval_set.bands)
  example_bands = eval_set.bands[examples]
  images, known = eval_set.images[examples], eval_set.known[examples]
  paths = []
  for band in range(metrics.NUM_BANDS):
    rows = example_bands == band
    if not rows.any():
      continue
    columns = [visualize.masked_input(images[rows], known[rows])]
    columns += [composites[rows] for composites in example_composites.values()]
    columns.append(images[rows])
    path = out_dir / grid_name(band)
    visualize.save_png(str(path), visualize.grid([_enlarge(c) for c in columns]),
                       titles=['input'] + [titles[name] for name in example_composites] + ['truth'])
    paths.append(path.name)
  return paths


def report_header(options: argparse.Namespace, inpainter: Inpainter,
                  eval_set: evaluation.EvalSet, size: int) -> list[str]:
  if options.image_dir:
    images = (f'validation split of {options.image_dir}' if options.split == 'validation'
              else options.image_dir)
  else:
    images = f'validation split of {inpainter.config.input.dataset!r}'
  masks_from = options.mask_dir or options.masks
  header = [
      f'Checkpoint: `{options.checkpoint or "packaged model"}` (step {inpainter.step}, '
      f'{inpainter.config.model.image_size}² model), evaluated at {size}² with '
      f'fit={options.fit!r}',
      f'Images: {len(eval_set.images)} from {images}'
      f'{f" (each with {options.masks_per_image} masks)" if options.masks_per_image > 1 else ""}'
      f'; masks: {options.masks} ({masks_from}), '
      f'seed {options.seed}',
      'Metrics of the composite (known pixels pasted back); best per band in bold.',
  ]
  if eval_set.skipped:
    header.append(f'{len(eval_set.skipped)} unreadable image files skipped: ' +
                  '; '.join(eval_set.skipped))
  return header


def write_report(out_dir: Path, header: list[str], rows: list[dict],
                 eval_set: evaluation.EvalSet, per_image: dict[str, dict[str, np.ndarray]],
                 grids: list[str], options: argparse.Namespace) -> str:
  markdown = '\n'.join(['# DeFINe evaluation', ''] + [f'- {line}' for line in header] +
                       ['', markdown_table(rows), ''] + [f'![{g}]({g})' for g in grids]) + '\n'
  (out_dir / 'report.md').write_text(markdown, encoding='utf-8')
  hole_ratios = metrics.hole_ratio(eval_set.known)
  records = [{'image': eval_set.image_names[k], 'mask': eval_set.mask_names[k],
              'hole_ratio': float(hole_ratios[k]),
              'band': metrics.band_label(int(eval_set.bands[k])),
              'scores': {method: {m: float(v[m][k]) for m in metrics.METRICS}
                         for method, v in per_image.items()}}
             for k in range(len(eval_set.images))]
  report = {'options': vars(options), 'header': header, 'l1_scale': 100, 'rows': rows,
            'grids': grids, 'per_image': records}
  (out_dir / 'report.json').write_text(json.dumps(report, indent=1, ensure_ascii=False),
                                       encoding='utf-8')
  return markdown


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m define_jax.evaluate', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  console.add_checkpoint_argument(parser, '--workdir')
  parser.add_argument('--out', default='',
                      help='Report directory (default: WORKDIR/eval for a workdir, ./eval '
                      'otherwise).')
  parser.add_argument('--masks', default='generated',
                      choices=['generated', *evaluation.MASK_POLARITIES],
                      help='Mask kind: generated, or files with white = hole (nvidia_irregular) '
                      'or white = keep (qd_imd).')
  parser.add_argument('--mask_dir', default='', help='Folder of mask files of the --masks kind.')
  parser.add_argument('--image_dir', default='',
                      help="Any folder of face photos instead of the checkpoint's dataset.")
  parser.add_argument('--split', choices=['validation', 'all'],
                      help="With --image_dir: 'all' (default) its photos, or 'validation' the "
                      'part training holds out. Without: always the validation split.')
  parser.add_argument('--image_size', type=int, default=0,
                      help="Evaluation resolution (default: the model's training size); other "
                      "sizes are inpainted through Inpainter with --fit, like users' photos.")
  parser.add_argument('--fit', default='auto', choices=FITS,
                      help="How the model sees images of another size or framing than its "
                      "training faces: 'auto' (each face through its aligned crop, the rest "
                      "native biharmonic plus the network's correction), 'resize' or 'pad'; "
                      'see define_jax.inference.')
  parser.add_argument('--num_images', type=int, default=120,
                      help='Images to score (fewer if the source has fewer).')
  parser.add_argument('--masks_per_image', type=int, default=1,
                      help='Score each image with this many masks (6: one per hole-ratio '
                      'band), for folders of few photos.')
  parser.add_argument('--baselines', action='store_true',
                      help='Also score OpenCV Telea / Navier–Stokes and scikit-image biharmonic.')
  parser.add_argument('--batch_size', type=int, default=32, help='Images per scoring batch.')
  parser.add_argument('--seed', type=int, default=evaluation.MASK_SEED,
                      help='Seed of the mask choice.')
  # --config.SECTION.FIELD=VALUE: changes the checkpoint's stored config (see above).
  options = console.parse_with_config_overrides(parser, argv)
  if (options.num_images < 1 or options.batch_size < 1 or options.masks_per_image < 1
      or options.image_size < 0):
    parser.error('--num_images, --batch_size and --masks_per_image must be positive, '
                 '--image_size non-negative.')
  if options.split == 'all' and not options.image_dir:
    parser.error('--split all needs --image_dir.')
  return options


def report_dir(options: argparse.Namespace) -> Path:
  if options.out:
    return Path(options.out)
  if options.checkpoint and os.path.isdir(options.checkpoint):
    return Path(options.checkpoint, 'eval')
  return Path('eval')


def _report_file_names() -> list[str]:
  """Every file name evaluate may write into its report directory."""
  return ['report.md', 'report.json'] + [grid_name(band) for band in range(metrics.NUM_BANDS)]


def _written_by_evaluate(out_dir: Path) -> set[str]:
  """The files of a previous report in out_dir, as its report.json lists them."""
  try:
    report = json.loads((out_dir / 'report.json').read_text(encoding='utf-8'))
    return {'report.md', 'report.json', *report['grids']} if 'per_image' in report else set()
  except (OSError, ValueError, KeyError, TypeError):
    return set()


def prepare_report_dir(options: argparse.Namespace) -> Path:
  """The report directory, created; ValueError before any scoring when it is a file, lies
  inside --image_dir or --mask_dir (the report would be read as input next time), or holds
  a file of a report's name that evaluate did not write (it is never overwritten)."""
  out_dir = report_dir(options)
  if out_dir.exists() and not out_dir.is_dir():
    raise ValueError(f'--out {out_dir} is a file, not a directory.')
  for option, folder in (('--image_dir', options.image_dir), ('--mask_dir', options.mask_dir)):
    if folder and Path(folder).resolve() in (out_dir.resolve(), *out_dir.resolve().parents):
      raise ValueError(f'--out {out_dir} lies inside {option} {folder}: the report would be '
                       'read as input by the next run. Choose another --out.')
  ours = _written_by_evaluate(out_dir)
  foreign = [name for name in _report_file_names()
             if (out_dir / name).exists() and name not in ours]
  if foreign:
    raise ValueError(f'--out {out_dir} already holds {", ".join(foreign)}, not written by '
                     'evaluate; choose an empty or new folder (nothing is overwritten).')
  try:
    out_dir.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise ValueError(f'Cannot create --out {out_dir}: {error.strerror or error}.') from error
  return out_dir


def run(argv: Sequence[str]) -> dict:
  """Evaluates as the command line says; returns {'markdown', 'rows', 'out_dir'}."""
  options = parse_args(argv)
  out_dir = prepare_report_dir(options)
  inpainter = Inpainter.load(options.checkpoint, overrides=options.config_overrides)
  size = options.image_size or inpainter.image_size
  if size < MIN_IMAGE_SIZE:
    raise ValueError(f'--image_size {size}: LPIPS needs at least {MIN_IMAGE_SIZE}×'
                     f'{MIN_IMAGE_SIZE} pixels (its network halves the size four times).')
  eval_set = build_eval_set(options, inpainter.config, size)
  methods, titles = _methods(inpainter, options.baselines, options.fit)
  per_image, example_composites = scoring.score(inpainter.parallel, methods, eval_set,
                                                options.batch_size)
  rows = scoring.summarize(per_image, eval_set.bands)
  grids = write_example_grids(out_dir, eval_set, example_composites, titles)
  header = report_header(options, inpainter, eval_set, size)
  markdown = write_report(out_dir, header, rows, eval_set, per_image, grids, options)
  return {'markdown': markdown, 'rows': rows, 'out_dir': str(out_dir)}


def main(argv: Sequence[str] | None = None) -> int:
  compilation_cache.enable()
  return console.exit_status(lambda: run(sys.argv[1:] if argv is None else argv)['markdown'])


if __name__ == '__main__':
  sys.exit(main())
