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
import os
import sys
from pathlib import Path
from typing import Sequence

import ml_collections
import numpy as np

from define_jax.eval import evaluation_set
from define_jax.eval import grids
from define_jax.eval import report
from define_jax.eval import scoring
from define_jax.inference import DEFAULT_MODEL, FITS, Inpainter
from define_jax.inference import baselines
from define_jax.inference import memory
from define_jax.runtime import compilation_cache
from define_jax.runtime import console

MODEL_METHOD = 'DeFINe'
# --masks: one hole over an eye, the nose or the mouth, placed on each image's detected face
# (rows per face part instead of per hole-ratio band).
FACE_PARTS = 'face_parts'
# Smallest evaluation size: LPIPS's VGG gives NaN below it.
MIN_IMAGE_SIZE = 16


def _mask_dir(options: argparse.Namespace, config: ml_collections.ConfigDict) -> str:
  """--mask_dir, else the training config's mask_dir when it holds masks of the same kind."""
  if options.mask_dir:
    return options.mask_dir
  if config.input.masks == options.masks and config.input.mask_dir:
    return config.input.mask_dir
  raise ValueError(f'--masks {options.masks} needs --mask_dir (a folder of its mask files).')


def build_eval_set(options: argparse.Namespace, config: ml_collections.ConfigDict,
                   size: int) -> evaluation_set.EvalSet:
  mask_dir = '' if options.masks in ('generated', FACE_PARTS) else _mask_dir(options, config)
  skipped = []
  if options.image_dir and options.split != 'validation':
    images, image_names, skipped = evaluation_set.folder_images(options.image_dir, size,
                                                                options.num_images)
    for line in skipped:
      print(f'skipped {line}', file=sys.stderr)
  else:
    images, image_names = evaluation_set.validation_images(config, size, options.num_images,
                                                           options.image_dir)
  if options.masks == FACE_PARTS:
    images, known, parts, image_names, no_face, landmarks = evaluation_set.face_part_masks(
        images, image_names, options.masks_per_image)
    for line in no_face:
      print(f'skipped {line}', file=sys.stderr)
    return evaluation_set.EvalSet(images, known, image_names, parts, skipped + no_face,
                                  groups=parts, landmarks=landmarks)
  # Each image k times in a row: with k = 6 (bands.NUM_BANDS), one mask of every band.
  images = np.repeat(images, options.masks_per_image, axis=0)
  image_names = [name for name in image_names for _ in range(options.masks_per_image)]
  if mask_dir:
    known, mask_names = evaluation_set.masks_from_dir(
        mask_dir, evaluation_set.MASK_POLARITIES[options.masks], size, len(images), options.seed)
  else:
    known, mask_names = evaluation_set.generated_masks(size, len(images), options.seed)
  return evaluation_set.EvalSet(images, known, image_names, mask_names, skipped)


def _methods(inpainter: Inpainter, with_baselines: bool,
             fit: str) -> tuple[dict[str, scoring.Method], dict[str, str]]:
  """Batch functions (images, known) -> composites in report order, and grid titles."""
  methods: dict[str, scoring.Method] = {
      MODEL_METHOD: functools.partial(inpainter.inpaint_arrays, fit=fit)}
  titles = {MODEL_METHOD: MODEL_METHOD}
  for baseline in baselines.BASELINES if with_baselines else []:
    methods[baseline.name] = baseline.inpaint_batch
    titles[baseline.name] = baseline.short_name
  return methods, titles


