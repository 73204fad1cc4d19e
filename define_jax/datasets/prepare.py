"""Builds the project's TFDS datasets from manually downloaded files.

    python -m define_jax.datasets.prepare --dataset ffhq/256 --manual_dir ~/ffhq [--data_dir DIR]

Datasets are written as ArrayRecord files: the input pipeline reads them by
random access (`builder.as_data_source`), which exact resumption needs.

FFHQ: says how many of the 70,000 files are present and where the validation split
comes from (datasets/ffhq.py), and rebuilds a prepared dataset whose files have changed
since it was built (files added, removed or replaced by others).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

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


def _changed_ffhq_files(builder: tfds.core.DatasetBuilder, manual_dir: str | Path) -> str:
  """Why the prepared FFHQ in `builder` no longer matches the files in manual_dir ('' when
  it does); prints what is there."""
  files = ffhq.find_image_files(ffhq.find_source_dir(Path(manual_dir)))
  if not files:
    return ''  # The builder names the empty folder.
  print(ffhq.split_summary(files), flush=True)
  if not builder.is_prepared():
    return ''
  built_from = builder.info.metadata.get('source_count')
  if builder.info.metadata.get('source_files') == ffhq.source_record(files):
    return ''
  return (f'the files in {manual_dir} have changed since {builder.data_dir} was built '
          f'({built_from:,} images then, {len(files):,} now)')


def prepare_dataset(
    name: str, manual_dir: str | Path, data_dir: str | Path | None = None
) -> tfds.core.DatasetBuilder:
  """Builds `name` from `manual_dir` into `data_dir` unless it is already there (for FFHQ:
  built from the same files)."""
  builder = make_builder(name, data_dir)
  changed = _changed_ffhq_files(builder, manual_dir) if name.startswith('ffhq/') else ''
  if not changed:
    if not builder.is_prepared():
      _build(builder, manual_dir)
    return builder
  # The outdated build is set aside until the new one is complete, and restored if it fails.
  built = epath.Path(builder.data_dir)
  outdated = built.with_name(built.name + '.outdated')
  print(f'Rebuilding {name}: {changed}.', flush=True)
  built.rename(outdated)
  builder = make_builder(name, data_dir)
  try:
    _build(builder, manual_dir)
  except BaseException:
    if not built.exists():
      outdated.rename(built)
    raise
  outdated.rmtree()
  return builder


def _build(builder: tfds.core.DatasetBuilder, manual_dir: str | Path) -> None:
  print(f'Preparing {builder.info.full_name} from {manual_dir} into {builder.data_dir}',
        flush=True)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          manual_dir=str(manual_dir), try_download_gcs=False),
      file_format='array_record',
  )


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
