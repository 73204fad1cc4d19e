"""TFDS builder for FFHQ (Flickr-Faces-HQ, Karras et al. 2019) at 256² or 512².

Reads the official layout from the manual directory (nothing is downloaded):
`images1024x1024/NN000/NNNNN.png`, or `thumbnails128x128/...` when only the
thumbnails are there. Images are resized once at build time with PIL's
antialiased LANCZOS filter, so training reads small PNGs. Splits follow the
official protocol by file number: `train` = 00000-59999, `validation` =
60000-69999. Any subset of the files builds (`split_numbers`): the validation
split is whichever of 60000-69999 are present, or, when none is, HELD_OUT_FRACTION
of the files present, chosen by a hash of the file name as image folders are split
(at least one file when there are two or more). The dataset records which files it
was built from (`source_record`), so that `prepare` rebuilds it when they change.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from define_jax.data import image_folder
from define_jax.files import image_files

NUM_TRAIN_IMAGES = 60000
NUM_IMAGES = 70000
# Fraction of the files held out for validation when none of 60000-69999 is present: the
# image-folder dataset's default (config.input.validation_fraction).
HELD_OUT_FRACTION = 0.1
# Searched in this order: the full-resolution images are preferred.
SOURCE_DIRS = ('images1024x1024', 'thumbnails128x128')
_IMAGE_FILE_NAME = re.compile(r'^(\d{5})\.png$', re.IGNORECASE)
# Bounds how many decoded images wait in memory for the TFDS writer.
_RESIZE_CHUNK = 64

_Item = TypeVar('_Item')
_Result = TypeVar('_Result')


@dataclasses.dataclass(eq=False)
class FfhqConfig(tfds.core.BuilderConfig):
  resolution: int = 256


def find_source_dir(manual_dir: Path) -> Path:
  """The official image folder inside `manual_dir` (or `manual_dir` itself)."""
  for name in SOURCE_DIRS:
    if (manual_dir / name).is_dir():
      return manual_dir / name
  return manual_dir


def find_image_files(source_dir: Path) -> dict[int, Path]:
  """`NNNNN.png` files anywhere under `source_dir`, by image number."""
  files = {}
  for path in sorted(source_dir.rglob('*.png')):
    match = _IMAGE_FILE_NAME.match(path.name)
    if match and int(match.group(1)) < NUM_IMAGES:
      files[int(match.group(1))] = path
  return files


def split_numbers(numbers: Iterable[int]) -> tuple[list[int], list[int]]:
  """(train, validation) image numbers, sorted: the official split when any of 60000-69999
  is present, else HELD_OUT_FRACTION held out by a hash of the file name, which keeps a
  file's split when others are added (at least one file when there are two or more)."""
  numbers = sorted(numbers)
  if any(number >= NUM_TRAIN_IMAGES for number in numbers):
    return ([n for n in numbers if n < NUM_TRAIN_IMAGES],
            [n for n in numbers if n >= NUM_TRAIN_IMAGES])
  name = lambda number: f'{number:05d}.png'
  validation = [n for n in numbers if image_folder.is_validation_file(name(n), HELD_OUT_FRACTION)]
  if not validation and len(numbers) >= 2:
    validation = [min(numbers, key=lambda n: image_folder.hash_position(name(n)))]
  return [n for n in numbers if n not in validation], validation


def split_summary(files: dict[int, Path]) -> str:
  """How many of FFHQ's files are present and where the validation split comes from."""
  train, validation = split_numbers(files)
  official = sum(number >= NUM_TRAIN_IMAGES for number in files)
  line = (f'{len(files):,} of FFHQ\'s {NUM_IMAGES:,} images present '
          f'({len(files) - official:,} of {NUM_TRAIN_IMAGES:,} training files 00000-59999, '
          f'{official:,} of {NUM_IMAGES - NUM_TRAIN_IMAGES:,} validation files 60000-69999)')
  if official:
    return f'{line}; validation: those {official:,}.'
  if validation:
    return (f'{line}; validation: {len(validation)} of them held out by file name '
            f'({HELD_OUT_FRACTION:.0%}, at least one), {len(train):,} train.')
  return f'{line}; too few to hold any out: no validation split (training runs unscored).'


