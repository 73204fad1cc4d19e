"""Partial-convolution U-Net (Liu et al. 2018) and a plain U-Net baseline, Flax linen.

Both U-Nets mirror naoto0804/pytorch-inpainting-with-partial-conv's `PConvUNet`:

  encoder level i = 1..L: conv with kernel 7, 5, 5, 3, 3, ... and stride 2,
    min(base_features * 2**(i-1), max_features) channels, BatchNorm (not on level 1),
    ReLU. Convolutions followed by BatchNorm have no bias; as in the reference, neither
    has level 1's.
  decoder level i = L..1: nearest-neighbour upsampling x2, concatenation with the skip
    (encoder level i-1's output, the network input for i = 1), conv 3x3 stride 1 with
    the skip's channel count (the image's for i = 1), BatchNorm and LeakyReLU(0.2);
    level 1 instead has a bias and no BatchNorm or activation (linear output).

Variable naming, relied on by the training code (e.g. to check that a frozen encoder's
statistics did not move, by the `enc_`/`dec_` prefixes):

  params:      enc_1 .. enc_L, dec_L .. dec_1, each holding
                 PartialConv_0 {kernel (HWIO), bias?}   (PConvUNet)
                 Conv_0 {kernel (HWIO), bias?}          (UNet)
                 BatchNorm_0 {scale, bias}              (where there is BatchNorm)
  batch_stats: enc_2 .. enc_L, dec_L .. dec_2, each BatchNorm_0 {mean, var}

Mask convention: float, 1 = known pixel, 0 = hole. Images float NHWC, masks N,H,W,1
(or one channel per image channel).

Two input options (both off in the paper's configuration) let the network see thin holes,
which partial convolutions alone barely distinguish from dark lines (see prefill.py):
`mask_channel` adds the mask as an always-known input channel; `prefill='harmonic'` adds a
harmonic fill of the holes as always-known input channels and makes the output a
correction added to that fill.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from define_jax import prefill as prefill_lib
from define_jax import validation

Dtype = Any
Activation = Optional[Callable[[jax.Array], jax.Array]]

_leaky_relu = lambda x: nn.leaky_relu(x, negative_slope=0.2)


class PartialConv(nn.Module):
  """Partial convolution: y = W^T (X*M) * sum(1)/sum(M) + b where sum(M) > 0, else 0.

  sum(1) = kernel_size**2 * C counts every window position, including the zero padding,
  so the image border is treated as a hole and renormalised like one. Padding is
  (kernel_size - 1) // 2 on every side (PyTorch's, symmetric also at stride 2).

  __call__(x [N,H,W,C], mask [N,H,W,1] or [N,H,W,C]) returns (y, new_mask [N,H',W',1]),
  new_mask = 1 where the window saw at least one known value.

  The decoder passes upsampled=(features [N,H/2,W/2,Cu], their mask [N,H/2,W/2,1]): the
  layer then convolves concat(nearest-upsample-2x(features), x), each part under its own
  (upsampled) mask, without building the upsampled features where that pays (see
  convolve_upsampled). The kernel's first Cu input channels are the upsampled ones.
  """

  features: int
  kernel_size: int
  strides: int = 1
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array,
               upsampled: tuple[jax.Array, jax.Array] | None = None
               ) -> tuple[jax.Array, jax.Array]:
    if mask.shape[-1] not in (1, x.shape[-1]):
      raise ValueError(f'PartialConv mask has {mask.shape[-1]} channels; need 1 or the '
                       f"input's {x.shape[-1]}.")
    upsampled_features = 0 if upsampled is None else upsampled[0].shape[-1]
    if upsampled is not None and (self.kernel_size, self.strides) != (3, 1):
      raise ValueError('PartialConv with upsampled input needs kernel_size 3 and stride 1.')
    in_features = upsampled_features + x.shape[-1]
    kernel = self.param('kernel', nn.initializers.he_normal(),
                        (self.kernel_size, self.kernel_size, in_features, self.features),
                        jnp.float32)
    pad = (self.kernel_size - 1) // 2
    padding = ((pad, pad), (pad, pad))
    window_strides = (self.strides, self.strides)

    # The mask path needs no gradient and stays float32 so sums of many 1s are exact.
    # sum(M) per window: the mask summed over channels (a single-channel mask stands for
    # all of its channels), then over the k x k window; never a C_in -> C_out convolution
    # of the mask.
    mask = jax.lax.stop_gradient(mask.astype(jnp.float32))
    channel_sum = jnp.sum(mask, axis=-1, keepdims=True) * (x.shape[-1] // mask.shape[-1])
    x, mask_x = nn.dtypes.promote_dtype(x, mask, dtype=self.dtype)
    x = x * mask_x
    if upsampled is None:
      y = convolve(x, kernel.astype(x.dtype), self.strides, pad)
    else:
      up_x, up_mask = upsampled
      up_mask = jax.lax.stop_gradient(up_mask.astype(jnp.float32))
      channel_sum = channel_sum + upsampled_features * _upsample(up_mask)
      up_x, up_mask_x = nn.dtypes.promote_dtype(up_x, up_mask, dtype=self.dtype)
      y = convolve_upsampled(up_x * up_mask_x, x, kernel)
    mask_sum = jax.lax.reduce_window(
        channel_sum, 0.0, jax.lax.add, (1, self.kernel_size, self.kernel_size, 1),
        (1,) + window_strides + (1,), ((0, 0),) + padding + ((0, 0),))
    seen = mask_sum > 0
    window_size = self.kernel_size * self.kernel_size * in_features
    # jnp.maximum keeps the unused branch of the where finite.
    ratio = jnp.where(seen, window_size / jnp.maximum(mask_sum, 1e-8), 0.0)
    y = y * ratio.astype(y.dtype)
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
      y = y + jnp.where(seen, bias.astype(y.dtype), 0)
    return y, seen.astype(jnp.float32)


# Inputs of at most this many pixels (the deepest levels) are convolved as one matmul of
# their patch matrix: there XLA:CPU's convolution (window about as large as the input) takes
# 10-100x longer, forward and backward; the patch matrix of so small an input is cheap.
_MATMUL_CONV_MAX_PIXELS = 64


def convolve(x: jax.Array, kernel: jax.Array, strides: int, pad: int) -> jax.Array:
  """Cross-correlation of NHWC x with an HWIO kernel, zero padding `pad` on every side."""
  n, h, w, in_features = x.shape
  if h * w > _MATMUL_CONV_MAX_PIXELS:
    return jax.lax.conv_general_dilated(
        x, kernel, (strides, strides), ((pad, pad), (pad, pad)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  size = kernel.shape[0]
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out_h, out_w = (h + 2 * pad - size) // strides + 1, (w + 2 * pad - size) // strides + 1
  # Channels ordered (row, column, input channel), as in the HWIO kernel's reshape.
  patches = jnp.concatenate(
      [x[:, i:i + strides * (out_h - 1) + 1:strides, j:j + strides * (out_w - 1) + 1:strides]
       for i in range(size) for j in range(size)], axis=-1)
  return patches @ kernel.reshape(size * size * in_features, -1)


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

  kernel is float32 HWIO, its first input channels low_res's. For large outputs the
  upsampled part is never built: each output parity sees a 2x2 window of low_res whose
  taps are sums of the 3x3 kernel's, so one 2x2 convolution at low resolution with the
  four parities' kernels as output channels does it with 4/9 of the multiplications.
  """
  n, h, w, low_features = low_res.shape
  if 4 * h * w < _LOW_RESOLUTION_CONV_MIN_PIXELS:
    full = jnp.concatenate([_upsample(low_res), x.astype(low_res.dtype)], axis=-1)
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


