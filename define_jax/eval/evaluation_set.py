"""The fixed evaluation set: images with band-balanced hole masks, the same on every run.

Training-time evaluation and `study` use `for_training(config)`; `evaluate` assembles its
set from the same builders according to its command line. Image k gets a mask of hole-ratio
band k mod 6 (bands.BAND_EDGES), so every band is covered equally. Everything is seeded
by fixed seeds, independent of config.seed, so runs with different seeds are scored on the
same images and masks. No TensorFlow: TFDS is imported only to read a prepared mask set.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import ml_collections
import numpy as np

from define_jax.data import bands
from define_jax.data import examples
from define_jax.data import image_folder
from define_jax.data import image_sources
from define_jax.data import mask_sources
from define_jax.data import masks
from define_jax.files import image_files

# Seed of the validation images' order and crops.
EVAL_SEED = 20240917
# Seed of the mask choice of training-time evaluation and study (evaluate's --seed default).
MASK_SEED = 0
MASK_POLARITIES = {name: mask_set.polarity for name, mask_set in masks.MASK_SETS.items()}
# Hole-ratio range drawn for generated masks of each band: band 0 starts at 1% because a
# handful of hole pixels measures nothing.
_GENERATED_RANGES = [
    (max(low, 0.01), high) for low, high in zip(bands.BAND_EDGES[:-1], bands.BAND_EDGES[1:])
]


@dataclasses.dataclass
class EvalSet:
  """The images and masks that every method is scored on."""

  images: np.ndarray  # float32 [N, S, S, 3] in [0, 1]
  known: np.ndarray  # float32 [N, S, S, 1], 1 = known
  image_names: list[str]
  mask_names: list[str]
  # Why each unreadable image was left out (the message names the file).
  skipped: list[str] = dataclasses.field(default_factory=list)
  # What the report's rows group by when not the hole-ratio band: one label per image (the
  # face part its hole hides, for face-part masks).
  groups: list[str] | None = None
  # float32 [N, 5, 2]: the landmarks (pixels) of the face each face-part hole hides a part of,
  # as the detector found them on the image; scoring compares the composite's with them.
  landmarks: np.ndarray | None = None

  @property
  def bands(self) -> np.ndarray:
    return bands.band_index(bands.hole_ratio(self.known))


def _to_float(images_uint8: list[np.ndarray]) -> np.ndarray:
  return np.stack(images_uint8).astype(np.float32) / 255.0


def validation_images(
    config: ml_collections.ConfigDict, size: int, count: int, image_dir: str = '',
    split_name: str = 'validation') -> tuple[np.ndarray, list[str]]:
  """Up to `count` validation images of config.input.dataset, or of the folder `image_dir` split
  as training would split it: a fixed EVAL_SEED sample, centre-cropped (or, for datasets
  evaluated on random crops, `count` fixed crops cycling through the photos). Unreadable
  images are skipped and counted. split_name='train': the same of the training images.
  image_sources.EmptySplitError when the split has no images."""
  if image_dir:
    config = ml_collections.ConfigDict(config.to_dict())
    config.input.dataset, config.input.image_dir = 'image_folder', image_dir
  split = image_sources.image_split(config, split_name)
  source = split.images
  if split.eval_random_crops:
    order = np.arange(count) % len(source)
  else:
    permutation = examples.element_rng(EVAL_SEED, examples.PERMUTATION_STREAM, 0)
    order = permutation.permutation(len(source))[:count]
  chosen = []
  for position, index in enumerate(order):
    image = image_sources.load_or_skip(source, int(index), size)
    if image is None:
      continue
    crop_rng = (examples.element_rng(EVAL_SEED, examples.IMAGE_STREAM, position)
                if split.eval_random_crops else None)
    chosen.append(image_sources.crop_and_resize(image, size, crop_rng, split.crop_fractions))
  if not chosen:
    raise ValueError(f'no readable image in {source.description}')
  return _to_float(chosen), [f'{config.input.dataset} {split_name} #{k}'
                             for k in range(len(chosen))]


def folder_images(image_dir: str, size: int,
                  count: int) -> tuple[np.ndarray, list[str], list[str]]:
  """The first `count` readable images below image_dir (sorted relative paths),
  centre-cropped; their names, and the reason (naming the file) of each unreadable one."""
  files = image_folder.list_image_files(image_dir)
  if not files:
    raise FileNotFoundError(
        f'No image files ({", ".join(image_folder.IMAGE_EXTENSIONS)}) below {image_dir}.')
  chosen, names, skipped = [], [], []
  for name in files:
    if len(chosen) == count:
      break
    path = Path(image_dir, name)
    try:
      pixels = image_files.read_photo(path, max_pixels=None)
    except image_files.InputError as error:
      skipped.append(str(error))
      continue
    chosen.append(image_sources.crop_and_resize(pixels, size, None))
    names.append(name)
  if not chosen:
    raise ValueError(f'No readable image below {image_dir}: {"; ".join(skipped[:3])}')
  return _to_float(chosen), names, skipped


def _round_robin(buckets: list[list[int]], count: int) -> list[int]:
  """count items taken band by band (0, 1, …, 5, 0, …), skipping exhausted bands, and
  cycling through the taken ones again when there are fewer than count."""
  order = [bucket[i] for i in range(max(map(len, buckets), default=0))
           for bucket in buckets if i < len(bucket)]
  return [order[k % len(order)] for k in range(count)]


def _band_balanced(names: Sequence[str], load: Callable[[int], np.ndarray], size: int,
                   count: int, seed: int, nothing_in_band: str) -> tuple[np.ndarray, list[str]]:
  """`count` masks, bands taken in turn: the masks are visited in a fixed shuffled order
  and sorted into bands by their hole ratio after resizing to size² (not by nominal band).
  `load(index)` gives mask `index` as uint8 [H, W], 1 = known."""
  quota = math.ceil(count / bands.NUM_BANDS)
  buckets: list[list[int]] = [[] for _ in range(bands.NUM_BANDS)]
  resized: dict[int, np.ndarray] = {}
  for index in np.random.default_rng(seed).permutation(len(names)):
    if all(len(bucket) >= quota for bucket in buckets):
      break
    known = masks.resize_mask(load(int(index)), (size, size))
    band = int(bands.band_index(bands.hole_ratio(known[None, ..., None]))[0])
    if band >= 0 and len(buckets[band]) < quota:
      buckets[band].append(int(index))
      resized[int(index)] = known
  if not resized:
    raise ValueError(nothing_in_band)
  chosen = _round_robin(buckets, count)
  known = np.stack([resized[i] for i in chosen])[..., None].astype(np.float32)
  return known, [names[i] for i in chosen]


def masks_from_dir(mask_dir: str, polarity: image_files.MaskPolarity, size: int, count: int,
                   seed: int) -> tuple[np.ndarray, list[str]]:
  """`count` band-balanced masks of the files below mask_dir, read with `polarity`."""
  files = image_folder.list_image_files(mask_dir)
  if not files:
    raise FileNotFoundError(f'No mask files below {mask_dir}: {sorted(os.listdir(mask_dir))[:10]}')

  def load(index: int) -> np.ndarray:
    return image_files.read_mask(Path(mask_dir, files[index]), polarity)

  return _band_balanced(files, load, size, count, seed,
                        f'No mask below {mask_dir} has a hole ratio in (0, 60%] at {size}² '
                        f'with polarity {polarity!r}; is --masks right?')


def masks_from_records(records: image_sources.TfdsRecords, size: int, count: int,
                       seed: int) -> tuple[np.ndarray, list[str]]:
  """`count` band-balanced masks of a prepared TFDS mask set's split."""
  names = [records.name(index) for index in range(len(records))]
  load = functools.partial(mask_sources.read_stored_mask, records)
  return _band_balanced(names, load, size, count, seed,
                        f'No mask of {records.description} has a hole ratio in (0, 60%] at '
                        f'{size}².')


