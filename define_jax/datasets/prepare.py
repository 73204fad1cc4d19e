"""Builds the project's TFDS datasets from manually downloaded files.

    python -m define_jax.datasets.prepare --dataset ffhq/256 --manual_dir ~/ffhq [--data_dir DIR]

Datasets are written as ArrayRecord files: the input pipeline reads them by
random access (`builder.as_data_source`), which exact resumption needs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging

from define_jax.datasets import ffhq, nvidia_irregular_masks, qd_imd

DATASETS = ('ffhq/256', 'ffhq/512', 'qd_imd', 'nvidia_irregular_masks')


def make_builder(name: str, data_dir: str | Path | None = None) -> tfds.core.DatasetBuilder:
  """Builder for one of `DATASETS`, constructed directly (no registry or GCS look-up)."""
  if name.startswith('ffhq/'):
    return ffhq.Ffhq(config=name.split('/', 1)[1], data_dir=data_dir)
  if name == 'qd_imd':
    return qd_imd.QdImd(data_dir=data_dir)
  if name == 'nvidia_irregular_masks':
    return nvidia_irregular_masks.NvidiaIrregularMasks(data_dir=data_dir)
  raise ValueError(f'unknown dataset {name!r}; expected one of {DATASETS}')


def prepare_dataset(
    name: str, manual_dir: str | Path, data_dir: str | Path | None = None
) -> tfds.core.DatasetBuilder:
  """Builds `name` from `manual_dir` into `data_dir` unless it is already there."""
  builder = make_builder(name, data_dir)
  if not builder.is_prepared():
    print(f'Preparing {name} from {manual_dir} into {builder.data_dir}', flush=True)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir), try_download_gcs=False
        ),
        file_format='array_record',
    )
  return builder


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m define_jax.datasets.prepare',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--dataset', required=True, choices=DATASETS)
  parser.add_argument(
      '--manual_dir', required=True, help='folder holding the manually downloaded files'
  )
  parser.add_argument(
      '--data_dir', default=None, help='TFDS data dir (default: ~/tensorflow_datasets)'
  )
  parser.add_argument('--verbosity', type=int, default=-1,
                      help='0: also TensorFlow Datasets INFO logs; 1: debug logs')
  args = parser.parse_args(argv)
  logging.set_verbosity(args.verbosity)
  builder = prepare_dataset(args.dataset, args.manual_dir, args.data_dir)
  splits = {name: split.num_examples for name, split in builder.info.splits.items()}
  print(f'{args.dataset} ready in {builder.data_dir}: {splits}')


if __name__ == '__main__':
  main()
