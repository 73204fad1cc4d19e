r"""Scores a model per hole-ratio band, optionally against classical inpainting.

  python -m define_jax.evaluate --checkpoint runs/ffhq256 --masks nvidia_irregular \
      --mask_dir /data/nvidia_masks --image_dir /data/faces --num_images 600 --baselines

--checkpoint is a training workdir, a checkpoint directory or a model file written by
define_jax.export; without it the packaged face model is scored. Reports L1 (×100), PSNR,
SSIM and LPIPS (VGG) of the composite (known pixels pasted back) per band of hole ratio
(0–10%, …, 50–60%, as in the PConv paper) and overall, as a Markdown table on stdout and in
OUT/report.md (--out; default WORKDIR/eval for a workdir, ./eval otherwise; a report already
there is replaced), with every per-image score in report.json and one PNG grid of examples
per band.

Images: the validation split of the checkpoint's own dataset (default, through
input_pipeline); or, with --image_dir, the first --num_images photos below it (sorted
relative paths), or with --image_dir and --split validation only the part of that folder
that training with dataset='image_folder' holds out (the same file-name rule). Images are
centre-cropped and resized to --image_size (default: the model's size) like validation.
Masks: files below --mask_dir (thresholded at 50% grey; white = hole for nvidia_irregular,
white = keep for qd_imd) or generated strokes and ellipses. Image k gets a mask of band
k mod 6, so every band is covered equally: mask files are visited in a fixed shuffled
order and sorted into bands by their hole ratio after resizing (not by their nominal band).
Everything is seeded, so the same command gives the same images, masks and numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np

from define_jax import baselines
from define_jax import input_pipeline
from define_jax import masks
from define_jax import metrics
from define_jax import visualize
from define_jax.datasets import image_folder
from define_jax.inference import Inpainter

MODEL_METHOD = 'DeFINe'
MASK_POLARITIES: dict[str, masks.MaskPolarity] = {
    'nvidia_irregular': 'hole_white', 'qd_imd': 'keep_white'}
# Hole-ratio range drawn for generated masks of each band: band 0 starts at 1% because a
# handful of hole pixels measures nothing.
_GENERATED_RANGES = [(max(low, 0.01), high) for low, high in
                     zip(metrics.BAND_EDGES[:-1], metrics.BAND_EDGES[1:])]
EXAMPLES_PER_BAND = 4
# Grid tiles are enlarged to at least this many pixels so small models' examples are visible.
_MIN_TILE = 128
OVERALL = 'All'
# Decimals shown per metric in the tables.
METRIC_DIGITS = {'l1': 2, 'psnr': 2, 'ssim': 4, 'lpips': 4}
# One jitted scorer per process, so repeated evaluations reuse its compilations.
_score_batch = jax.jit(metrics.all_metrics)

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass
class EvalSet:
  """The images and masks that every method is scored on."""

  images: np.ndarray  # float32 [N, S, S, 3] in [0, 1]
  known: np.ndarray  # float32 [N, S, S, 1], 1 = known
  image_names: list[str]
  mask_names: list[str]

  @property
  def bands(self) -> np.ndarray:
    return metrics.band_index(metrics.hole_ratio(self.known))


def load_face(path: Path, size: int) -> np.ndarray:
  """float32 [size, size, 3]: centre square crop, resized as in validation."""
  try:
    pixels = input_pipeline.decode_rgb(path.read_bytes())
  except (OSError, input_pipeline.UnreadableInputError) as error:
    raise ValueError(f'Cannot read image {path}: {error}') from error
  return input_pipeline.crop_and_resize(pixels, size, None).astype(np.float32) / 255.0


def images_from_dir(image_dir: str, size: int, count: int) -> tuple[np.ndarray, list[str]]:
  """The first `count` images below image_dir, by sorted relative path."""
  files = image_folder.list_image_files(image_dir)[:count]
  if not files:
    raise FileNotFoundError(
        f'No image files ({", ".join(image_folder.IMAGE_EXTENSIONS)}) below {image_dir}.')
  return np.stack([load_face(Path(image_dir, name), size) for name in files]), files


def images_from_validation_split(config: ml_collections.ConfigDict, size: int, count: int,
                                 image_dir: str = '') -> tuple[np.ndarray, list[str]]:
  """The fixed validation images (as training evaluates them) of the checkpoint's dataset,
  or of the image folder `image_dir` split as training would split it."""
  config = ml_collections.ConfigDict(config.to_dict())
  if image_dir:
    config.dataset, config.image_dir = 'image_folder', image_dir
  config.image_size = size
  config.num_eval_images = count
  config.masks = 'generated'  # Only the images are used; no mask set needs to be prepared.
  config.batch_size = jax.local_device_count()
  config.prefetch = 1
  images = []
  for batch in input_pipeline.create_eval_dataset(config).as_numpy_iterator():
    real = batch['weight'].reshape(-1) > 0
    images.extend(batch['image'].reshape((-1, size, size, 3))[real])
  if not images:
    raise ValueError(f'The validation split of dataset {config.dataset!r} has no readable images.')
  return np.stack(images), [f'{config.dataset} validation #{k}' for k in range(len(images))]


def _round_robin(buckets: list[list[int]], count: int) -> list[int]:
  """count items taken band by band (0, 1, …, 5, 0, …), skipping exhausted bands, and
  cycling through the taken ones again when there are fewer than count."""
  order = [bucket[i] for i in range(max(map(len, buckets), default=0))
           for bucket in buckets if i < len(bucket)]
  return [order[k % len(order)] for k in range(count)]


def masks_from_dir(mask_dir: str, polarity: masks.MaskPolarity, size: int, count: int,
                   seed: int) -> tuple[np.ndarray, list[str]]:
  """`count` masks of the files below mask_dir, bands taken in turn (see module doc)."""
  files = image_folder.list_image_files(mask_dir)
  if not files:
    raise FileNotFoundError(f'No mask files below {mask_dir}: {sorted(os.listdir(mask_dir))[:10]}')
  quota = math.ceil(count / metrics.NUM_BANDS)
  buckets: list[list[int]] = [[] for _ in range(metrics.NUM_BANDS)]
  resized: dict[int, np.ndarray] = {}
  for index in np.random.default_rng(seed).permutation(len(files)):
    if all(len(bucket) >= quota for bucket in buckets):
      break
    path = Path(mask_dir, files[index])
    try:
      known = masks.load_mask_file(path, polarity)[..., 0].astype(np.uint8)
    except (OSError, ValueError) as error:
      raise ValueError(f'Cannot read mask {path}: {error}') from error
    known = masks.resize_mask(known, (size, size))
    band = int(metrics.band_index(metrics.hole_ratio(known[None, ..., None]))[0])
    if band >= 0 and len(buckets[band]) < quota:
      buckets[band].append(int(index))
      resized[int(index)] = known
  if not resized:
    raise ValueError(f'No mask below {mask_dir} has a hole ratio in (0, 60%] at {size}² '
                     f'with polarity {polarity!r}; is --masks right?')
  chosen = _round_robin(buckets, count)
  known = np.stack([resized[i] for i in chosen])[..., None].astype(np.float32)
  return known, [files[i] for i in chosen]


def generated_masks(size: int, count: int, seed: int) -> tuple[np.ndarray, list[str]]:
  """Image k gets a generated mask with a hole ratio in band k mod 6."""
  known = []
  for k in range(count):
    band = k % metrics.NUM_BANDS
    rng = np.random.default_rng((seed, k))
    known.append(masks.generate_irregular_mask(rng, size, size, _GENERATED_RANGES[band]))
  names = [f'generated #{k} (band {metrics.band_label(k % metrics.NUM_BANDS)})'
           for k in range(count)]
  return np.stack(known)[..., None].astype(np.float32), names


def _mask_dir(options: argparse.Namespace, config: ml_collections.ConfigDict) -> str:
  """--mask_dir, else the training config's mask_dir when it holds masks of the same kind."""
  if options.mask_dir:
    return options.mask_dir
  if config.masks == options.masks and config.mask_dir:
    return config.mask_dir
  raise ValueError(f'--masks {options.masks} needs --mask_dir (a folder of its mask files).')