class PConvBlock(nn.Module):
  """PartialConv, then optional BatchNorm and activation."""

  features: int
  kernel_size: int
  strides: int = 1
  use_bias: bool = False
  use_batch_norm: bool = True
  activation: Activation = None
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array,
               upsampled: tuple[jax.Array, jax.Array] | None = None, *,
               use_running_average: bool) -> tuple[jax.Array, jax.Array]:
    x, mask = PartialConv(self.features, self.kernel_size, self.strides,
                          use_bias=self.use_bias, dtype=self.dtype)(x, mask, upsampled)
    if self.use_batch_norm:
      x = _batch_norm(use_running_average, self.axis_name, self.dtype)(x)
    if self.activation is not None:
      x = self.activation(x)
    return x, mask


class ConvBlock(nn.Module):
  """nn.Conv with PartialConv's symmetric padding, then optional BatchNorm and activation."""

  features: int
  kernel_size: int
  strides: int = 1
  use_bias: bool = False
  use_batch_norm: bool = True
  activation: Activation = None
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, use_running_average: bool) -> jax.Array:
    pad = (self.kernel_size - 1) // 2
    x = nn.Conv(self.features, (self.kernel_size, self.kernel_size),
                strides=(self.strides, self.strides), padding=((pad, pad), (pad, pad)),
                use_bias=self.use_bias, kernel_init=nn.initializers.he_normal(),
                dtype=self.dtype, param_dtype=jnp.float32,
                conv_general_dilated=_symmetric_convolve)(x)
    if self.use_batch_norm:
      x = _batch_norm(use_running_average, self.axis_name, self.dtype)(x)
    if self.activation is not None:
      x = self.activation(x)
    return x


