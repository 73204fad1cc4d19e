"""TFDS builder for FFHQ (Flickr-Faces-HQ, Karras et al. 2019) at 256² or 512².

Reads the official layout from the manual directory (nothing is downloaded):
`images1024x1024/NN000/NNNNN.png`, or `thumbnails128x128/...` when only the
thumbnails are there. Images are resized once at build time with PIL's
antialiased LANCZOS filter, so training reads small PNGs. Splits follow the
official protocol by file number: `train` = 00000-59999, `validation` =
60000-69999; a partial manual directory builds whatever files it holds.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from define_jax.files import image_files

NUM_TRAIN_IMAGES = 60000
NUM_IMAGES = 70000
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

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
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
    A subset of the files works; splits are assigned by file number.
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
    split_files = {
        'train': {number: path for number, path in files.items() if number < NUM_TRAIN_IMAGES},
        'validation': {
            number: path for number, path in files.items() if number >= NUM_TRAIN_IMAGES
        },
    }
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