def build_eval_set(options: argparse.Namespace, config: ml_collections.ConfigDict,
                   size: int) -> EvalSet:
  mask_dir = '' if options.masks == 'generated' else _mask_dir(options, config)
  if options.image_dir and options.split != 'validation':
    images, image_names = images_from_dir(options.image_dir, size, options.num_images)
  else:
    images, image_names = images_from_validation_split(config, size, options.num_images,
                                                       options.image_dir)
  if mask_dir:
    known, mask_names = masks_from_dir(mask_dir, MASK_POLARITIES[options.masks], size,
                                       len(images), options.seed)
  else:
    known, mask_names = generated_masks(size, len(images), options.seed)
  return EvalSet(images, known, image_names, mask_names)


def _methods(inpainter: Inpainter, with_baselines: bool,
             size: int) -> tuple[dict[str, Method], dict[str, str]]:
  """Batch functions (images, known) -> composites in report order, and grid titles."""
  methods: dict[str, Method] = {MODEL_METHOD: inpainter.inpaint_arrays}
  titles = {MODEL_METHOD: MODEL_METHOD}
  for baseline in baselines.applicable_baselines(size) if with_baselines else []:
    methods[baseline.name] = functools.partial(_inpaint_each, baseline.inpaint)
    titles[baseline.name] = baseline.short_name
  return methods, titles