def _symmetric_convolve(x, kernel, window_strides, padding, **unused_lax_options):
  """nn.Conv's lax.conv_general_dilated (NHWC, HWIO, equal strides and padding) as convolve."""
  return convolve(x, kernel, window_strides[0], padding[0][0])


def _batch_norm(use_running_average: bool, axis_name: Optional[str], dtype: Dtype):
  # PyTorch's BatchNorm2d defaults; statistics are reduced and stored in float32.
  return nn.BatchNorm(use_running_average=use_running_average, momentum=0.9, epsilon=1e-5,
                      axis_name=axis_name, dtype=dtype, param_dtype=jnp.float32)


class PConvUNet(nn.Module):
  """The partial-convolution U-Net; layers=7 for 256x256 inputs, 8 for 512x512.

  Attributes:
    layers: number of encoder (and decoder) levels, >= 2.
    base_features: channels of the first encoder level, doubled per level ...
    max_features: ... up to this many.
    axis_name: pmap axis over which BatchNorm averages its batch statistics; None to
      init/apply outside pmap.
    freeze_encoder_bn: encoder BatchNorm always normalises with, and never updates, its
      running statistics (DeFINe's fine-tuning stage); decoder BatchNorm still trains.
    dtype: computation dtype; parameters, BatchNorm statistics and the output stay float32.
    mask_channel: also feed the mask itself as an (always known) input channel.
    prefill: 'none', or 'harmonic': feed a harmonic fill of the holes as (always known)
      input channels and output a correction added to it.
  """

  layers: int = 7
  base_features: int = 64
  max_features: int = 512
  axis_name: Optional[str] = None
  freeze_encoder_bn: bool = False
  dtype: Dtype = jnp.float32
  mask_channel: bool = False
  prefill: str = 'none'

  @nn.compact
  def __call__(self, image: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
    """Raw network output [N,H,W,C] (not composited with the known pixels)."""
    validation.check_image_and_mask(image, mask, self.layers)
    block = lambda **kwargs: PConvBlock(axis_name=self.axis_name, dtype=self.dtype, **kwargs)
    x, x_mask, base = _network_input(image, mask, self.mask_channel, self.prefill)

    skips = [(x, x_mask)]
    for level in range(1, self.layers + 1):
      x, x_mask = block(
          features=_encoder_features(self, level), kernel_size=_encoder_kernel_size(level),
          strides=2, use_batch_norm=level > 1, activation=nn.relu, name=f'enc_{level}')(
              x, x_mask, use_running_average=not train or self.freeze_encoder_bn)
      skips.append((x, x_mask))

    for level in range(self.layers, 0, -1):
      skip, skip_mask = skips[level - 1]
      last = level == 1
      # Convolves concat(upsample(x), skip), each part masked by its own mask.
      x, x_mask = block(
          features=image.shape[-1] if last else skip.shape[-1], kernel_size=3, use_bias=last,
          use_batch_norm=not last, activation=None if last else _leaky_relu,
          name=f'dec_{level}')(skip, skip_mask, (x, x_mask), use_running_average=not train)
    return (x + base).astype(jnp.float32)


class UNet(nn.Module):
  """PConvUNet's architecture with ordinary convolutions, the mask as an extra input channel.

  Same attributes and variable naming as PConvUNet (blocks hold Conv_0 instead of
  PartialConv_0); the mask is always an input channel (mask_channel is ignored).
  """

  layers: int = 7
  base_features: int = 64
  max_features: int = 512
  axis_name: Optional[str] = None
  freeze_encoder_bn: bool = False
  dtype: Dtype = jnp.float32
  mask_channel: bool = True
  prefill: str = 'none'

  @nn.compact
  def __call__(self, image: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
    """Raw network output [N,H,W,C] (not composited with the known pixels)."""
    validation.check_image_and_mask(image, mask, self.layers)
    block = lambda **kwargs: ConvBlock(axis_name=self.axis_name, dtype=self.dtype, **kwargs)
    x, _, base = _network_input(image, mask, True, self.prefill)
    skips = [x]
    for level in range(1, self.layers + 1):
      x = block(
          features=_encoder_features(self, level), kernel_size=_encoder_kernel_size(level),
          strides=2, use_batch_norm=level > 1, activation=nn.relu, name=f'enc_{level}')(
              x, use_running_average=not train or self.freeze_encoder_bn)
      skips.append(x)

    for level in range(self.layers, 0, -1):
      skip = skips[level - 1]
      last = level == 1
      x = jnp.concatenate([_upsample(x), skip.astype(x.dtype)], axis=-1)
      x = block(
          features=image.shape[-1] if last else skip.shape[-1], kernel_size=3,
          use_bias=last, use_batch_norm=not last,
          activation=None if last else _leaky_relu, name=f'dec_{level}')(
              x, use_running_average=not train)
    return (x + base).astype(jnp.float32)


PREFILLS = ('none', 'harmonic')


def _network_input(image: jax.Array, mask: jax.Array, mask_channel: bool, prefill: str
                   ) -> tuple[jax.Array, jax.Array, jax.Array | float]:
  """(input channels, their per-channel mask, base the output is added to).

  Without options: (image, mask, 0). The extra channels (fill, mask) are always known;
  the image channels are zeroed in the holes (what a partial convolution does anyway).
  """
  if prefill not in PREFILLS:
    raise ValueError(f'prefill={prefill!r}: expected one of {PREFILLS}.')
  if not mask_channel and prefill == 'none':
    return image, mask, 0.0
  mask = jnp.broadcast_to(mask, image.shape[:3] + (1,) if mask.shape[-1] == 1 else image.shape)
  mask = mask.astype(jnp.float32)
  channels, channel_masks = [image * mask], [jnp.broadcast_to(mask, image.shape)]
  base = 0.0
  if prefill == 'harmonic':
    base = prefill_lib.harmonic_fill(image, mask)
    channels.append(base.astype(image.dtype))
    channel_masks.append(jnp.ones_like(base))
  if mask_channel:
    hole_free = jnp.min(mask, axis=-1, keepdims=True)
    channels.append(hole_free.astype(image.dtype))
    channel_masks.append(jnp.ones_like(hole_free))
  return (jnp.concatenate(channels, axis=-1), jnp.concatenate(channel_masks, axis=-1),
          base)


def _encoder_features(unet: PConvUNet | UNet, level: int) -> int:
  return min(unet.base_features * 2**(level - 1), unet.max_features)


def _encoder_kernel_size(level: int) -> int:
  return (7, 5, 5)[level - 1] if level <= 3 else 3


def _upsample(x: jax.Array) -> jax.Array:
  """Nearest-neighbour upsampling x2 of an NHWC array."""
  n, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
  return x.reshape(n, 2 * h, 2 * w, c)
