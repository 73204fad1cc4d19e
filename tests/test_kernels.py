"""kernels.py: the plain form (GPU/TPU) and the XLA:CPU form agree in values and gradients."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from define_jax.model import kernels
from define_jax.model import models
from define_jax.training import losses


def _value_and_grads(fn, args, enabled):
  """fn(*args) and its vector-Jacobian product with a fixed random cotangent, with the CPU
  form on or off (jit of a new function: a fresh trace, so the switch takes effect)."""
  rng = np.random.default_rng(0)
  cotangent = jax.tree.map(lambda v: rng.normal(size=v.shape).astype(v.dtype),
                           jax.eval_shape(fn, *args))

  def value_and_grads(*args):
    value, vjp = jax.vjp(fn, *args)
    return value, vjp(cotangent)

  with kernels.cpu_kernels(enabled):
    return jax.jit(value_and_grads)(*args)


def _assert_forms_agree(fn, *args):
  plain = _value_and_grads(fn, args, enabled=False)
  cpu = _value_and_grads(fn, args, enabled=True)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), plain, cpu)


def _masked_input(rng, size, channels):
  x = rng.uniform(size=(2, size, size, channels)).astype(np.float32)
  mask = (rng.uniform(size=(2, size, size, 1)) > 0.4).astype(np.float32)
  mask[:, :size // 2, :size // 3] = 0.0  # All-hole windows too.
  return x, mask


def _random_params(rng, module, *args, **kwargs):
  """Normal(0, 0.2) parameters: non-zero biases too."""
  params = module.init(jax.random.key(0), *args, **kwargs)['params']
  return jax.tree.map(lambda p: (0.2 * rng.normal(size=p.shape)).astype(np.float32), params)


# Sizes at which the CPU form takes its other route: patch-matrix matmuls (<= 8x8) and
# XLA's convolution.
@pytest.mark.parametrize('size,kernel_size,stride', [(8, 3, 1), (8, 7, 2), (16, 5, 2)])
def test_partial_conv_forms_agree(size, kernel_size, stride):
  rng = np.random.default_rng(size + kernel_size)
  x, mask = _masked_input(rng, size, 3)
  conv = models.PartialConv(4, kernel_size, strides=stride)
  params = _random_params(rng, conv, x, mask)
  _assert_forms_agree(lambda p, x: conv.apply({'params': p}, x, mask), params, x)


# 8x8 outputs: upsampling and concatenation, then a matmul; 32x32: the parity kernels.
@pytest.mark.parametrize('size', [8, 32])
def test_partial_conv_of_upsampled_forms_agree(size):
  rng = np.random.default_rng(size)
  x, mask = _masked_input(rng, size, 5)
  low, low_mask = _masked_input(rng, size // 2, 6)
  conv = models.PartialConv(4, 3)
  params = _random_params(rng, conv, x, mask, (low, low_mask))
  _assert_forms_agree(lambda p, x, low: conv.apply({'params': p}, x, mask, (low, low_mask)),
                      params, x, low)


@pytest.mark.parametrize('size,stride,upsampled', [(8, 2, False), (8, 1, True), (16, 1, True)])
def test_plain_conv_block_forms_agree(size, stride, upsampled):
  rng = np.random.default_rng(size)
  x = rng.uniform(size=(2, size, size, 5)).astype(np.float32)
  low = (rng.uniform(size=(2, size // 2, size // 2, 6)).astype(np.float32),
         None) if upsampled else None
  block = models.Block(4, 3, strides=stride, use_bias=True, use_batch_norm=False,
                       convolution='plain')
  params = _random_params(rng, block, x, None, low, use_running_average=True)
  apply = lambda p, x: block.apply({'params': p}, x, None, low, use_running_average=True)[0]
  _assert_forms_agree(apply, params, x)


def test_unet_forms_agree():
  """All routes at once (levels 16² .. 2², parity kernels at the last decoder level), up to
  float32 rounding of the whole network: 1e-5 of each array's largest magnitude."""
  model = models.PConvUNet(layers=4, base_features=4, max_features=16)
  rng = np.random.default_rng(0)
  image, mask = _masked_input(rng, 32, 3)
  variables = model.init(jax.random.key(0), image, mask, train=False)

  def apply(params, image):
    return model.apply({'params': params, 'batch_stats': variables['batch_stats']}, image,
                       mask, train=True, mutable=['batch_stats'])

  plain = _value_and_grads(apply, (variables['params'], image), enabled=False)
  cpu = _value_and_grads(apply, (variables['params'], image), enabled=True)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=0, atol=1e-5 * np.max(np.abs(a))), plain, cpu)


def test_discriminator_forms_agree_to_the_second_derivative():
  """The R1 penalty differentiates the discriminator twice: both forms give the same
  logits, and the same gradients of its loss plus R1 with respect to the parameters."""
  rng = np.random.default_rng(3)
  real = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
  fake = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
  discriminator = models.PatchDiscriminator(features=4)
  params = _random_params(rng, discriminator, real)

  def loss(p):
    judge = lambda images: discriminator.apply({'params': p}, images)
    logits = judge(np.concatenate([real, fake]))
    return losses.discriminator_loss(logits[:2], logits[2:]) + losses.r1_penalty(judge, real)

  _assert_forms_agree(lambda p: discriminator.apply({'params': p}, real), params)
  gradients = []
  for enabled in (False, True):
    with kernels.cpu_kernels(enabled):
      gradients.append(jax.jit(jax.value_and_grad(loss))(params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), *gradients)
  assert float(gradients[0][0]) > 0


@pytest.mark.parametrize('shape', [(2, 8, 6, 3), (1, 7, 5, 2)])
def test_max_pool_forms_match_flax_values_and_gradient_with_ties(shape):
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape).astype(np.float32)
  x[:, :4, :4] = 0.5  # Whole windows of ties: the gradient goes to the first maximum only.
  x[0, 0, 0] = x[0, 1, 1] = 2.0  # A tie between the first and last element of a window.
  flax_pool = lambda x: flax.linen.max_pool(x, (2, 2), strides=(2, 2))
  weights = rng.normal(size=flax_pool(x).shape).astype(np.float32)
  grad = lambda pool: jax.grad(lambda x: jnp.sum(pool(jax.nn.relu(x)) * weights))(x)
  expected_value, expected_grad = flax_pool(x), grad(flax_pool)
  for enabled in (False, True):
    with kernels.cpu_kernels(enabled):
      np.testing.assert_array_equal(kernels.max_pool_2x2(x), expected_value)
      np.testing.assert_array_equal(grad(kernels.max_pool_2x2), expected_grad)


def test_plain_form_is_plain_and_platform_decides_by_default():
  rng = np.random.default_rng(0)
  x, mask = _masked_input(rng, 8, 3)
  conv = models.PartialConv(4, 3)
  params = conv.init(jax.random.key(0), x, mask)
  trace = lambda: str(jax.make_jaxpr(functools.partial(conv.apply, params))(x, mask))
  with kernels.cpu_kernels(False):
    assert 'conv_general_dilated' in trace() and 'dot_general' not in trace()
  with kernels.cpu_kernels(True):
    assert 'conv_general_dilated' not in trace() and 'dot_general' in trace()
  assert kernels.use_cpu_kernels() == (jax.default_backend() == 'cpu')