def _inpaint_each(inpaint: Callable[[np.ndarray, np.ndarray], np.ndarray], images: np.ndarray,
                  known: np.ndarray) -> np.ndarray:
  return np.stack([inpaint(image, mask) for image, mask in zip(images, known)])


def score(inpainter: Inpainter, methods: dict[str, Method], eval_set: EvalSet,
          batch_size: int) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
  """Per-image metrics of every method, and the composites of the example images.

  Inpainting and scoring run data-parallel across the local devices, batch by batch.
  """
  lpips_params = inpainter.parallel.replicate(metrics.load_lpips_params())
  examples = example_indices(eval_set.bands)
  scores = {name: {metric: [] for metric in metrics.METRICS} for name in methods}
  example_composites = {name: [] for name in methods}
  for start in range(0, len(eval_set.images), batch_size):
    images = eval_set.images[start:start + batch_size]
    known = eval_set.known[start:start + batch_size]
    in_batch = [i - start for i in examples if start <= i < start + batch_size]
    for name, method in methods.items():
      composites = np.asarray(method(images, known), np.float32)
      batch_scores = inpainter.parallel(_score_batch, lpips_params, composites, images)
      for metric, values in batch_scores.items():
        scores[name][metric].append(values)
      example_composites[name].extend(composites[in_batch])
  per_image = {name: {metric: np.concatenate(values) for metric, values in by_metric.items()}
               for name, by_metric in scores.items()}
  return per_image, {name: np.stack(c) for name, c in example_composites.items() if c}


def example_indices(bands: np.ndarray) -> list[int]:
  """The first EXAMPLES_PER_BAND images of each band, in image order."""
  chosen = [np.flatnonzero(bands == band)[:EXAMPLES_PER_BAND] for band in range(metrics.NUM_BANDS)]
  return sorted(int(i) for indices in chosen for i in indices)


def summarize(per_image: dict[str, dict[str, np.ndarray]], bands: np.ndarray) -> list[dict]:
  """Rows {band, images, method, l1 (×100), psnr, ssim, lpips}: each band, then overall."""
  groups = [(metrics.band_label(b), bands == b) for b in range(metrics.NUM_BANDS)]
  groups.append((OVERALL, bands >= 0))
  rows = []
  for label, selected in groups:
    if not selected.any():
      continue
    for method, values in per_image.items():
      row = {'band': label, 'images': int(selected.sum()), 'method': method}
      for metric in metrics.METRICS:
        mean = float(np.mean(values[metric][selected], dtype=np.float64))
        row[metric] = mean * 100.0 if metric == 'l1' else mean
      rows.append(row)
  return rows


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


def write_example_grids(out_dir: Path, eval_set: EvalSet, example_composites: dict[str, np.ndarray],
                        titles: dict[str, str]) -> list[str]:
  """band_<low>-<high>.png per band: masked input | each method | ground truth."""
  examples = example_indices(eval_set.bands)
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
    low, high = (round(100 * e) for e in metrics.BAND_EDGES[band:band + 2])
    path = out_dir / f'band_{low:02d}-{high:02d}.png'
    visualize.save_png(str(path), visualize.grid([_enlarge(c) for c in columns]),
                       titles=['input'] + [titles[name] for name in example_composites] + ['truth'])
    paths.append(path.name)
  return paths


