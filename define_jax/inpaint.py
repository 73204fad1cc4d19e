r"""Inpaints photos from the command line, with the packaged face model or a checkpoint.

One image (the packaged model unless --checkpoint names a workdir or an exported file):
  python -m define_jax.inpaint --image face.jpg --mask holes.png --polarity hole_white \
      --out filled.png

A folder (masks matched by relative path without extension, e.g. a/b.jpg <- a/b.png;
results written as PNG under the same relative path):
  python -m define_jax.inpaint --checkpoint runs/ffhq256 --images photos/ --masks masks/ \
      --polarity keep_white --out filled/

--polarity says which mask pixels are holes: hole_white (white = hole, e.g. NVIDIA masks)
or keep_white (white = keep, e.g. qd-imd masks). A mask whose only values are 0 and 1 is
binary (1 = white); a mask of one colour with varying transparency is read from its alpha
(opaque = white). Masks must have the image's size unless --resize_mask is given, be
black and white with anti-aliased edges at most (see image_files.known_pixels; thresholded at
--mask_threshold, mid-grey by default) and keep at least one pixel unless
--allow_all_hole is given. Images over --max_pixels (50 megapixels by default), and photos
whose inpainting with --fit would need more memory than --max_memory_gb (4 GB by default:
about 8.6 megapixels with --fit auto, 9.4 with pad, 29 with resize; define_jax/inference/memory.py),
are refused from their header, before decoding.

Nothing is lost: an input is never overwritten (not even with --overwrite), an existing
output needs --overwrite, two inputs that would be written to one output (x.jpg and x.png)
stop the run before it starts, and results are written atomically and exclusively (of two
runs into one folder, the later writer of a file skips it). In folder mode a file that fails
is reported with its name and skipped; the run ends with "N written, M skipped (reasons)"
and exit status 1 if anything was skipped; Ctrl-C or SIGTERM prints that summary too and
exits with 130, and --skip_existing lets the rerun count finished outputs as done. Errors
that stop the run are one `error: ...` line with exit status 2.

--config.SECTION.FIELD=VALUE overrides the checkpoint's stored config, e.g.
--config.model.dtype=bfloat16 (inference precision).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path
from typing import Sequence

from PIL import Image
from tqdm import tqdm

from define_jax.data import image_folder
from define_jax.files import image_files
from define_jax.files import output_files
from define_jax.files.image_files import InputError
from define_jax.inference import FITS, Inpainter
from define_jax.inference import inference
from define_jax.inference import memory
from define_jax.runtime import compilation_cache
from define_jax.runtime import console

# Formats that hold 16-bit greys; others get 8-bit results.
_SIXTEEN_BIT_FORMATS = ('PNG', 'TIFF')


def save_format(out: Path) -> str:
  """Pillow's format for an output path; InputError unless it is one Pillow can write."""
  image_format = Image.registered_extensions().get(out.suffix.lower())
  if image_format is None or image_format not in Image.SAVE:
    raise InputError(f'--out {out}: "{out.suffix or "no extension"}" is not an image format '
                     'that can be written; use .png, .jpg, .webp, .tif or .bmp.', 'bad output')
  return image_format


def check_image_out(out: Path, inputs: Sequence[Path], overwrite: bool) -> None:
  """InputError unless `out` can be written without destroying anything."""
  if out.is_dir():
    raise InputError(f'--out {out} is a directory; give a file name, e.g. {out / "filled.png"}.',
                     'bad output')
  for ancestor in out.parents:  # The nearest existing ancestor must be a directory.
    if ancestor.exists():
      if not ancestor.is_dir():
        raise InputError(f'Cannot write {out}: {ancestor} is a file, not a directory.',
                         'bad output')
      break
  for source in inputs:
    if out.exists() and source.exists() and os.path.samefile(out, source) or (
        out.resolve() == source.resolve()):
      raise InputError(f'--out {out} is the input {source}; choose another output name '
                       '(inputs are never overwritten).', 'would overwrite input')
  if out.exists() and not overwrite:
    raise InputError(f'{out} exists; pass --overwrite to replace it.', 'output exists')