def generated_masks(size: int, count: int, seed: int) -> tuple[np.ndarray, list[str]]:
  """Image k gets a generated mask with a hole ratio in band k mod 6."""
  known = []
  for k in range(count):
    band = k % bands.NUM_BANDS
    rng = np.random.default_rng((seed, k))
    known.append(masks.generate_irregular_mask(rng, size, size, _GENERATED_RANGES[band]))
  names = [f'generated #{k} (band {bands.band_label(k % bands.NUM_BANDS)})'
           for k in range(count)]
  return np.stack(known)[..., None].astype(np.float32), names


def face_part_masks(images: np.ndarray, names: Sequence[str], masks_per_image: int
                    ) -> tuple[np.ndarray, np.ndarray, list[str], list[str], list[str],
                               np.ndarray]:
  """Holes over face parts (masks.FACE_PARTS in turn: the k-th mask of the whole set hides
  part k mod 4), each on the largest face the detector finds in its image, placed on that
  face's own landmarks; masks_per_image masks per image.

  Returns (the images with a face, each repeated masks_per_image times, their known masks
  [N, S, S, 1], the part each hides, the image names, a line naming each image without
  a face, which is left out, and the landmarks [N, 5, 2] of the face each hole is on)."""
  from define_jax.faces import faces  # pylint: disable=g-import-not-at-top  # Face-part runs only.

  detector = faces.FaceDetector.pretrained()
  parts = sorted(masks.FACE_PARTS)
  kept, known, hidden, kept_names, skipped, landmarks = [], [], [], [], [], []
  for index, (image, name) in enumerate(zip(images, names)):
    found = detector(image)
    if not found:
      skipped.append(f'{name}: no face found for a face-part hole')
      continue
    face = max(found, key=lambda f: float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
    for _ in range(masks_per_image):
      part = parts[len(known) % len(parts)]
      kept.append(index)
      known.append(masks.face_part_mask(None, image.shape[0], image.shape[1], face.landmarks,
                                        part))
      hidden.append(part)
      kept_names.append(name)
      landmarks.append(face.landmarks)
  if not kept:
    raise ValueError('No face found in any evaluation image: face-part holes need faces.')
  return (images[kept], np.stack(known)[..., None].astype(np.float32), hidden, kept_names,
          skipped, np.stack(landmarks).astype(np.float32))


def _training_masks(config: ml_collections.ConfigDict, size: int,
                    count: int) -> tuple[np.ndarray, list[str]]:
  """Band-balanced masks of config.input.masks: from config.input.mask_dir's files, else from the
  prepared mask set's evaluation split; generated for masks='generated'."""
  if config.input.masks == 'generated':
    return generated_masks(size, count, MASK_SEED)
  mask_set = image_sources.lookup(masks.MASK_SETS, 'masks', config.input.masks)
  if config.input.mask_dir:
    return masks_from_dir(config.input.mask_dir, mask_set.polarity, size, count, MASK_SEED)
  records = image_sources.TfdsRecords(mask_sources.prepared_mask_set(mask_set, config),
                               mask_set.eval_split, 'mask')
  return masks_from_records(records, size, count, MASK_SEED)


def for_training(config: ml_collections.ConfigDict, split_name: str = 'validation') -> EvalSet:
  """config.eval.num_eval_images validation images of the training data with band-balanced masks
  of its mask kind; a small validation split is cycled through, each pass with other masks.
  split_name='train': training images instead (for image grids of a dataset without
  validation images)."""
  size, count = int(config.model.image_size), int(config.eval.num_eval_images)
  if count < 1:
    raise ValueError(f'config.eval.num_eval_images={count} must be positive.')
  found, found_names = validation_images(config, size, count, split_name=split_name)
  reuse = np.arange(count) % len(found)
  known, mask_names = _training_masks(config, size, count)
  return EvalSet(found[reuse], known, [found_names[i] for i in reuse], mask_names)