def report_header(options: argparse.Namespace, inpainter: Inpainter, eval_set: EvalSet,
                  size: int) -> list[str]:
  if options.image_dir:
    images = (f'validation split of {options.image_dir}' if options.split == 'validation'
              else options.image_dir)
  else:
    images = f'validation split of {inpainter.config.dataset!r}'
  masks_from = options.mask_dir or options.masks
  header = [
      f'Checkpoint: `{options.checkpoint or "packaged model"}` (step {inpainter.step}, '
      f'{inpainter.config.image_size}² model), evaluated at {size}²',
      f'Images: {len(eval_set.images)} from {images}; masks: {options.masks} ({masks_from}), '
      f'seed {options.seed}',
      'Metrics of the composite (known pixels pasted back); best per band in bold.',
  ]
  if options.baselines and size > baselines.BIHARMONIC_MAX_SIZE:
    header.append(f'Biharmonic inpainting skipped: it is only run up to '
                  f'{baselines.BIHARMONIC_MAX_SIZE}².')
  return header


def write_report(out_dir: Path, header: list[str], rows: list[dict], eval_set: EvalSet,
                 per_image: dict[str, dict[str, np.ndarray]], grids: list[str],
                 options: argparse.Namespace) -> str:
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
  parser.add_argument('--checkpoint', '--workdir', dest='checkpoint', default='',
                      help='Training workdir, checkpoint directory or model file from '
                      'define_jax.export (default: the packaged face model).')
  parser.add_argument('--out', default='',
                      help='Report directory (default: WORKDIR/eval for a workdir, ./eval '
                      'otherwise).')
  parser.add_argument('--masks', default='generated', choices=['generated', *MASK_POLARITIES],
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
                      "sizes are inpainted through Inpainter's resize, like users' photos.")
  parser.add_argument('--num_images', type=int, default=120,
                      help='Images to score (fewer if the source has fewer).')
  parser.add_argument('--baselines', action='store_true',
                      help='Also score OpenCV Telea / Navier–Stokes and scikit-image biharmonic.')
  parser.add_argument('--batch_size', type=int, default=32, help='Images per scoring batch.')
  parser.add_argument('--seed', type=int, default=0, help='Seed of the mask choice.')
  options = parser.parse_args(argv)
  if options.num_images < 1 or options.batch_size < 1 or options.image_size < 0:
    parser.error('--num_images and --batch_size must be positive, --image_size non-negative.')
  if options.split == 'all' and not options.image_dir:
    parser.error('--split all needs --image_dir.')
  return options


def report_dir(options: argparse.Namespace) -> Path:
  if options.out:
    return Path(options.out)
  if options.checkpoint and os.path.isdir(options.checkpoint):
    return Path(options.checkpoint, 'eval')
  return Path('eval')


def run(argv: Sequence[str]) -> dict:
  """Evaluates as the command line says; returns {'markdown', 'rows', 'out_dir'}."""
  options = parse_args(argv)
  inpainter = Inpainter.load(options.checkpoint)
  size = options.image_size or inpainter.image_size
  eval_set = build_eval_set(options, inpainter.config, size)
  methods, titles = _methods(inpainter, options.baselines, size)
  per_image, example_composites = score(inpainter, methods, eval_set, options.batch_size)
  rows = summarize(per_image, eval_set.bands)
  out_dir = report_dir(options)
  if out_dir.exists() and not out_dir.is_dir():
    raise ValueError(f'--out {out_dir} is a file, not a directory.')
  out_dir.mkdir(parents=True, exist_ok=True)
  grids = write_example_grids(out_dir, eval_set, example_composites, titles)
  header = report_header(options, inpainter, eval_set, size)
  markdown = write_report(out_dir, header, rows, eval_set, per_image, grids, options)
  return {'markdown': markdown, 'rows': rows, 'out_dir': str(out_dir)}


def main(argv: Sequence[str] | None = None) -> int:
  try:
    result = run(sys.argv[1:] if argv is None else argv)
  except (FileNotFoundError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  print(result['markdown'])
  return 0


if __name__ == '__main__':
  sys.exit(main())