def write_atomically(image: Image.Image, out: Path, replace: bool) -> None:
  """Saves `image` to `out` with output_files.write_file: atomically, never replacing a
  file unless `replace`, even one another run wrote meanwhile (InputError 'output exists')."""
  image_format = save_format(out)
  if image_format not in _SIXTEEN_BIT_FORMATS:
    image = image_files.to_8bit(image)
  if image.mode == 'F':
    image = image_files.to_8bit(image)  # Float TIFFs are rarely wanted; keep 8 bit.
  out.parent.mkdir(parents=True, exist_ok=True)
  try:
    output_files.write_file(out, lambda file: image.save(file, format=image_format),
                            replace=replace)
  except output_files.OutputExistsError:
    raise InputError(f'{out} exists (written meanwhile by another run); pass --overwrite to '
                     'replace it.', 'output exists') from None


def inpaint_file(inpainter: Inpainter, image_path: Path, mask_path: Path, out_path: Path,
                 options: argparse.Namespace) -> None:
  check_image_out(out_path, (image_path, mask_path), options.overwrite)
  inpainter.check_memory(image_path, str(image_path), options.fit, options.max_memory_gb)
  image = image_files.open_image(image_path, max_pixels=options.max_pixels)
  mask = image_files.open_image(mask_path, max_pixels=options.max_pixels)
  if image.size != mask.size and not options.resize_mask:
    raise InputError(f'{mask_path} is {mask.width}×{mask.height} but {image_path} is '
                     f'{image.width}×{image.height}; pass --resize_mask to resize masks.',
                     'size mismatch')
  try:
    result = inpainter(image, image_files.mask_pixels(mask, str(mask_path)),
                       polarity=options.polarity, passes=options.passes, fit=options.fit,
                       resize_mask=options.resize_mask, allow_all_hole=options.allow_all_hole,
                       max_pixels=options.max_pixels, max_memory_gb=options.max_memory_gb,
                       mask_threshold=options.mask_threshold)
  except InputError as error:
    message = str(error).replace('The mask', str(mask_path)).replace('The image',
                                                                      str(image_path))
    if str(mask_path) not in message and str(image_path) not in message:
      message = f'{image_path} with mask {mask_path}: {message}'
    raise InputError(message, error.reason) from error
  write_atomically(result, out_path, options.overwrite)
  if options.fit == 'auto':  # Which faces went through their aligned crop; any upscaling.
    tqdm.write(f'{image_path}: {inpainter.last_fit_reports[0].describe()}', file=sys.stderr)


def pair_with_masks(images_dir: str, masks_dir: str) -> list[tuple[str, str]]:
  """(image, mask) relative paths matched by relative path without extension."""
  for option, folder in (('--images', images_dir), ('--masks', masks_dir)):
    if not os.path.isdir(folder):
      raise InputError(f'{option} {folder} is not a directory.', 'bad input')
  images = image_folder.list_image_files(images_dir)
  if not images:
    raise InputError(f'No image files below {images_dir}.', 'missing')
  masks_by_stem: dict[str, str] = {}
  for mask in image_folder.list_image_files(masks_dir):
    stem = str(Path(mask).with_suffix(''))
    if stem in masks_by_stem:
      raise InputError(f'Two masks for {stem}: {Path(masks_dir, masks_by_stem[stem])} and '
                       f'{Path(masks_dir, mask)}.', 'ambiguous')
    masks_by_stem[stem] = mask
  unmatched = [i for i in images if str(Path(i).with_suffix('')) not in masks_by_stem]
  if unmatched:
    raise InputError(
        f'{len(unmatched)} of {len(images)} images have no mask of the same name in '
        f'{masks_dir}, e.g. {", ".join(str(Path(images_dir, u)) for u in unmatched[:5])}.',
        'missing')
  return [(i, masks_by_stem[str(Path(i).with_suffix(''))]) for i in images]


