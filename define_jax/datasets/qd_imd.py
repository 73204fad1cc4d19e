"""TFDS builder for QD-IMD, the QuickDraw irregular mask dataset (Iskakov 2018).

The files (`train/*.png`, `test/*.png`, 512x512, white = keep, read with the polarity of
masks.MASK_SETS['qd_imd']) are read from the manual directory; nothing is
downloaded. The stored `mask` uses the project convention 1 = known pixel, 0 = hole (uint8
values 0/1).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import tensorflow_datasets as tfds

from define_jax.data import masks

SPLITS = ('train', 'test')


def find_split_dir(manual_dir: Path, split: str) -> Path | None:
  """`<manual_dir>/<split>` or, as the archive extracts, `<manual_dir>/qd_imd/<split>`."""
  for candidate in (manual_dir / split, manual_dir / 'qd_imd' / split):
    if candidate.is_dir():
      return candidate
  return None


class QdImd(tfds.core.GeneratorBasedBuilder):
  """QuickDraw irregular masks."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # Nothing is downloaded, so there are no URL checksums. Saying so here also
  # skips TFDS's search for a checksums file beside this module, which imports
  # `importlib_resources` (no longer installed by recent etils).
  url_infos = None
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download QD-IMD (https://github.com/karfly/qd-imd) and extract it so that
    `<manual_dir>/train/*.png` and `<manual_dir>/test/*.png` exist (or the same
    below `<manual_dir>/qd_imd/`). Masks are white = keep, black = hole.
    """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(
            {
                'mask': tfds.features.Image(
                    shape=(None, None, 1), doc='uint8, 1 = known pixel, 0 = hole.'
                ),
                'file_name': tfds.features.Text(),
            }
        ),
        homepage='https://github.com/karfly/qd-imd',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = Path(dl_manager.manual_dir)
    split_dirs = {split: find_split_dir(manual_dir, split) for split in SPLITS}
    generators = {
        split: self._generate_examples(sorted(split_dir.glob('*.png')))
        for split, split_dir in split_dirs.items()
        if split_dir is not None and any(split_dir.glob('*.png'))
    }
    if not generators:
      raise FileNotFoundError(f'No train/*.png or test/*.png masks under {manual_dir}.')
    return generators

  def _generate_examples(self, paths: list[Path]) -> Iterator[tuple[str, dict]]:
    named = ((path.name, path) for path in paths)
    for name, known in masks.read_mask_set_files('qd_imd', named):
      yield name, {'mask': known, 'file_name': name}
