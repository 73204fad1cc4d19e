"""Losses against independent NumPy references; total_loss composition and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from define_jax.model import masking
from define_jax.model import models
from define_jax.model import vgg
from define_jax.training import losses

RTOL = 1e-5


def _batch(seed=0, n=2, h=12, w=10, c=3):
  rng = np.random.default_rng(seed)
  output = rng.normal(0.5, 0.4, size=(n, h, w, c)).astype(np.float32)
  target = rng.uniform(size=(n, h, w, c)).astype(np.float32)
  mask = (rng.uniform(size=(n, h, w, 1)) > 0.3).astype(np.float32)
  mask[:, 3:7, 2:6] = 0.0
  mask[:, :, -1] = 1.0  # Keep a known column so the dilated region is not everything.
  return output, target, mask


def _np(*arrays):
  return [np.asarray(a, np.float64) for a in arrays]


def gram_reference(f):
  n, h, w, c = f.shape
  flat = f.reshape(n, h * w, c)
  return np.stack([flat[i].T @ flat[i] for i in range(n)]) / (c * h * w)


def tv_reference_dilated_hole(comp, mask):
  n, h, w, c = comp.shape
  hole = np.broadcast_to(mask < 1, comp.shape[:3] + mask.shape[3:])
  dilated = np.zeros_like(hole)
  for i in range(h):
    for j in range(w):
      dilated[:, i, j] = hole[:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].any(axis=(1, 2))
  total = 0.0
  for i in range(h):
    for j in range(w):
      if j + 1 < w:
        counted = dilated[:, i, j] | dilated[:, i, j + 1]
        total += (np.abs(comp[:, i, j + 1] - comp[:, i, j]) * counted).sum()
      if i + 1 < h:
        counted = dilated[:, i, j] | dilated[:, i + 1, j]
        total += (np.abs(comp[:, i + 1, j] - comp[:, i, j]) * counted).sum()
  return total / comp.size


def test_pixel_losses_match_numpy():
  output, target, mask = _batch()
  o, t, m = _np(output, target, mask)
  np.testing.assert_allclose(losses.l1(output, target), np.abs(o - t).mean(), rtol=RTOL)
  np.testing.assert_allclose(losses.valid_loss(output, target, mask),
                             np.abs(m * o - m * t).mean(), rtol=RTOL)
  np.testing.assert_allclose(losses.hole_loss(output, target, mask),
                             np.abs((1 - m) * o - (1 - m) * t).mean(), rtol=RTOL)
  comp = masking.composite(output, target, mask)
  np.testing.assert_allclose(comp, np.where(m == 1, t, o), rtol=RTOL)


def test_feature_losses_match_numpy():
  rng = np.random.default_rng(1)
  shapes = [(2, 8, 8, 4), (2, 4, 4, 6), (2, 2, 2, 8)]
  out, comp, gt = ([rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(3))
  np.testing.assert_allclose(losses.gram_matrix(out[0]), gram_reference(*_np(out[0])),
                             rtol=RTOL, atol=1e-7)
  expected_perceptual = sum(np.abs(o - g).mean() + np.abs(c - g).mean()
                            for o, c, g in zip(_np(*out), _np(*comp), _np(*gt)))
  np.testing.assert_allclose(losses.perceptual_loss(out, comp, gt), expected_perceptual,
                             rtol=RTOL)
  expected_style = sum(np.abs(gram_reference(o) - gram_reference(g)).mean()
                       for o, g in zip(_np(*out), _np(*gt)))
  np.testing.assert_allclose(losses.style_loss(out, gt), expected_style, rtol=RTOL)


@pytest.mark.parametrize('per_channel', [False, True])
def test_tv_loss_matches_numpy(per_channel):
  output, target, mask = _batch(seed=2)
  if per_channel:
    mask = np.concatenate([mask, np.roll(mask, 3, axis=2), np.ones_like(mask)], axis=-1)
  comp = np.asarray(masking.composite(output, target, mask))
  c, m = _np(comp, mask)
  np.testing.assert_allclose(losses.tv_loss(comp, mask), tv_reference_dilated_hole(c, m),
                             rtol=RTOL)
  expected_image = (np.abs(c[:, :, 1:] - c[:, :, :-1]).mean() +
                    np.abs(c[:, 1:] - c[:, :-1]).mean())
  np.testing.assert_allclose(losses.tv_loss(comp, mask, 'image'), expected_image, rtol=RTOL)


def test_tv_loss_ignores_known_region_far_from_holes():
  comp = np.zeros((1, 8, 8, 1), np.float32)
  comp[0, 0, 0] = 5.0  # Far from the hole: does not count.
  mask = np.ones_like(comp)
  mask[0, 5, 5] = 0.0
  assert float(losses.tv_loss(comp, mask)) == 0.0
  comp[0, 4, 3] = 1.0  # Left of the dilated hole {4..6}x{4..6}: only |comp[4,4] - comp[4,3]|.
  assert float(losses.tv_loss(comp, mask)) == pytest.approx(1.0 / comp.size)


def _toy_features(images):
  """A cheap stand-in for VGG with three feature maps of different sizes."""
  n, h, w, c = images.shape
  pooled = images.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
  return images * 2.0, pooled, pooled**2 + 1.0


def test_total_loss_matches_numpy_composition():
  output, target, mask = _batch(seed=3)
  calls = []

  def features(images):
    calls.append(images.shape)
    return _toy_features(images)

  weights = losses.get_loss_weights('final')
  total, terms = jax.jit(functools.partial(losses.total_loss, weights, vgg_features=features))(
      output, target, mask)
  # Output and composite batched; the ground truth apart, so no backward pass runs through it.
  assert calls == [(2 * output.shape[0],) + output.shape[1:], output.shape]

  o, t, m = _np(output, target, mask)
  c = m * t + (1 - m) * o
  f_out, f_comp, f_gt = _toy_features(o), _toy_features(c), _toy_features(t)
  expected = {
      'valid': np.abs(m * (o - t)).mean(),
      'hole': np.abs((1 - m) * (o - t)).mean(),
      'perceptual': sum(np.abs(a - g).mean() + np.abs(b - g).mean()
                        for a, b, g in zip(f_out, f_comp, f_gt)),
      'style_out': sum(np.abs(gram_reference(a) - gram_reference(g)).mean()
                       for a, g in zip(f_out, f_gt)),
      'style_comp': sum(np.abs(gram_reference(b) - gram_reference(g)).mean()
                        for b, g in zip(f_comp, f_gt)),
      'tv': tv_reference_dilated_hole(c, m),
  }
  expected['total'] = (expected['valid'] + 6 * expected['hole'] + 0.05 * expected['perceptual']
                       + 120 * (expected['style_out'] + expected['style_comp'])
                       + 2.0 * expected['tv'])
  assert set(terms) == set(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(terms[name], value, rtol=RTOL, err_msg=name)
  assert total == terms['total']


def test_l1_preset_and_bfloat16_output():
  output, target, mask = _batch(seed=4)
  total, terms = losses.total_loss(losses.get_loss_weights('l1'),
                                   jnp.asarray(output, jnp.bfloat16), target, mask)
  assert set(terms) == {'l1', 'total'} and total.dtype == jnp.float32
  expected = np.abs(np.asarray(jnp.asarray(output, jnp.bfloat16), np.float64) - target).mean()
  np.testing.assert_allclose(total, expected, rtol=RTOL)


def test_vgg_not_called_without_perceptual_or_style():
  def forbidden(images):
    raise AssertionError('VGG must not be called')

  output, target, mask = _batch()
  weights = {**losses.get_loss_weights('final'), 'perceptual': 0.0, 'style': 0.0}
  _, terms = losses.total_loss(weights, output, target, mask, forbidden)
  assert set(terms) == {'valid', 'hole', 'tv', 'total'}
  with pytest.raises(ValueError, match='need vgg_features'):
    losses.total_loss(losses.get_loss_weights('style'), output, target, mask)


def test_presets_and_bad_arguments():
  assert losses.get_loss_weights('valid_hole') == {'valid': 1.0, 'hole': 6.0}
  assert losses.get_loss_weights('final') == {
      'valid': 1.0, 'hole': 6.0, 'perceptual': 0.05, 'style': 120.0, 'tv': 2.0}
  assert losses.get_loss_weights('pconv')['tv'] == 0.1
  losses.get_loss_weights('final')['tv'] = 0.0  # A copy: the preset is unchanged.
  assert losses.LOSS_PRESETS['final']['tv'] == 2.0
  with pytest.raises(ValueError, match=r"'final'.*'l1'.*'pconv'.*'style'.*'valid_hole'"):
    losses.get_loss_weights('nope')

  output, target, mask = _batch()
  with pytest.raises(ValueError, match='Unknown loss weights'):
    losses.total_loss({'hole_loss': 1.0}, output, target, mask)
  with pytest.raises(ValueError, match='tv_region'):
    losses.total_loss({'tv': 1.0}, output, target, mask, tv_region='hole')
  with pytest.raises(ValueError, match='output shape'):
    losses.total_loss({'l1': 1.0}, output[:1], target, mask)
  with pytest.raises(ValueError, match=r'mask values must lie in \[0, 1\]'):
    losses.total_loss({'l1': 1.0}, output, target, mask * 255)
  with pytest.raises(ValueError, match='mask must have rank 4'):
    losses.total_loss({'l1': 1.0}, output, target, mask[..., 0])


def test_gradients_finite_for_no_hole_and_all_hole_masks():
  image = np.random.default_rng(5).uniform(size=(2, 16, 16, 3)).astype(np.float32)
  model = models.PConvUNet(layers=2, base_features=4)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), image, np.ones_like(image[..., :1]))
  vgg_model = vgg.VGG16Features()
  vgg_params = jax.jit(vgg_model.init)(jax.random.key(1), image)['params']
  features = functools.partial(vgg_model.apply, {'params': vgg_params})
  weights = losses.get_loss_weights('final')

  @jax.jit
  @functools.partial(jax.value_and_grad, has_aux=True)
  def loss_of_params(params, mask):
    output, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                            image * mask, mask, train=True, mutable=['batch_stats'])
    return losses.total_loss(weights, output, image, mask, features)

  @jax.jit
  @jax.grad
  def loss_of_output(output, mask):
    return losses.total_loss(weights, output, image, mask, features)[0]

  for known in (0.0, 1.0):
    mask = np.full((2, 16, 16, 1), known, np.float32)
    (total, terms), grads = loss_of_params(variables['params'], mask)
    assert np.isfinite(total) and all(np.isfinite(v) for v in terms.values())
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # With no known pixel at all a partial-conv net outputs 0 whatever its parameters, so
    # their gradients are exactly zero; otherwise they must flow.
    assert any(np.any(g != 0) for g in jax.tree.leaves(grads)) == bool(known)

    output_grad = loss_of_output(image[::-1] * 0.5, mask)
    assert np.all(np.isfinite(output_grad)) and np.any(output_grad != 0)


def test_adversarial_terms_closed_form():
  """Non-saturating GAN losses at logit 0 are log 2 per side; R1 of a linear discriminator
  D(x) = sum(w * x) over patches is |w|² per image, whatever the input."""
  zeros = jnp.zeros((2, 6, 6, 1))
  np.testing.assert_allclose(losses.generator_adversarial_loss(zeros), np.log(2), rtol=1e-6)
  np.testing.assert_allclose(losses.discriminator_loss(zeros, zeros), 2 * np.log(2), rtol=1e-6)
  # A confident discriminator: real logits high, fake low -> its loss near 0, the generator's high.
  high = jnp.full((2, 6, 6, 1), 8.0)
  assert losses.discriminator_loss(high, -high) < 1e-3
  assert losses.generator_adversarial_loss(-high) > 7.9
  w = jnp.asarray(np.random.default_rng(0).normal(size=(1, 8, 8, 3)), jnp.float32)
  linear = lambda x: jnp.sum(x * w, axis=(1, 2, 3))[:, None, None, None]
  images = jnp.asarray(np.random.default_rng(1).uniform(size=(3, 8, 8, 3)), jnp.float32)
  np.testing.assert_allclose(losses.r1_penalty(linear, images), jnp.sum(w ** 2), rtol=1e-5)


def test_adversarial_term_scores_the_composite_and_needs_a_discriminator():
  rng = np.random.default_rng(0)
  output, target = (jnp.asarray(rng.uniform(size=(2, 16, 16, 3)), jnp.float32) for _ in range(2))
  mask = jnp.ones((2, 16, 16, 1)).at[:, 4:10, 4:10].set(0.0)
  seen = []
  judge = lambda images: seen.append(images) or jnp.zeros((images.shape[0], 2, 2, 1))
  weights = {'valid': 1.0, 'adversarial': 0.5}
  total, terms = losses.total_loss(weights, output, target, mask, discriminator=judge)
  np.testing.assert_allclose(seen[0], masking.composite(output, target, mask))
  np.testing.assert_allclose(terms['adversarial'], np.log(2), rtol=1e-6)
  np.testing.assert_allclose(total, terms['valid'] + 0.5 * np.log(2), rtol=1e-6)
  with pytest.raises(ValueError, match='adversarial loss needs a discriminator'):
    losses.total_loss(weights, output, target, mask)
  assert losses.needs_discriminator(losses.get_loss_weights('final_adversarial'))
  assert not losses.needs_discriminator(losses.get_loss_weights('final'))
  assert {k: v for k, v in losses.get_loss_weights('final_adversarial').items()
          if k != 'adversarial'} == losses.get_loss_weights('final')


def test_patch_discriminator_gives_one_logit_per_patch():
  module = models.PatchDiscriminator(features=4)
  images = jnp.zeros((2, 64, 64, 3))
  variables = module.init(jax.random.key(0), images)
  assert module.apply(variables, images).shape == (2, 6, 6, 1)
  assert 'batch_stats' not in variables  # No normalisation: R1 stabilises it.
