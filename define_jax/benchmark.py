"""Benchmarks, one subcommand each, each printing ONE JSON line.

    python -m define_jax.benchmark pipeline --data_dir DIR [--image_size 256] [--batch 6] \
        [--steps N]
    python -m define_jax.benchmark pipeline --config configs/NAME.py [--data_dir DIR]

Subcommands import their heavy dependencies lazily: only `pipeline` imports
TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from collections.abc import Callable, Sequence

import ml_collections


def load_config(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file; 'path:arg' passes arg, as config_flags does."""
  path, _, argument = path.partition(':')
  spec = importlib.util.spec_from_file_location('benchmark_config', path)
  if spec is None or spec.loader is None:
    raise FileNotFoundError(f'cannot load config file {path}')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(argument) if argument else module.get_config()


def default_pipeline_config(image_dir: str) -> ml_collections.ConfigDict:
  """A training-like config reading a folder of photos with generated masks."""
  return ml_collections.ConfigDict(
      {
          'seed': 0,
          'image_size': 256,
          'batch_size': 6,
          'dataset': 'image_folder',
          'image_dir': image_dir,
          'data_dir': None,
          'validation_fraction': 0.1,
          'masks': 'generated',
          'mask_dir': '',
          'hole_ratio_min': 0.05,
          'hole_ratio_max': 0.6,
          'mask_augment': True,
          'num_eval_images': 100,
          'prefetch': 4,
      }
  )


def run_pipeline(args: argparse.Namespace) -> dict:
  """Training batches per second, counted as the training loop consumes them."""
  from define_jax import input_pipeline  # TensorFlow is imported here only

  if args.config:
    config = load_config(args.config)
    if args.data_dir:
      config[('image_dir' if config.dataset == 'image_folder' else 'data_dir')] = args.data_dir
  elif args.data_dir:
    config = default_pipeline_config(args.data_dir)
  else:
    raise SystemExit('pipeline: give --data_dir (a folder of images) or --config')
  if args.image_size:
    config.image_size = args.image_size
  if args.batch:
    config.batch_size = args.batch

  start = time.perf_counter()
  iterator = input_pipeline.create_train_dataset(config).as_numpy_iterator()
  next(iterator)
  first_batch_s = time.perf_counter() - start
  for _ in range(args.warmup):
    next(iterator)
  batch_times = []
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(args.steps):
    batch_start = time.perf_counter()
    batch = next(iterator)
    batch_times.append(time.perf_counter() - batch_start)
  elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
  del iterator  # a live tf.data iterator can hang the interpreter's exit
  images = args.steps * config.batch_size
  return {
      'benchmark': 'pipeline',
      'images_per_s': round(images / elapsed, 1),
      'ms_per_batch_median': round(1e3 * statistics.median(batch_times), 2),
      'ms_per_batch_p90': round(1e3 * statistics.quantiles(batch_times, n=10)[-1], 2),
      # CPU time of all pipeline threads per image: a figure that other load on a
      # shared machine does not distort (throughput <= cores / cpu time per image).
      'cpu_ms_per_image': round(1e3 * cpu_s / images, 3),
      'first_batch_s': round(first_batch_s, 2),
      'steps': args.steps,
      'batch_size': config.batch_size,
      'image_size': config.image_size,
      'batch_shape': {name: list(value.shape) for name, value in batch.items()},
      'dataset': config.dataset,
      'masks': config.get('masks', 'generated'),
      'skipped_inputs': input_pipeline.skipped_input_counts(),
  }


SUBCOMMANDS: dict[str, Callable[[argparse.Namespace], dict]] = {'pipeline': run_pipeline}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  subcommands = parser.add_subparsers(dest='subcommand', required=True)
  pipeline = subcommands.add_parser(
      'pipeline', help='input pipeline throughput (images with masks per second)'
  )
  pipeline.add_argument(
      '--config', help='config file (default: image folder at --data_dir, generated masks)'
  )
  pipeline.add_argument(
      '--data_dir',
      help='image folder; with --config: image_dir for image folders, else TFDS data_dir',
  )
  pipeline.add_argument('--image_size', type=int, help="default 256 (or the config's)")
  pipeline.add_argument('--batch', type=int, help="global batch size, default 6 (or the config's)")
  pipeline.add_argument('--steps', type=int, default=300, help='timed batches')
  pipeline.add_argument('--warmup', type=int, default=20, help='untimed batches after the first')
  return parser


def main(argv: Sequence[str] | None = None) -> None:
  args = build_parser().parse_args(argv)
  print(json.dumps(SUBCOMMANDS[args.subcommand](args)), flush=True)


if __name__ == '__main__':
  main()