def report_header(options: argparse.Namespace, inpainter: Inpainter,
                  eval_set: evaluation_set.EvalSet, size: int) -> list[str]:
  if options.image_dir:
    images = (f'validation split of {options.image_dir}' if options.split == 'validation'
              else options.image_dir)
  else:
    images = f'validation split of {inpainter.config.input.dataset!r}'
  masks_from = options.mask_dir or options.masks
  header = [
      f'Checkpoint: `{options.checkpoint or f"packaged model {DEFAULT_MODEL}"}` (step {inpainter.step}, '
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


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m define_jax.evaluate', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  console.add_checkpoint_argument(parser, '--workdir')
  parser.add_argument('--out', default='',
                      help='Report directory (default: WORKDIR/eval for a workdir, ./eval '
                      'otherwise).')
  parser.add_argument('--masks', default='generated',
                      choices=['generated', FACE_PARTS, *evaluation_set.MASK_POLARITIES],
                      help='Mask kind: generated, face_parts (an eye, the nose or the mouth '
                      'of the largest face found in each image, in turn: rows per part; '
                      'use --masks_per_image 4 for every part of every face), or files with '
                      'white = hole (nvidia_irregular) or white = keep (qd_imd).')
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
                      "at native resolution), 'resize' or 'pad'; "
                      'see define_jax.inference.')
  parser.add_argument('--num_images', type=int, default=120,
                      help='Images to score (fewer if the source has fewer).')
  parser.add_argument('--masks_per_image', type=int, default=1,
                      help='Score each image with this many masks (6: one per hole-ratio '
                      'band), for folders of few photos.')
  parser.add_argument('--baselines', action='store_true',
                      help='Also score OpenCV Telea / Navier–Stokes and scikit-image biharmonic.')
  parser.add_argument('--batch_size', type=int, default=32, help='Images per scoring batch.')
  parser.add_argument('--seed', type=int, default=evaluation_set.MASK_SEED,
                      help='Seed of the mask choice.')
  parser.add_argument('--max_memory_gb', type=memory.positive_gb,
                      default=memory.DEFAULT_MAX_MEMORY_GB,
                      help='Refuse an --image_size whose inpainting with --fit (a --batch_size '
                      "batch at once for 'resize' and 'pad', one image for 'auto') would take "
                      f'more memory than this (default {memory.DEFAULT_MAX_MEMORY_GB:g}; '
                      'define_jax/inference/memory.py).')
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


def check_report_dir(options: argparse.Namespace) -> Path:
  """The report directory; ValueError before any scoring when it is a file, lies inside
  --image_dir or --mask_dir (the report would be read as input next time), or holds a file
  of a report's name that evaluate did not write (it is never overwritten)."""
  out_dir = report_dir(options)
  if out_dir.exists() and not out_dir.is_dir():
    raise ValueError(f'--out {out_dir} is a file, not a directory.')
  for option, folder in (('--image_dir', options.image_dir), ('--mask_dir', options.mask_dir)):
    if folder and Path(folder).resolve() in (out_dir.resolve(), *out_dir.resolve().parents):
      raise ValueError(f'--out {out_dir} lies inside {option} {folder}: the report would be '
                       'read as input by the next run. Choose another --out.')
  ours = report.previous_report_files(out_dir)
  foreign = [name for name in report.report_file_names()
             if (out_dir / name).exists() and name not in ours]
  if foreign:
    raise ValueError(f'--out {out_dir} already holds {", ".join(foreign)}, not written by '
                     'evaluate; choose an empty or new folder (nothing is overwritten).')
  return out_dir


def create_report_dir(out_dir: Path) -> None:
  try:
    out_dir.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise ValueError(f'Cannot create --out {out_dir}: {error.strerror or error}.') from error


def run(argv: Sequence[str]) -> dict:
  """Evaluates as the command line says; returns {'markdown', 'rows', 'out_dir'}."""
  options = parse_args(argv)
  out_dir = check_report_dir(options)
  inpainter = Inpainter.load(options.checkpoint, overrides=options.config_overrides)
  size = options.image_size or inpainter.image_size
  if size < MIN_IMAGE_SIZE:
    raise ValueError(f'--image_size {size}: LPIPS needs at least {MIN_IMAGE_SIZE}×'
                     f'{MIN_IMAGE_SIZE} pixels (its network halves the size four times).')
  per_call = 1 if options.fit == 'auto' else options.batch_size  # 'auto': image by image.
  memory.check(options.fit, size, size, f'--image_size {size}', options.max_memory_gb,
               count=per_call, network=inpainter.memory_network)
  create_report_dir(out_dir)  # Only once nothing refuses the run.
  eval_set = build_eval_set(options, inpainter.config, size)
  methods, titles = _methods(inpainter, options.baselines, options.fit)
  per_image, example_composites = scoring.score(inpainter.parallel, methods, eval_set,
                                                options.batch_size)
  rows = scoring.summarize(per_image, eval_set.bands, eval_set.groups)
  grid_files = grids.write_band_grids(out_dir, eval_set, example_composites, titles)
  header = report_header(options, inpainter, eval_set, size)
  markdown = report.write_evaluation_report(out_dir, header, rows, eval_set, per_image,
                                            grid_files, vars(options))
  return {'markdown': markdown, 'rows': rows, 'out_dir': str(out_dir)}


def main(argv: Sequence[str] | None = None) -> int:
  compilation_cache.enable()
  return console.exit_status(lambda: run(sys.argv[1:] if argv is None else argv)['markdown'])


if __name__ == '__main__':
  sys.exit(main())
