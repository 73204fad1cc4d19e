"""Inpainting losses of Liu et al. 2018 and DeFINe, as pure jit-able functions.

Mask convention: 1 = known pixel, 0 = hole; masks [N,H,W,1] broadcast over channels.
Every loss is a mean over elements (PyTorch's nn.L1Loss convention), so terms are
comparable across image sizes and batch sizes.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from define_jax.model import masking
from define_jax.model import shape_checks

Features = Sequence[jax.Array]
FeatureFn = Callable[[jax.Array], Features]

_V2 = {'valid': 1.0, 'hole': 6.0}
_V3 = {**_V2, 'perceptual': 0.05, 'style': 120.0}
# The loss variants compared in DeFINe; 'final' is DeFINe's, 'pconv' Liu et al.'s.
LOSS_PRESETS: dict[str, dict[str, float]] = {
    'l1': {'l1': 1.0},
    'valid_hole': _V2,
    'style': _V3,
    'final': {**_V3, 'tv': 2.0},
    'pconv': {**_V3, 'tv': 0.1},
    # V5: V4 + a PatchGAN's non-saturating adversarial term. 0.1 is EdgeConnect's
    # adversarial weight beside L1 1, perceptual 0.1 and style 250 - the same balance as
    # DeFINe's 6 / 0.05 / 120 within a factor of about two.
    'final_adversarial': {**_V3, 'tv': 2.0, 'adversarial': 0.1},
}
LOSS_TERMS = ('l1', 'valid', 'hole', 'perceptual', 'style', 'tv', 'adversarial')
TV_REGIONS = ('dilated_hole', 'image')


def get_loss_weights(name: str) -> dict[str, float]:
  """A copy of the preset's weights; ValueError naming the presets for an unknown name."""
  if name not in LOSS_PRESETS:
    raise ValueError(f'Unknown loss preset {name!r}; expected one of {sorted(LOSS_PRESETS)}.')
  return dict(LOSS_PRESETS[name])


def needs_vgg(weights: Mapping[str, float]) -> bool:
  """Whether a loss with these weights computes VGG16 features (perceptual or style)."""
  return bool(weights.get('perceptual', 0) or weights.get('style', 0))


def needs_discriminator(weights: Mapping[str, float]) -> bool:
  """Whether a loss with these weights trains a discriminator (adversarial term)."""
  return bool(weights.get('adversarial', 0))


def generator_adversarial_loss(fake_logits: jax.Array) -> jax.Array:
  """Non-saturating GAN loss of the generator: mean softplus(-D(fake)) over patches."""
  return jnp.mean(jax.nn.softplus(-fake_logits.astype(jnp.float32)))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Non-saturating GAN loss of the discriminator: softplus(-D(real)) + softplus(D(fake)),
  means over patches."""
  return (jnp.mean(jax.nn.softplus(-real_logits.astype(jnp.float32))) +
          jnp.mean(jax.nn.softplus(fake_logits.astype(jnp.float32))))


def r1_penalty(discriminator: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
  """Mescheder et al.'s R1: mean over images of |d sum(D(real)) / d real|², which keeps the
  discriminator flat on real data (multiply by gamma / 2)."""
  gradient = jax.grad(lambda x: jnp.sum(discriminator(x).astype(jnp.float32)))(real)
  return jnp.mean(jnp.sum(jnp.square(gradient), axis=(1, 2, 3)))


def l1(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(a - b))


def valid_loss(output: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean |mask * (output - target)| over all N*H*W*C elements."""
  return jnp.mean(jnp.abs(mask * (output - target)))


