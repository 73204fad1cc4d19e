"""Real colour photographs that ship inside the scikit-image wheel.

They give a CPU quickstart real images on a fresh machine without any
download. Training uses random crops of the training photos; validation
photos are held out whole (cat and coffee: unlike anything in training).
"""

from __future__ import annotations

from pathlib import Path

import skimage.data

TRAIN_PHOTOS = (
    'astronaut.png',
    'motorcycle_left.png',
    'motorcycle_right.png',
    'rocket.jpg',
    'retina.jpg',
    'hubble_deep_field.jpg',
    'ihc.png',
)
VALIDATION_PHOTOS = ('chelsea.png', 'coffee.png')


def photo_dir() -> Path:
  return Path(skimage.data.__file__).parent


def photo_files(split: str) -> list[Path]:
  """Paths of the installed photos of `split` ('train' or 'validation')."""
  names = {'train': TRAIN_PHOTOS, 'validation': VALIDATION_PHOTOS}[split]
  paths = [photo_dir() / name for name in names if (photo_dir() / name).is_file()]
  if not paths:
    raise FileNotFoundError(f'none of the quickstart photos {names} is installed in {photo_dir()}')
  return paths
