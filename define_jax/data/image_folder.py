"""A folder of face photographs as a dataset: file listing and a stable split.

No TFDS build step: the input pipeline reads the files directly. The
train/validation split is decided per file by a hash of its relative path, so
it never changes when files are added, removed or listed in another order.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


def list_image_files(directory: str | os.PathLike) -> list[str]:
  """Relative POSIX paths of the image files below `directory`, sorted.

  Recursive; matches IMAGE_EXTENSIONS case-insensitively; skips hidden files
  and folders (such as macOS `._name.jpg` resource forks). Raises
  FileNotFoundError if `directory` is not a folder.
  """
  root = Path(directory)
  if not root.is_dir():
    raise FileNotFoundError(f'image folder {root} does not exist or is not a folder')
  relative_paths = []
  for folder, subfolders, names in os.walk(root):
    subfolders[:] = [name for name in subfolders if not name.startswith('.')]
    for name in names:
      if not name.startswith('.') and name.lower().endswith(IMAGE_EXTENSIONS):
        relative_paths.append(Path(folder, name).relative_to(root).as_posix())
  return sorted(relative_paths)


def hash_position(relative_path: str) -> int:
  """A deterministic, platform-independent position of the file in [0, 2**64)."""
  return int.from_bytes(hashlib.sha256(relative_path.encode('utf-8')).digest()[:8], 'big')


def is_validation_file(relative_path: str, validation_fraction: float) -> bool:
  """Deterministic, platform-independent membership of the validation split."""
  return hash_position(relative_path) < validation_fraction * 2**64


def split_image_files(
    relative_paths: list[str], validation_fraction: float
) -> tuple[list[str], list[str]]:
  """(train, validation) relative paths, each in the input order."""
  if not 0.0 <= validation_fraction <= 1.0:
    raise ValueError(f'validation_fraction must be in [0, 1], got {validation_fraction}')
  train, validation = [], []
  for path in relative_paths:
    (validation if is_validation_file(path, validation_fraction) else train).append(path)
  return train, validation