def source_record(files: dict[int, Path]) -> str:
  """A digest of the image files (number and size of each): changes when files are added,
  removed or replaced by others, not when they are copied or moved."""
  digest = hashlib.sha256()
  for number, path in sorted(files.items()):
    digest.update(f'{number} {path.stat().st_size}\n'.encode())
  return digest.hexdigest()


def load_resized(path: Path, resolution: int) -> np.ndarray:
  """RGB uint8 [resolution, resolution, 3]: centre square, LANCZOS resize."""
  image = Image.fromarray(image_files.read_photo(path, max_pixels=None))
  width, height = image.size
  side = min(width, height)
  box = (
      (width - side) // 2,
      (height - side) // 2,
      (width - side) // 2 + side,
      (height - side) // 2 + side,
  )
  if image.size != (resolution, resolution):
    image = image.resize((resolution, resolution), Image.LANCZOS, box=box)
  return np.asarray(image)


def _parallel_map_in_order(
    function: Callable[[_Item], _Result], items: Iterable[_Item]
) -> Iterator[_Result]:
  """Like map(), on a thread pool (PIL releases the GIL), in bounded chunks."""
  items = list(items)
  with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
    for start in range(0, len(items), _RESIZE_CHUNK):
      yield from pool.map(function, items[start : start + _RESIZE_CHUNK])


class Ffhq(tfds.core.GeneratorBasedBuilder):
  """FFHQ aligned faces, resized at build time."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.',
                   '1.1.0': 'Validation held out of a download without 60000-69999; the '
                            'source files are recorded (metadata `source_files`).'}
  BUILDER_CONFIGS = [
      FfhqConfig(name='256', resolution=256, description='256x256, LANCZOS-resized.'),
      FfhqConfig(name='512', resolution=512, description='512x512, LANCZOS-resized.'),
  ]
  # Nothing is downloaded, so there are no URL checksums. Saying so here also
  # skips TFDS's search for a checksums file beside this module, which imports
  # `importlib_resources` (no longer installed by recent etils).
  url_infos = None
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download FFHQ (https://github.com/NVlabs/ffhq-dataset, images under
    CC BY-NC-SA 4.0) and place the official folder `images1024x1024/` (with its
    `NN000/NNNNN.png` sub-folders) in the manual directory. If only
    `thumbnails128x128/` is present it is used instead (upscaled: low quality).
    A subset of the files works: splits are assigned by file number, and when
    none of 60000-69999 is present 10 % of the files are held out for validation.
    """

  def _info(self) -> tfds.core.DatasetInfo:
    resolution = self.builder_config.resolution
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(
            {
                'image': tfds.features.Image(shape=(resolution, resolution, 3)),
                'image_number': tfds.features.Scalar(dtype=np.int32),
            }
        ),
        homepage='https://github.com/NVlabs/ffhq-dataset',
        metadata=tfds.core.MetadataDict(),
        citation="""@inproceedings{karras2019style,
  title={A Style-Based Generator Architecture for Generative Adversarial Networks},
  author={Karras, Tero and Laine, Samuli and Aila, Timo}, booktitle={CVPR}, year={2019}}""",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    source_dir = find_source_dir(Path(dl_manager.manual_dir))
    files = find_image_files(source_dir)
    if not files:
      raise FileNotFoundError(f'No NNNNN.png images under {source_dir}.')
    if source_dir.name == 'thumbnails128x128' and self.builder_config.resolution > 128:
      logging.warning(
          'Building FFHQ %s from 128x128 thumbnails: images are upscaled.', self.builder_config.name
      )
    self.info.metadata['source_files'] = source_record(files)
    self.info.metadata['source_count'] = len(files)
    train, validation = split_numbers(files)
    split_files = {'train': {n: files[n] for n in train},
                   'validation': {n: files[n] for n in validation}}
    return {split: self._generate_examples(items) for split, items in split_files.items() if items}

  def _generate_examples(self, files: dict[int, Path]) -> Iterator[tuple[int, dict]]:
    resolution = self.builder_config.resolution

    def load(item: tuple[int, Path]) -> tuple[int, np.ndarray | image_files.InputError]:
      number, path = item
      try:
        return number, load_resized(path, resolution)
      except image_files.InputError as error:  # names the file
        return number, error

    for number, image in _parallel_map_in_order(load, files.items()):
      if isinstance(image, image_files.InputError):
        logging.warning('Skipping %s', image)
        continue
      yield number, {'image': image, 'image_number': number}
