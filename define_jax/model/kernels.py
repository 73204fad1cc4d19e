"""How the model's convolutions, upsampling and max-pool run: plain XLA ops, or XLA:CPU tricks.

The model (models.py, vgg.py) says *what* it computes; this module says *how*. Each
function has a plain form (lax.conv_general_dilated, nearest upsampling and concatenation,
reduce-window max-pool), used on GPU and TPU, and a CPU form, faster on XLA:CPU, whose size
thresholds were measured there (the figures are at each) and nowhere else. Both forms give
the same values and gradients (tests/test_kernels.py).

The form is chosen once, by platform (jax.default_backend()), when a function is traced;
`cpu_kernels(enabled)` overrides it, e.g. to run both forms on one machine. jit caches
traces, so switch before the first call of a jitted function, not between calls.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# None: decided by the platform; True/False: forced by cpu_kernels().
_forced: bool | None = None


def use_cpu_kernels() -> bool:
  """True when the XLA:CPU forms are in use."""
  return jax.default_backend() == 'cpu' if _forced is None else _forced


@contextlib.contextmanager
def cpu_kernels(enabled: bool) -> Iterator[None]:
  """Forces the CPU forms on (True) or off (False) for functions traced inside."""
  global _forced
  previous, _forced = _forced, enabled
  try:
    yield
  finally:
    _forced = previous


def upsample(x: jax.Array) -> jax.Array:
  """Nearest-neighbour upsampling x2 of an NHWC array."""
  n, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
  return x.reshape(n, 2 * h, 2 * w, c)


# Inputs of at most this many pixels (the deepest levels) are convolved as one matmul of
# their patch matrix: there XLA:CPU's convolution (window about as large as the input) takes
# 10-100x longer, forward and backward; the patch matrix of so small an input is cheap.
_MATMUL_CONV_MAX_PIXELS = 64


def convolve(x: jax.Array, kernel: jax.Array, strides: int, pad: int) -> jax.Array:
  """Cross-correlation of NHWC x with an HWIO kernel, zero padding `pad` on every side."""
  _, h, w, _ = x.shape
  if not use_cpu_kernels() or h * w > _MATMUL_CONV_MAX_PIXELS:
    return jax.lax.conv_general_dilated(
        x, kernel, (strides, strides), ((pad, pad), (pad, pad)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return _patch_matrix_convolve(x, kernel, strides, pad)


def _patch_matrix_convolve(x: jax.Array, kernel: jax.Array, strides: int, pad: int
                           ) -> jax.Array:
  """convolve as one matmul of x's patch matrix: only slices, pads and matmuls, forward and
  backward, to any order of derivative."""
  in_features = x.shape[-1]
  h, w = x.shape[1:3]
  size = kernel.shape[0]
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out_h, out_w = (h + 2 * pad - size) // strides + 1, (w + 2 * pad - size) // strides + 1
  # Channels ordered (row, column, input channel), as in the HWIO kernel's reshape.
  patches = jnp.concatenate(
      [x[:, i:i + strides * (out_h - 1) + 1:strides, j:j + strides * (out_w - 1) + 1:strides]
       for i in range(size) for j in range(size)], axis=-1)
  return patches @ kernel.reshape(size * size * in_features, -1)


def discriminator_conv_general_dilated(x, kernel, window_strides, padding, **lax_options):
  """nn.Conv's `conv_general_dilated` for the PatchGAN discriminator, whose R1 penalty
  differentiates it twice: on CPU every convolution is a patch-matrix matmul, because XLA:CPU
  takes the second derivative of a convolution by a slow route (measured at 128², batch 16,
  32 features: the discriminator's loss and R1 gradients 6.9 s of CPU with lax's
  convolution, 1.3 s as matmuls)."""
  if not use_cpu_kernels():
    return jax.lax.conv_general_dilated(x, kernel, window_strides, padding, **lax_options)
  return _patch_matrix_convolve(x, kernel, window_strides[0], padding[0][0])


def conv_general_dilated(x, kernel, window_strides, padding, **lax_options):
  """nn.Conv's `conv_general_dilated`: `convolve` on CPU (NHWC, HWIO, equal strides and
  symmetric padding, as the U-Net's blocks use), lax's elsewhere."""
  if not use_cpu_kernels():
    return jax.lax.conv_general_dilated(x, kernel, window_strides, padding, **lax_options)
  return convolve(x, kernel, window_strides[0], padding[0][0])


# Outputs of at least this many pixels convolve the upsampled part at its own resolution
# (measured on XLA:CPU: 12-75% less time for the decoder's 32² to 128² levels, slower at 16²).
_LOW_RESOLUTION_CONV_MIN_PIXELS = 32 * 32
# _PHASE_TAPS[p, t, i]: how much 3x3-kernel row (column) i contributes to tap t of the 2x2
# low-resolution window seen by output rows (columns) of parity p: nearest upsampling
# repeats each low-resolution row, so rows 2r-1, 2r, 2r+1 of the upsampled input are rows
# r-1, r, r (even p) and 2r, 2r+1, 2r+2 are r, r, r+1 (odd p).
_PHASE_TAPS = np.array([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], np.float32)


def convolve_upsampled(low_res: jax.Array, x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 convolution (stride 1, padding 1) of concat(nearest-upsample-2x(low_res), x).

  kernel is float32 HWIO, its first input channels low_res's. On CPU, for large outputs,
  the upsampled part is never built: each output parity sees a 2x2 window of low_res
  whose taps are sums of the 3x3 kernel's, so one 2x2 convolution at low resolution with
  the four parities' kernels as output channels does it with 4/9 of the multiplications.
  """
  n, h, w, low_features = low_res.shape
  if not use_cpu_kernels() or 4 * h * w < _LOW_RESOLUTION_CONV_MIN_PIXELS:
    full = jnp.concatenate([upsample(low_res), x.astype(low_res.dtype)], axis=-1)
    return convolve(full, kernel.astype(full.dtype), 1, 1)
  out_features = kernel.shape[-1]
  phase_kernel = jnp.einsum('pai,qbj,ijco->abcpqo', _PHASE_TAPS, _PHASE_TAPS,
                            kernel[:, :, :low_features]).reshape(2, 2, low_features, -1)
  # Output pixel (2i + p, 2j + q) is z[:, i + p, j + q, p, q]: odd parities look one row
  # (column) further down the padded input.
  z = convolve(jnp.pad(low_res, ((0, 0), (1, 1), (1, 1), (0, 0))),
               phase_kernel.astype(low_res.dtype), 1, 0)
  z = z.reshape(n, h + 1, w + 1, 2, 2, out_features)
  rows = [jnp.stack([z[:, p:p + h, q:q + w, p, q] for q in range(2)], axis=3) for p in range(2)]
  upsampled_part = jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, out_features)
  return upsampled_part + convolve(x, kernel[:, :, low_features:].astype(x.dtype), 1, 1)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pool, stride 2, no padding (an odd last row or column is dropped), NHWC.

  A tie's gradient goes to the first maximum in row-major order, as in PyTorch.
  """
  if use_cpu_kernels():
    return _max_pool_2x2_cpu(x)
  return nn.max_pool(x, (2, 2), strides=(2, 2))


@jax.custom_vjp
def _max_pool_2x2_cpu(x: jax.Array) -> jax.Array:
  """nn.max_pool's values and gradient as a reshape and max with a hand-written backward
  pass: XLA:CPU differentiates reduce_window max through an argmax reduce-window over
  index arrays, which cost about a fifth of a training step on a 2-core CPU."""
  return jnp.max(_blocks(x), axis=(2, 4))


def _blocks(x: jax.Array) -> jax.Array:
  """[N,H,W,C] -> [N,H/2,2,W/2,2,C], the odd last row or column dropped."""
  n, h, w, c = x.shape
  return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)


def _max_pool_forward(x):
  pooled = _max_pool_2x2_cpu(x)
  return pooled, (x, pooled)


def _max_pool_backward(residuals, grad):
  x, pooled = residuals
  blocks = _blocks(x)
  taken = jnp.zeros(pooled.shape, bool)
  rows = []
  for i in range(2):
    row = []
    for j in range(2):
      first_max = (blocks[:, :, i, :, j] == pooled) & ~taken
      taken = taken | first_max
      row.append(jnp.where(first_max, grad, 0))
    rows.append(jnp.stack(row, axis=3))
  grad_blocks = jnp.stack(rows, axis=2)  # [N,H/2,2,W/2,2,C]
  n, h, w, c = x.shape
  grad_x = grad_blocks.reshape(n, h // 2 * 2, w // 2 * 2, c)
  return (jnp.pad(grad_x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


_max_pool_2x2_cpu.defvjp(_max_pool_forward, _max_pool_backward)