def hole_loss(output: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean |(1 - mask) * (output - target)| over all N*H*W*C elements."""
  return jnp.mean(jnp.abs((1 - mask) * (output - target)))


def gram_matrix(features: jax.Array) -> jax.Array:
  """[N,H,W,C] -> [N,C,C] Gram matrices normalised by C*H*W."""
  _, h, w, c = features.shape
  return jnp.einsum('nhwc,nhwd->ncd', features, features) / (c * h * w)


def perceptual_loss(feats_out: Features, feats_comp: Features, feats_gt: Features) -> jax.Array:
  return sum(l1(out, gt) + l1(comp, gt)
             for out, comp, gt in zip(feats_out, feats_comp, feats_gt, strict=True))


def style_loss(feats: Features, feats_gt: Features) -> jax.Array:
  return sum(l1(gram_matrix(f), gram_matrix(g)) for f, g in zip(feats, feats_gt, strict=True))


def tv_loss(comp: jax.Array, mask: jax.Array, region: str = 'dilated_hole') -> jax.Array:
  """Total variation (L1 of horizontal and vertical neighbour differences) of comp.

  region='dilated_hole' (the paper's): P is the hole region dilated by one pixel (3x3,
  so diagonal neighbours count). A difference counts when either of its two pixels is
  in P, and the sum of |differences| over both directions is divided by the number of
  image elements N*H*W*C. (The paper requires both pixels in P; the extra differences
  lie between two known pixels, so the gradient is the same.)

  region='image' (naoto0804's): mean |horizontal difference| + mean |vertical
  difference| over the whole image, each mean over its own number of differences.
  """
  dx = jnp.abs(comp[:, :, 1:] - comp[:, :, :-1])
  dy = jnp.abs(comp[:, 1:] - comp[:, :-1])
  if region == 'image':
    return jnp.mean(dx) + jnp.mean(dy)
  if region != 'dilated_hole':
    raise ValueError(f'tv region {region!r}: expected one of {TV_REGIONS}.')
  hole = (1 - mask).astype(jnp.float32)
  dilated = jax.lax.reduce_window(hole, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1),
                                  ((0, 0), (1, 1), (1, 1), (0, 0))) > 0
  in_x = dilated[:, :, 1:] | dilated[:, :, :-1]
  in_y = dilated[:, 1:] | dilated[:, :-1]
  return (jnp.sum(jnp.where(in_x, dx, 0)) + jnp.sum(jnp.where(in_y, dy, 0))) / comp.size


def total_loss(weights: Mapping[str, float], output: jax.Array, target: jax.Array,
               mask: jax.Array, vgg_features: FeatureFn | None = None,
               tv_region: str = 'dilated_hole',
               discriminator: Callable[[jax.Array], jax.Array] | None = None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted sum of the loss terms, and every computed term ('total' included).

  Args:
    weights: Python floats keyed by LOSS_TERMS; 'style' weighs style_out + style_comp.
      Terms with zero or absent weight are not computed (decided at trace time), so
      without perceptual and style terms VGG is never called.
    output: raw network output [N,H,W,C] (any float dtype; losses are float32).
    target: ground truth [N,H,W,C].
    mask: 1 = known, 0 = hole, [N,H,W,1] or [N,H,W,C].
    vgg_features: images [B,H,W,3] in [0, 1] -> (pool1, pool2, pool3); required by the
      perceptual and style terms.
    tv_region: see tv_loss.
    discriminator: images [B,H,W,3] -> patch logits; required by the adversarial term,
      which scores the composite.
  """
  shape_checks.check_image_and_mask(target, mask)
  if output.shape != target.shape:
    raise ValueError(f'output shape {output.shape} differs from target shape {target.shape}.')
  unknown = set(weights) - set(LOSS_TERMS)
  if unknown:
    raise ValueError(f'Unknown loss weights {sorted(unknown)}; expected keys in {LOSS_TERMS}.')
  if tv_region not in TV_REGIONS:
    raise ValueError(f'tv_region {tv_region!r}: expected one of {TV_REGIONS}.')
  active = {k: w for k, w in weights.items() if w}
  output, target, mask = (x.astype(jnp.float32) for x in (output, target, mask))
  comp = masking.composite(output, target, mask)

  terms = {}
  if 'l1' in active:
    terms['l1'] = l1(output, target)
  if 'valid' in active:
    terms['valid'] = valid_loss(output, target, mask)
  if 'hole' in active:
    terms['hole'] = hole_loss(output, target, mask)
  if needs_vgg(active):
    if vgg_features is None:
      raise ValueError('The perceptual and style losses need vgg_features; got None.')
    # Output and composite in one batched VGG call; the ground truth in a call of its own
    # under stop_gradient, because in a shared batch the backward pass would still
    # propagate (zero) gradients through its third of every convolution.
    batch = output.shape[0]
    feats = [f.astype(jnp.float32) for f in vgg_features(jnp.concatenate([output, comp]))]
    feats_out = [f[:batch] for f in feats]
    feats_comp = [f[batch:] for f in feats]
    feats_gt = [jax.lax.stop_gradient(f.astype(jnp.float32))
                for f in vgg_features(jax.lax.stop_gradient(target))]
    if 'perceptual' in active:
      terms['perceptual'] = perceptual_loss(feats_out, feats_comp, feats_gt)
    if 'style' in active:
      terms['style_out'] = style_loss(feats_out, feats_gt)
      terms['style_comp'] = style_loss(feats_comp, feats_gt)
  if 'tv' in active:
    terms['tv'] = tv_loss(comp, mask, tv_region)
  if 'adversarial' in active:
    if discriminator is None:
      raise ValueError('The adversarial loss needs a discriminator; got None.')
    terms['adversarial'] = generator_adversarial_loss(discriminator(comp))

  total = sum(active[name] * value for name, value in terms.items() if name in active)
  if 'style' in active:
    total += active['style'] * (terms['style_out'] + terms['style_comp'])
  terms['total'] = jnp.asarray(total, jnp.float32)
  return terms['total'], terms
