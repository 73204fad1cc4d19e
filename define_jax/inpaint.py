"""Inpaints photos from the command line, with the packaged face model or a checkpoint.

One image (the packaged model unless --checkpoint names a workdir or an exported file):
  python -m define_jax.inpaint --image face.jpg --mask holes.png --polarity hole_white \
      --out filled.png

A folder (masks matched by relative path without extension, e.g. a/b.jpg <- a/b.png;
results written as PNG under the same relative path):
  python -m define_jax.inpaint --checkpoint runs/ffhq256 --images photos/ --masks masks/ \
      --polarity keep_white --out filled/

--polarity says which mask pixels are holes: hole_white (white = hole, e.g. NVIDIA masks)
or keep_white (white = keep, e.g. qd-imd masks). Masks must have the image's size unless
--resize_mask is given, and be black and white (see inference.known_mask). In folder mode
a file that fails is reported and skipped, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageOps
from tqdm import tqdm

from define_jax.datasets import image_folder
from define_jax.inference import Inpainter


def read_image(path: Path) -> Image.Image:
  """The decoded image, upright per its EXIF orientation; ValueError if unreadable."""
  try:
    with Image.open(path) as image:
      image.load()
      return ImageOps.exif_transpose(image)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
    raise ValueError(f'Cannot read {path}: {error}') from error


def inpaint_file(inpainter: Inpainter, image_path: Path, mask_path: Path, out_path: Path,
                 options: argparse.Namespace) -> None:
  image, mask = read_image(image_path), read_image(mask_path)
  if image.size != mask.size and not options.resize_mask:
    raise ValueError(f'{mask_path} is {mask.width}×{mask.height} but {image_path} is '
                     f'{image.width}×{image.height}; pass --resize_mask to resize masks.')
  result = inpainter(image, mask, polarity=options.polarity, passes=options.passes,
                     fit=options.fit, resize_mask=options.resize_mask)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  result.save(out_path)


def pair_with_masks(images_dir: str, masks_dir: str) -> list[tuple[str, str]]:
  """(image, mask) relative paths matched by relative path without extension."""
  images = image_folder.list_image_files(images_dir)
  if not images:
    raise FileNotFoundError(f'No image files below {images_dir}.')
  masks_by_stem: dict[str, str] = {}
  for mask in image_folder.list_image_files(masks_dir):
    stem = str(Path(mask).with_suffix(''))
    if stem in masks_by_stem:
      raise ValueError(f'Two masks for {stem}: {masks_by_stem[stem]} and {mask}.')
    masks_by_stem[stem] = mask
  unmatched = [i for i in images if str(Path(i).with_suffix('')) not in masks_by_stem]
  if unmatched:
    raise FileNotFoundError(
        f'{len(unmatched)} of {len(images)} images have no mask of the same name in '
        f'{masks_dir}, e.g. {", ".join(unmatched[:5])}.')
  return [(i, masks_by_stem[str(Path(i).with_suffix(''))]) for i in images]


def inpaint_folder(inpainter: Inpainter, options: argparse.Namespace) -> int:
  """Inpaints every image of options.images; returns the number of failures."""
  pairs = pair_with_masks(options.images, options.masks)
  failures = []
  for image, mask in tqdm(pairs, unit='image', desc='Inpainting'):
    try:
      inpaint_file(inpainter, Path(options.images, image), Path(options.masks, mask),
                   Path(options.out, image).with_suffix('.png'), options)
    except ValueError as error:
      failures.append(image)
      tqdm.write(f'skipped: {error}', file=sys.stderr)
  print(f'Wrote {len(pairs) - len(failures)} images to {options.out}'
        f'{f"; {len(failures)} failed" if failures else ""}.', file=sys.stderr)
  return len(failures)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m define_jax.inpaint', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--checkpoint', default='',
                      help='Training workdir, its checkpoints directory, one step directory or '
                      'a model file from define_jax.export (default: the packaged model).')
  parser.add_argument('--image', help='One photo.')
  parser.add_argument('--mask', help="The photo's mask.")
  parser.add_argument('--images', help='A folder of photos (searched recursively).')
  parser.add_argument('--masks', help='A folder of masks named like the photos.')
  parser.add_argument('--out', required=True, help='Output file (one photo) or folder.')
  parser.add_argument('--polarity', required=True, choices=['hole_white', 'keep_white'],
                      help='hole_white: white mask pixels are holes; keep_white: they are kept.')
  parser.add_argument('--passes', type=int, default=1,
                      help='Network passes; later ones refine the previous result.')
  parser.add_argument('--fit', default='resize', choices=['resize', 'pad'],
                      help="resize to the model's size (default) or pad at native resolution.")
  parser.add_argument('--resize_mask', action='store_true',
                      help="Resize masks of another size to the photo's instead of failing.")
  options = parser.parse_args(argv)
  single, folder = (options.image, options.mask), (options.images, options.masks)
  if all(single) == all(folder) or any(single) != all(single) or any(folder) != all(folder):
    parser.error('give either --image and --mask, or --images and --masks.')
  return options


def main(argv: Sequence[str] | None = None) -> int:
  options = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    inpainter = Inpainter.load(options.checkpoint)
    if options.images:
      return 1 if inpaint_folder(inpainter, options) else 0
    inpaint_file(inpainter, Path(options.image), Path(options.mask), Path(options.out), options)
  except (FileNotFoundError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  print(f'Wrote {options.out}', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
