"""TFDS builder for the NVIDIA irregular hole masks (Liu et al. 2018, PConv test set).

The files (`NNNNN.png`, 512x512, white = hole, read with the polarity of
masks.MASK_SETS['nvidia_irregular']) are read from the manual directory; nothing is
downloaded. The stored `mask` uses the project convention 1 = known pixel, 0 = hole (uint8
values 0/1).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from define_jax.data import bands
from define_jax.data import masks

# The official set holds 00000.png .. 11999.png: the hole-area ratio rises one
# 10% band per block of 2,000 files, and the first 1,000 of each block touch
# the image border.
FILES_PER_BAND = 2000
# Prepared datasets store these label names, and TFDS refuses to read a dataset whose stored
# names differ: they keep the ASCII hyphen they were prepared with ('0-10%').
HOLE_RATIO_BANDS = [bands.band_label(b, dash='-') for b in range(bands.NUM_BANDS)]
_MASK_FILE_NAME = re.compile(r'^(\d{5})\.png$', re.IGNORECASE)


def band_of(file_number: int) -> int:
  """Hole-ratio band 0..5 (0-10% .. 50-60%) of an official file number."""
  return file_number // FILES_PER_BAND


def touches_border(file_number: int) -> bool:
  return file_number % FILES_PER_BAND < FILES_PER_BAND // 2


def find_mask_files(manual_dir: Path) -> dict[int, Path]:
  """Official mask files anywhere under `manual_dir`, by file number."""
  files = {}
  for path in sorted(manual_dir.rglob('*')):
    match = _MASK_FILE_NAME.match(path.name)
    if match and path.is_file():
      number = int(match.group(1))
      if number < FILES_PER_BAND * bands.NUM_BANDS:
        files[number] = path
      else:
        logging.warning('Ignoring %s: the official set ends at 11999.png.', path)
  return files


class NvidiaIrregularMasks(tfds.core.GeneratorBasedBuilder):
  """NVIDIA irregular hole masks with their hole-ratio band."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # Nothing is downloaded, so there are no URL checksums. Saying so here also
  # skips TFDS's search for a checksums file beside this module, which imports
  # `importlib_resources` (no longer installed by recent etils).
  url_infos = None
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download the testing mask set of "Image Inpainting for Irregular Holes Using
    Partial Convolutions" (https://nv-adlr.github.io/publication/partialconv-inpainting,
    licence CC BY-NC-SA 4.0) and extract it so that the files `00000.png` ..
    `11999.png` lie anywhere below the manual directory (for example
    `<manual_dir>/testing_mask_dataset/00000.png`). A subset of the files works.
    """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(
            {
                'mask': tfds.features.Image(
                    shape=(None, None, 1), doc='uint8, 1 = known pixel, 0 = hole.'
                ),
                'hole_ratio_band': tfds.features.ClassLabel(names=HOLE_RATIO_BANDS),
                'touches_border': tfds.features.Scalar(dtype=np.bool_),
                'file_number': tfds.features.Scalar(dtype=np.int32),
            }
        ),
        homepage='https://nv-adlr.github.io/publication/partialconv-inpainting',
        citation="""@inproceedings{liu2018partialinpainting,
  title={Image Inpainting for Irregular Holes Using Partial Convolutions},
  author={Liu, Guilin and Reda, Fitsum A. and Shih, Kevin J. and Wang, Ting-Chun
          and Tao, Andrew and Catanzaro, Bryan},
  booktitle={ECCV}, year={2018}}""",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    files = find_mask_files(Path(dl_manager.manual_dir))
    if not files:
      raise FileNotFoundError(f'No NNNNN.png mask files under {dl_manager.manual_dir}.')
    # The whole official set is a test set; training reuses it with augmentation.
    return {'test': self._generate_examples(files)}

  def _generate_examples(self, files: dict[int, Path]) -> Iterator[tuple[int, dict]]:
    for number, known in masks.read_mask_set_files('nvidia_irregular', files.items()):
      yield number, {
          'mask': known,
          'hole_ratio_band': band_of(number),
          'touches_border': touches_border(number),
          'file_number': number,
      }