def plan_folder(options: argparse.Namespace) -> list[tuple[Path, Path, Path]]:
  """(image, mask, output) paths; InputError before anything is written if two inputs map
  to one output or an output would overwrite an input."""
  plan = [(Path(options.images, image), Path(options.masks, mask),
           Path(options.out, image).with_suffix('.png'))
          for image, mask in pair_with_masks(options.images, options.masks)]
  by_output: dict[Path, list[Path]] = collections.defaultdict(list)
  for image, _, out in plan:
    by_output[out.resolve()].append(image)
  clashes = [images for images in by_output.values() if len(images) > 1]
  if clashes:
    shown = '; '.join(' and '.join(map(str, images)) for images in clashes[:5])
    raise InputError(f'{len(clashes)} output names would be written twice: {shown} map to the '
                     'same PNG. Rename one of each, or run them separately.', 'ambiguous')
  inputs = {path.resolve(): path for image, mask, _ in plan for path in (image, mask)}
  for _, _, out in plan:
    if out.resolve() in inputs:
      raise InputError(f'--out {options.out} would overwrite the input {inputs[out.resolve()]}; '
                       'choose another output folder.', 'would overwrite input')
  return plan


def inpaint_folder(inpainter: Inpainter, plan: list[tuple[Path, Path, Path]],
                   options: argparse.Namespace) -> int:
  """Inpaints every planned file; prints 'N written, M skipped (reasons)', also after
  Ctrl-C or SIGTERM; returns the exit status (0, 1 if anything was skipped, 130 if
  interrupted). With --skip_existing, existing outputs count as done, not as skipped."""
  skipped: collections.Counter[str] = collections.Counter()
  written = already_done = 0
  interrupted = False
  try:
    for image, mask, out in tqdm(plan, unit='image', desc='Inpainting'):
      try:
        if options.skip_existing and out.exists():
          already_done += 1
          continue
        inpaint_file(inpainter, image, mask, out, options)
        written += 1
      except InputError as error:
        if options.skip_existing and error.reason == 'output exists':
          already_done += 1  # Another run wrote it meanwhile.
          continue
        skipped[error.reason] += 1
        tqdm.write(f'skipped {image}: {error}', file=sys.stderr)
      except OSError as error:  # e.g. the disk is full: name the file, go on.
        skipped['write failed'] += 1
        tqdm.write(f'skipped {image}: cannot write {out}: {error}', file=sys.stderr)
  except KeyboardInterrupt:
    interrupted = True
  reasons = ', '.join(f'{count} {reason}'
                      for reason, count in sorted(skipped.items(), key=lambda i: (-i[1], i[0])))
  done = f', {already_done} already there' if already_done else ''
  stopped = (f'Interrupted after {written + already_done + sum(skipped.values())} of '
             f'{len(plan)}: ' if interrupted else '')
  print(f'{stopped}{written} written to {options.out}{done}, {sum(skipped.values())} skipped'
        f'{f" ({reasons})" if reasons else ""}.', file=sys.stderr)
  if interrupted:
    return console.INTERRUPTED_STATUS
  return 1 if skipped else 0


