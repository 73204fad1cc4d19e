"""Image sources (random access by index), the registry of datasets (config.input.dataset)
and the square crops every image is cut to.

Adding a dataset is one builder `(config, split) -> ImageSplit` and one DATASETS entry.
TensorFlow Datasets is imported only by the TFDS-backed sources, when they are built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import cv2
import ml_collections
import numpy as np

from define_jax.data import image_folder
from define_jax.data import quickstart
from define_jax.data import skips
from define_jax.files import image_files

if TYPE_CHECKING:
  import tensorflow_datasets as tfds

# Fraction of the shorter image side that a training crop spans. Faces are
# aligned, so only the position along the longer side varies; the few
# quickstart photos need strong crop augmentation.
_FACE_CROP_FRACTIONS = (1.0, 1.0)
_QUICKSTART_CROP_FRACTIONS = (0.4, 1.0)

Builder = TypeVar('Builder')


class ImageSource(Protocol):
  description: str  # names the data (a directory, a TFDS dataset) in messages

  def __len__(self) -> int:
    ...

  def name(self, index: int) -> str:
    ...

  def load(self, index: int, min_side: int) -> np.ndarray:
    """RGB uint8 [H, W, 3]; raises image_files.InputError."""
    ...


class FileImages:

  def __init__(self, root: Path, relative_paths: Sequence[str]) -> None:
    self.description = str(root)
    self._root = root
    self._relative_paths = list(relative_paths)

  def __len__(self) -> int:
    return len(self._relative_paths)

  def name(self, index: int) -> str:
    return str(self._root / self._relative_paths[index])

  def load(self, index: int, min_side: int) -> np.ndarray:
    return image_files.read_photo(self._root / self._relative_paths[index], max_pixels=None,
                                  min_side=min_side)


class DecodedImages:
  """Images held decoded in memory (the few quickstart photos)."""

  def __init__(self, description: str, names: Sequence[str], images: Sequence[np.ndarray]) -> None:
    self.description = description
    self._names = list(names)
    self._images = list(images)

  def __len__(self) -> int:
    return len(self._images)

  def name(self, index: int) -> str:
    return self._names[index]

  def load(self, index: int, min_side: int) -> np.ndarray:
    return self._images[index]


class TfdsRecords:
  """One encoded image feature of one split of an ArrayRecord TFDS dataset."""

  def __init__(self, builder: tfds.core.DatasetBuilder, split: str, feature: str) -> None:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,redefined-outer-name

    self.description = f'{builder.info.full_name} {split} in {builder.data_dir}'
    self._feature = feature
    self._source = builder.as_data_source(split, decoders={feature: tfds.decode.SkipDecoding()})

  def __len__(self) -> int:
    return len(self._source)

  def name(self, index: int) -> str:
    return f'{self.description} #{index}'

  def load(self, index: int, min_side: int) -> np.ndarray:
    return image_files.read_photo(self.load_bytes(index), name=self.name(index),
                                  max_pixels=None, min_side=min_side)

  def load_bytes(self, index: int) -> bytes:
    return self._source[index][self._feature]


def load_or_skip(images: ImageSource, index: int, min_side: int) -> np.ndarray | None:
  """The decoded image, or None (counted as a skipped image) if it is unreadable."""
  try:
    return images.load(index, min_side)
  except image_files.InputError as error:
    skips.SKIPS.record('images', images.name(index), str(error))
    return None


@dataclasses.dataclass(frozen=True)
class ImageSplit:
  images: ImageSource
  crop_fractions: tuple[float, float]  # of the shorter side, for random crops
  eval_random_crops: bool  # evaluate on fixed random crops instead of centre crops


def lookup(registry: Mapping[str, Builder], field: str, name: str) -> Builder:
  """registry[name], or a ValueError naming the config field and the registered names."""
  if name not in registry:
    raise ValueError(f"unknown {field} {name!r}; expected one of {', '.join(map(repr, registry))}")
  return registry[name]


def prepare_command(name: str, config: ml_collections.ConfigDict) -> str:
  data_dir = config.input.data_dir
  return f'python -m define_jax.datasets.prepare --dataset {name} --manual_dir DIR' + (
      f' --data_dir {data_dir}' if data_dir else ''
  )


def _image_folder(config: ml_collections.ConfigDict, split: str) -> ImageSplit:
  """Any folder of photos, split by file name (data.image_folder)."""
  image_dir = config.input.image_dir
  if not image_dir:
    raise ValueError("dataset='image_folder' needs config.input.image_dir")
  root = Path(image_dir).expanduser()
  files = image_folder.list_image_files(root)
  if not files:
    raise ValueError(f"no image files ({', '.join(image_folder.IMAGE_EXTENSIONS)}) in {root}")
  fraction = float(config.input.validation_fraction)
  train_files, validation_files = image_folder.split_image_files(files, fraction)
  chosen = train_files if split == 'train' else validation_files
  if not chosen:
    raise ValueError(
        f'the {split} split of {root} is empty ({len(files)} files, validation_fraction={fraction})'
    )
  return ImageSplit(FileImages(root, chosen), _FACE_CROP_FRACTIONS, eval_random_crops=False)


def _ffhq(config: ml_collections.ConfigDict, split: str) -> ImageSplit:
  """FFHQ as prepared by define_jax.datasets.prepare."""
  from define_jax.datasets import prepare  # imports TFDS only when needed

  ffhq_config = config.input.ffhq_config  # 'ffhq/256' or just '256'
  name = ffhq_config if ffhq_config.startswith('ffhq/') else f'ffhq/{ffhq_config}'
  builder = prepare.make_builder(name, config.input.data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'{name} is not prepared in {builder.data_dir}; run: {prepare_command(name, config)}'
    )
  return ImageSplit(
      TfdsRecords(builder, split, 'image'), _FACE_CROP_FRACTIONS, eval_random_crops=False
  )


def _quickstart(config: ml_collections.ConfigDict, split: str) -> ImageSplit:
  """The photos shipped with scikit-image (data.quickstart), decoded once."""
  del config  # the photos are fixed
  paths = quickstart.photo_files(split)
  images = [image_files.read_photo(path, max_pixels=None) for path in paths]
  source = DecodedImages(
      f'quickstart {split} photos in {quickstart.photo_dir()}', [p.name for p in paths], images
  )
  return ImageSplit(source, _QUICKSTART_CROP_FRACTIONS, eval_random_crops=True)


DATASETS: dict[str, Callable[[ml_collections.ConfigDict, str], ImageSplit]] = {
    'ffhq': _ffhq,
    'image_folder': _image_folder,
    'quickstart': _quickstart,
}


def image_split(config: ml_collections.ConfigDict, split: str) -> ImageSplit:
  """The images of `split` ('train' or 'validation') of config.input.dataset."""
  return lookup(DATASETS, 'dataset', config.input.dataset)(config, split)


def crop_and_resize(
    image: np.ndarray,
    size: int,
    rng: np.random.Generator | None,
    crop_fractions: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
  """Square crop resized to size x size (antialiased when shrinking).

  rng None: centre crop spanning the shorter side (evaluation). Otherwise a
  random crop spanning a random fraction in `crop_fractions` of the shorter
  side at a random position, mirrored left-right with probability 1/2.
  """
  height, width = image.shape[:2]
  shorter = min(height, width)
  if rng is None:
    side = shorter
    top, left = (height - side) // 2, (width - side) // 2
  else:
    side = max(1, round(rng.uniform(*crop_fractions) * shorter))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
  crop = image[top : top + side, left : left + side]
  interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
  resized = (
      cv2.resize(crop, (size, size), interpolation=interpolation) if side != size else crop.copy()
  )
  if rng is not None and rng.random() < 0.5:
    resized = cv2.flip(resized, 1)
  return resized
