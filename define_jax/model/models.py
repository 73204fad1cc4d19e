"""The partial-convolution U-Net (Liu et al. 2018) and its plain-convolution twin, Flax linen.

One U-Net, parameterised by its convolution, mirrors naoto0804/pytorch-inpainting-with-
partial-conv's `PConvUNet`:

  encoder level i = 1..L: conv with kernel 7, 5, 5, 3, 3, ... and stride 2,
    min(base_features * 2**(i-1), max_features) channels, BatchNorm (not on level 1),
    ReLU. Convolutions followed by BatchNorm have no bias; as in the reference, neither
    has level 1's.
  decoder level i = L..1: nearest-neighbour upsampling x2, concatenation with the skip
    (encoder level i-1's output, the network input for i = 1), conv 3x3 stride 1 with
    the skip's channel count (the image's for i = 1), BatchNorm and LeakyReLU(0.2);
    level 1 instead has a bias and no BatchNorm or activation (linear output).

`PConvUNet` uses partial convolutions; `UNet` ordinary ones, with the mask always an input
channel. How the convolutions run on each platform is kernels.py's business.

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
`mask_channel` adds the mask as an always-known input channel; `prefill='harmonic'` or
`'biharmonic'` adds a diffusion fill of the holes as always-known input channels and makes
the output a correction added to that fill.

A third, `mirror`, gives the network the face's own symmetry: on an aligned face canvas the
left-right mirror image shows the other eye, the other half of the mouth. The mirrored
image (zero in its holes) and its mask enter the first level through a convolution of their
own, `enc_1/side_input`, added before the activation; it starts at zero, so a network
trained without the mirror computes exactly what it did when the option is switched on
(train.initial_variables adds the missing kernel).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from define_jax.model import kernels
from define_jax.model import prefill as prefill_lib
from define_jax.model import shape_checks

Dtype = Any
Activation = Optional[Callable[[jax.Array], jax.Array]]
# A feature map and its mask (None for plain convolutions, which have none).
Masked = tuple[jax.Array, Optional[jax.Array]]

CONVOLUTIONS = ('partial', 'plain')
PREFILLS = ('none', *prefill_lib.FILLS)

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
  (upsampled) mask (kernels.convolve_upsampled). The kernel's first Cu input channels are
  the upsampled ones.
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
      y = kernels.convolve(x, kernel.astype(x.dtype), self.strides, pad)
    else:
      up_x, up_mask = upsampled
      up_mask = jax.lax.stop_gradient(up_mask.astype(jnp.float32))
      channel_sum = channel_sum + upsampled_features * kernels.upsample(up_mask)
      up_x, up_mask_x = nn.dtypes.promote_dtype(up_x, up_mask, dtype=self.dtype)
      y = kernels.convolve_upsampled(up_x * up_mask_x, x, kernel)
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


class Block(nn.Module):
  """A U-Net level: convolution (partial, or plain with PartialConv's symmetric padding),
  then optional BatchNorm and activation.

  __call__(x, mask, upsampled=None, side=None) -> (y, new mask); a decoder level passes
  upsampled=(features, mask) of the level below, convolved concatenated before x; `side`,
  always-known channels at x's resolution, gets a zero-initialised plain convolution of the
  same geometry whose output is added before BatchNorm and activation.
  """

  features: int
  kernel_size: int
  strides: int = 1
  use_bias: bool = False
  use_batch_norm: bool = True
  activation: Activation = None
  convolution: str = 'partial'
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array], upsampled: Masked | None = None,
               side: jax.Array | None = None, *, use_running_average: bool) -> Masked:
    pad = (self.kernel_size - 1) // 2
    conv = functools.partial(
        nn.Conv, kernel_size=(self.kernel_size, self.kernel_size),
        strides=(self.strides, self.strides), padding=((pad, pad), (pad, pad)), dtype=self.dtype,
        param_dtype=jnp.float32, conv_general_dilated=kernels.conv_general_dilated)
    side_output = None
    if side is not None:
      side_output = conv(self.features, use_bias=False, kernel_init=nn.initializers.zeros_init(),
                         name='side_input')(side)
    if self.convolution == 'partial':
      x, mask = PartialConv(self.features, self.kernel_size, self.strides,
                            use_bias=self.use_bias, dtype=self.dtype)(x, mask, upsampled)
    else:
      if upsampled is not None:
        up_x = upsampled[0]
        x = jnp.concatenate([kernels.upsample(up_x), x.astype(up_x.dtype)], axis=-1)
      x = conv(self.features, use_bias=self.use_bias, kernel_init=nn.initializers.he_normal())(x)
      mask = None
    if side_output is not None:
      x = x + side_output.astype(x.dtype)
    if self.use_batch_norm:
      # PyTorch's BatchNorm2d defaults; statistics are reduced and stored in float32.
      x = nn.BatchNorm(use_running_average=use_running_average, momentum=0.9, epsilon=1e-5,
                       axis_name=self.axis_name, dtype=self.dtype, param_dtype=jnp.float32)(x)
    if self.activation is not None:
      x = self.activation(x)
    return x, mask


class InpaintingUNet(nn.Module):
  """The U-Net; layers=7 for 256x256 inputs, 8 for 512x512.

  Attributes:
    convolution: 'partial' (PConvUNet) or 'plain' (UNet: the mask is always an input
      channel, mask_channel is ignored).
    layers: number of encoder (and decoder) levels, >= 2.
    base_features: channels of the first encoder level, doubled per level ...
    max_features: ... up to this many.
    axis_name: pmap axis over which BatchNorm averages its batch statistics; None to
      init/apply outside pmap.
    freeze_encoder_bn: encoder BatchNorm always normalises with, and never updates, its
      running statistics (DeFINe's fine-tuning stage); decoder BatchNorm still trains.
    dtype: computation dtype; parameters, BatchNorm statistics and the output stay float32.
    mask_channel: also feed the mask itself as an (always known) input channel.
    prefill: 'none', 'harmonic' or 'biharmonic': feed that fill of the holes as (always known)
      input channels and output a correction added to it.
    mirror: also feed the left-right mirror image and its mask (the first level's
      side_input): on an aligned face, the other half of the face.
  """

  convolution: str = 'partial'
  layers: int = 7
  base_features: int = 64
  max_features: int = 512
  axis_name: Optional[str] = None
  freeze_encoder_bn: bool = False
  dtype: Dtype = jnp.float32
  mask_channel: bool = False
  prefill: str = 'none'
  mirror: bool = False

  @nn.compact
  def __call__(self, image: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
    """Raw network output [N,H,W,C] (not composited with the known pixels)."""
    shape_checks.check_image_and_mask(image, mask, self.layers)
    if self.convolution not in CONVOLUTIONS:
      raise ValueError(f'convolution={self.convolution!r}: expected one of {CONVOLUTIONS}.')
    block = functools.partial(Block, convolution=self.convolution, axis_name=self.axis_name,
                              dtype=self.dtype)
    x, x_mask, base = _network_input(
        image, mask, self.mask_channel or self.convolution == 'plain', self.prefill)
    if self.prefill != 'none':  # The fill the output corrects (network.inpaint reads it).
      self.sow('intermediates', 'prefill', base)

    skips = [(x, x_mask)]
    for level in range(1, self.layers + 1):
      side = _mirror_input(image, mask) if self.mirror and level == 1 else None
      x, x_mask = block(
          features=min(self.base_features * 2**(level - 1), self.max_features),
          kernel_size=(7, 5, 5)[level - 1] if level <= 3 else 3, strides=2,
          use_batch_norm=level > 1, activation=nn.relu, name=f'enc_{level}')(
              x, x_mask, side=side, use_running_average=not train or self.freeze_encoder_bn)
      skips.append((x, x_mask))

    for level in range(self.layers, 0, -1):
      skip, skip_mask = skips[level - 1]
      last = level == 1
      x, x_mask = block(
          features=image.shape[-1] if last else skip.shape[-1], kernel_size=3, use_bias=last,
          use_batch_norm=not last, activation=None if last else _leaky_relu,
          name=f'dec_{level}')(skip, skip_mask, (x, x_mask), use_running_average=not train)
    return (x + base).astype(jnp.float32)


PConvUNet = functools.partial(InpaintingUNet, convolution='partial')
UNet = functools.partial(InpaintingUNet, convolution='plain')

# The model registry: config.model.name -> Module. network.create_model sets the Module's
# fields from the model section's fields of the same names, so a new model is one Module
# here, one entry below, and a field in configs/default.py's model section for each
# setting it adds.
MODELS = {'pconv_unet': PConvUNet, 'unet': UNet}


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
  if prefill != 'none':
    base = prefill_lib.fill_holes(prefill, image, mask)
    channels.append(base.astype(image.dtype))
    channel_masks.append(jnp.ones_like(base))
  if mask_channel:
    hole_free = jnp.min(mask, axis=-1, keepdims=True)
    channels.append(hole_free.astype(image.dtype))
    channel_masks.append(jnp.ones_like(hole_free))
  return (jnp.concatenate(channels, axis=-1), jnp.concatenate(channel_masks, axis=-1),
          base)


def _mirror_input(image: jax.Array, mask: jax.Array) -> jax.Array:
  """The left-right mirror of the known pixels (zero in the holes) and of the hole-free mask
  [N,H,W,C+1]: what the other half of an aligned face shows at each position."""
  known = jnp.min(mask.astype(jnp.float32), axis=-1, keepdims=True)
  side = jnp.concatenate([image * known.astype(image.dtype), known.astype(image.dtype)], axis=-1)
  return side[:, :, ::-1, :]


class PatchDiscriminator(nn.Module):
  """PatchGAN discriminator (Isola et al. 2017, the 70×70 variant): images [N,H,W,3] in
  [0, 1] -> one real/fake logit per overlapping patch, [N,H/8-2,W/8-2,1].

  Three 4×4 stride-2 convolutions (features, 2×, 4×), one 4×4 stride-1 (8×), then a 4×4
  stride-1 convolution to one logit, LeakyReLU(0.2) between them. No normalisation: the
  training step stabilises it with an R1 gradient penalty instead (losses.r1_penalty),
  which a BatchNorm's cross-sample dependence would muddle.
  """

  features: int = 64

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images * 2.0 - 1.0
    for level, stride in enumerate((2, 2, 2, 1)):
      x = nn.Conv(self.features * 2 ** level, (4, 4), strides=stride,
                  padding=((1, 1), (1, 1)),
                  conv_general_dilated=kernels.discriminator_conv_general_dilated)(x)
      x = nn.leaky_relu(x, 0.2)
    return nn.Conv(1, (4, 4), padding=((1, 1), (1, 1)),
                   conv_general_dilated=kernels.discriminator_conv_general_dilated)(x)