def positive_int(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
  return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m define_jax.inpaint', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  console.add_checkpoint_argument(parser)
  parser.add_argument('--image', help='One photo.')
  parser.add_argument('--mask', help="The photo's mask.")
  parser.add_argument('--images', help='A folder of photos (searched recursively).')
  parser.add_argument('--masks', help='A folder of masks named like the photos.')
  parser.add_argument('--out', required=True, help='Output file (one photo) or folder.')
  parser.add_argument('--polarity', required=True, choices=['hole_white', 'keep_white'],
                      help='hole_white: white mask pixels are holes; keep_white: they are kept.')
  parser.add_argument('--passes', type=positive_int, default=1,
                      help='Network passes; later ones refine the previous result (at most '
                      f'{inference.MAX_PASSES}).')
  parser.add_argument('--fit', default='auto', choices=FITS,
                      help="auto (default): each face with a hole through its aligned crop at "
                      "the model's framing, the rest at native resolution; resize: the whole "
                      "photo to the model's size; pad: native resolution.")
  parser.add_argument('--mask_threshold', type=float,
                      default=image_files.DEFAULT_MASK_THRESHOLD,
                      help='Grey level (0–1, fraction of white) above which a mask pixel counts '
                      'as white; anti-aliased edges are cut there (default 0.5).')
  parser.add_argument('--resize_mask', action='store_true',
                      help="Resize masks of another size to the photo's instead of failing.")
  parser.add_argument('--overwrite', action='store_true',
                      help='Replace existing outputs (inputs are never overwritten).')
  parser.add_argument('--skip_existing', action='store_true',
                      help='Folder mode: leave existing outputs alone and count them as done '
                      '(to finish an interrupted run).')
  parser.add_argument('--allow_all_hole', action='store_true',
                      help='Inpaint masks that mark every pixel as a hole instead of refusing.')
  parser.add_argument('--max_pixels', type=positive_int,
                      default=image_files.DEFAULT_MAX_PIXELS,
                      help='Refuse images and masks with more pixels (checked from the file '
                      f'header; default {image_files.DEFAULT_MAX_PIXELS:,}).')
  memory.add_argument(parser)
  # --config.SECTION.FIELD=VALUE changes the checkpoint's stored config, e.g.
  # --config.model.dtype=bfloat16 (inference precision).
  options = console.parse_with_config_overrides(parser, argv)
  single, folder = (options.image, options.mask), (options.images, options.masks)
  if all(single) == all(folder) or any(single) != all(single) or any(folder) != all(folder):
    parser.error('give either --image and --mask, or --images and --masks.')
  if options.passes > inference.MAX_PASSES:
    parser.error(f'--passes {options.passes}: at most {inference.MAX_PASSES}.')
  if not 0.0 < options.mask_threshold < 1.0:
    parser.error(f'--mask_threshold {options.mask_threshold}: must lie between 0 and 1.')
  if options.skip_existing and (options.overwrite or not options.images):
    parser.error('--skip_existing is for folder mode (--images) and excludes --overwrite.')
  return options


def main(argv: Sequence[str] | None = None) -> int:
  options = parse_args(sys.argv[1:] if argv is None else argv)
  compilation_cache.enable()
  with output_files.terminate_as_interrupt():
    try:
      return run(options)
    except KeyboardInterrupt:
      print('Interrupted.', file=sys.stderr)
      return console.INTERRUPTED_STATUS


def run(options: argparse.Namespace) -> int:
  try:
    # Everything that can be checked without the model is checked first.
    if options.images:
      if Path(options.out).exists() and not Path(options.out).is_dir():
        raise InputError(f'--out {options.out} is a file; folder mode needs a directory.',
                         'bad output')
      plan = plan_folder(options)
    else:
      out = Path(options.out)
      check_image_out(out, (Path(options.image), Path(options.mask)), options.overwrite)
      save_format(out)
    inpainter = Inpainter.load(options.checkpoint, overrides=options.config_overrides)
    if options.images:
      return inpaint_folder(inpainter, plan, options)
    inpaint_file(inpainter, Path(options.image), Path(options.mask), Path(options.out), options)
  except (FileNotFoundError, ValueError) as error:
    print(console.error_line(error), file=sys.stderr)
    return console.ERROR_STATUS
  except OSError as error:  # Writing the result failed (permissions, disk full).
    print(f'error: cannot write {options.out}: {error}', file=sys.stderr)
    return console.ERROR_STATUS
  print(f'Wrote {options.out}', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
