"""PartialConv against independent references; U-Net structure, BatchNorm and input checks;
the prefill's known contrast."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from define_jax.benchmark import torch_reference
from define_jax.model import models
from define_jax.model import prefill


def _masks(rng, shape, channels):
  """Random holes plus a hole block large enough for all-hole windows at every kernel size."""
  n, h, w = shape
  mask = (rng.uniform(size=(n, h, w, channels)) > 0.4).astype(np.float32)
  mask[:, 2:12, 3:13] = 0.0
  return mask


def partial_conv_reference(x, mask, kernel, bias, stride):
  """Window-by-window partial convolution in float64, the definition spelled out."""
  n, h, w, c = x.shape
  k = kernel.shape[0]
  pad = (k - 1) // 2
  mask = np.broadcast_to(mask, x.shape).astype(np.float64)
  padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
  xp, mp = np.pad(x * mask, padding), np.pad(mask, padding)
  out_h, out_w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
  out = np.zeros((n, out_h, out_w, kernel.shape[-1]))
  new_mask = np.zeros((n, out_h, out_w, 1))
  for i in range(out_h):
    for j in range(out_w):
      rows, cols = slice(i * stride, i * stride + k), slice(j * stride, j * stride + k)
      window_sum = mp[:, rows, cols].sum(axis=(1, 2, 3))
      conv = np.einsum('nhwc,hwcf->nf', xp[:, rows, cols], kernel)
      seen = window_sum > 0
      scaled = conv * (k * k * c) / np.where(seen, window_sum, 1)[:, None] + bias
      out[:, i, j] = np.where(seen[:, None], scaled, 0.0)
      new_mask[:, i, j, 0] = seen
  return out, new_mask


def _random_partial_conv(rng, kernel_size, per_channel, in_features=3, features=4, size=15):
  x = rng.uniform(size=(2, size, size, in_features)).astype(np.float32)
  mask = _masks(rng, (2, size, size), in_features if per_channel else 1)
  kernel = (0.2 * rng.normal(size=(kernel_size, kernel_size, in_features, features))).astype(
      np.float32)
  bias = rng.normal(size=(features,)).astype(np.float32)
  return x, mask, kernel, bias


@pytest.mark.parametrize('kernel_size,stride,per_channel', [
    (3, 1, False), (3, 2, True), (5, 2, False), (5, 1, True), (7, 2, False), (7, 2, True)])
def test_partial_conv_matches_numpy_reference(kernel_size, stride, per_channel):
  rng = np.random.default_rng(kernel_size * 10 + stride)
  x, mask, kernel, bias = _random_partial_conv(rng, kernel_size, per_channel)
  conv = models.PartialConv(4, kernel_size, strides=stride)
  y, new_mask = conv.apply({'params': {'kernel': kernel, 'bias': bias}}, x, mask)

  expected, expected_mask = partial_conv_reference(
      x.astype(np.float64), mask, kernel.astype(np.float64), bias, stride)
  # The case must cover all-hole windows as well as partial and full ones.
  assert 0 < expected_mask.mean() < 1
  assert y.shape == expected.shape and new_mask.shape == expected_mask.shape
  np.testing.assert_array_equal(new_mask, expected_mask)
  np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)


def test_partial_conv_without_bias_and_param_names():
  rng = np.random.default_rng(0)
  x, mask, _, _ = _random_partial_conv(rng, 3, per_channel=False)
  with_bias = models.PartialConv(4, 3).init(jax.random.key(0), x, mask)['params']
  without_bias = models.PartialConv(4, 3, use_bias=False).init(jax.random.key(0), x, mask)
  assert set(with_bias) == {'kernel', 'bias'} and with_bias['kernel'].shape == (3, 3, 3, 4)
  assert set(without_bias['params']) == {'kernel'}


def test_partial_conv_reduces_mask_cheaply():
  """One convolution (the features'); the mask sum is a window reduction, not a conv."""
  rng = np.random.default_rng(0)
  x, mask, kernel, bias = _random_partial_conv(rng, 3, per_channel=True)
  jaxpr = jax.make_jaxpr(functools.partial(models.PartialConv(4, 3, strides=2).apply))(
      {'params': {'kernel': kernel, 'bias': bias}}, x, mask)
  assert str(jaxpr).count('conv_general_dilated') == 1


@pytest.mark.parametrize('size', [16, 32])  # Decoder paths: concatenation, low resolution.
def test_partial_conv_of_upsampled_and_skip_matches_numpy_reference(size):
  """upsampled=(a, mask_a) convolves concat(upsample(a), x), each part under its own mask."""
  rng = np.random.default_rng(size)
  x, mask, kernel, bias = _random_partial_conv(rng, 3, per_channel=False, in_features=5,
                                               size=size)
  low = rng.uniform(size=(2, size // 2, size // 2, 6)).astype(np.float32)
  low_mask = (rng.uniform(size=(2, size // 2, size // 2, 1)) > 0.5).astype(np.float32)
  low_mask[:, :3, :4] = 0.0
  kernel = (0.2 * rng.normal(size=(3, 3, 11, 4))).astype(np.float32)
  conv = models.PartialConv(4, 3)
  y, new_mask = conv.apply({'params': {'kernel': kernel, 'bias': bias}}, x, mask,
                           (low, low_mask))

  upsample = lambda a: a.repeat(2, axis=1).repeat(2, axis=2)
  full_x = np.concatenate([upsample(low), x], axis=-1).astype(np.float64)
  full_mask = np.concatenate([np.broadcast_to(upsample(low_mask), x.shape[:3] + (6,)),
                              np.broadcast_to(mask, x.shape)], axis=-1)
  expected, expected_mask = partial_conv_reference(full_x, full_mask, kernel.astype(np.float64),
                                                   bias, 1)
  assert 0 < expected_mask.mean() < 1
  np.testing.assert_array_equal(new_mask, expected_mask)
  np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)


class NvidiaPartialConv2d(torch.nn.Conv2d):
  """NVIDIA's PartialConv2d (single-channel mask, return_mask=True) re-typed from its paper code."""

  def forward(self, x, mask):
    k_h, k_w = self.kernel_size
    with torch.no_grad():
      update_mask = torch.nn.functional.conv2d(
          mask, torch.ones(1, 1, k_h, k_w), stride=self.stride, padding=self.padding)
      mask_ratio = (k_h * k_w) / (update_mask + 1e-8)
      update_mask = torch.clamp(update_mask, 0, 1)
      mask_ratio = mask_ratio * update_mask
    raw_out = super().forward(x * mask)
    bias_view = self.bias.view(1, -1, 1, 1)
    return ((raw_out - bias_view) * mask_ratio + bias_view) * update_mask, update_mask


@pytest.mark.parametrize('stride', [1, 2])
def test_partial_conv_matches_nvidia_pytorch(stride):
  rng = np.random.default_rng(stride)
  x, mask, kernel, bias = _random_partial_conv(rng, 5, per_channel=False)
  y, new_mask = models.PartialConv(4, 5, strides=stride).apply(
      {'params': {'kernel': kernel, 'bias': bias}}, x, mask)

  torch_conv = NvidiaPartialConv2d(3, 4, 5, stride=stride, padding=2)
  with torch.no_grad():
    torch_conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1)))
    torch_conv.bias.copy_(torch.from_numpy(bias))
    to_nchw = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy())
    expected, expected_mask = torch_conv(to_nchw(x), to_nchw(mask))
  np.testing.assert_allclose(y, expected.numpy().transpose(0, 2, 3, 1), rtol=0, atol=1e-5)
  np.testing.assert_array_equal(new_mask, expected_mask.numpy().transpose(0, 2, 3, 1))


def _flax_param_shapes(model, size):
  image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32)
  init = functools.partial(model.init, train=False)
  return jax.eval_shape(init, jax.random.key(0), image, mask)


@pytest.mark.parametrize('layers', [7, 8])
def test_pconv_unet_parameter_count_matches_pytorch_reference(layers):
  variables = _flax_param_shapes(models.PConvUNet(layers=layers), 2**layers * 2)
  flax_counts = {name: sum(int(np.prod(p.shape)) for p in jax.tree.leaves(block))
                 for name, block in variables['params'].items()}
  with torch.device('meta'):  # Shapes only: nothing allocated.
    reference = torch_reference.PConvUNet(layers)
  torch_counts = {name: sum(p.numel() for p in block.parameters() if p.requires_grad)
                  for name, block in reference.named_children()}
  print(f'PConvUNet(layers={layers}) parameters: {sum(flax_counts.values()):,} '
        f'(PyTorch reference {sum(torch_counts.values()):,})')
  assert flax_counts == torch_counts


def test_unet_differs_from_pconv_unet_only_by_the_mask_input_channel():
  pconv = _flax_param_shapes(models.PConvUNet(layers=7), 256)['params']
  unet = _flax_param_shapes(models.UNet(layers=7), 256)['params']
  assert set(pconv) == set(unet)
  assert unet['enc_1']['Conv_0']['kernel'].shape == (7, 7, 4, 64)
  assert unet['dec_1']['Conv_0']['kernel'].shape == (3, 3, 64 + 4, 3)
  count = lambda tree: sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))
  assert count(unet) - count(pconv) == 7 * 7 * 64 + 3 * 3 * 3


def _tiny_inputs(batch=2, size=32, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
  mask = np.ones((batch, size, size, 1), np.float32)
  mask[:, 8:20, 4:24] = 0.0
  return image, mask


@pytest.mark.parametrize('model_cls', [models.PConvUNet, models.UNet])
def test_unet_output_and_naming(model_cls):
  model = model_cls(layers=4, base_features=8, max_features=32)
  image, mask = _tiny_inputs()
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), image, mask)
  output = jax.jit(functools.partial(model.apply, train=False))(variables, image, mask)
  assert output.shape == image.shape and output.dtype == jnp.float32
  assert np.all(np.isfinite(output))
  names = [f'enc_{i}' for i in range(1, 5)] + [f'dec_{i}' for i in range(1, 5)]
  assert sorted(variables['params']) == sorted(names)
  assert sorted(variables['batch_stats']) == sorted(n for n in names if not n.endswith('_1'))


def test_bfloat16_computes_in_bf16_keeps_params_stats_and_output_float32():
  model = models.PConvUNet(layers=3, base_features=8, dtype=jnp.bfloat16)
  image, mask = _tiny_inputs(size=16)
  variables = _flax_param_shapes(model, 16)
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  apply = functools.partial(model.apply, train=True, mutable=['batch_stats', 'intermediates'],
                            capture_intermediates=True)
  output, state = jax.eval_shape(apply, variables, image, mask)
  assert output.dtype == jnp.float32
  assert {x.dtype for x in jax.tree.leaves(state['batch_stats'])} == {jnp.dtype(jnp.float32)}
  assert state['intermediates']['dec_2']['__call__'][0][0].dtype == jnp.bfloat16


def _batch_stats_after_train_step(model, variables, image, mask):
  _, updates = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))(
      variables, image, mask)
  return flax.traverse_util.flatten_dict(updates['batch_stats'], sep='/')


@pytest.mark.parametrize('freeze', [True, False])
def test_freeze_encoder_bn(freeze):
  model = models.PConvUNet(layers=3, base_features=8, freeze_encoder_bn=freeze)
  image, mask = _tiny_inputs(size=16)
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), image, mask)
  before = flax.traverse_util.flatten_dict(variables['batch_stats'], sep='/')
  after = _batch_stats_after_train_step(model, variables, image, mask)
  changed = {k for k in before if not np.array_equal(before[k], after[k])}
  decoder = {k for k in before if k.startswith('dec_')}
  encoder = {k for k in before if k.startswith('enc_')}
  assert encoder and decoder and encoder | decoder == set(before)
  assert changed == (decoder if freeze else decoder | encoder)


@pytest.mark.parametrize('image_shape,mask_shape,message', [
    ((2, 32, 32), (2, 32, 32, 1), 'image must have rank 4'),
    ((2, 32, 32, 3), (2, 32, 32), 'mask must have rank 4'),
    ((2, 32, 32, 3), (3, 32, 32, 1), 'does not match image'),
    ((2, 32, 32, 3), (2, 16, 32, 1), 'does not match image'),
    ((2, 32, 32, 3), (2, 32, 32, 2), 'mask has 2 channels'),
    ((2, 24, 24, 3), (2, 24, 24, 1), 'not divisible by 2\\*\\*layers = 16'),
])
def test_bad_shapes_raise_while_tracing(image_shape, mask_shape, message):
  model = models.PConvUNet(layers=4, base_features=8)
  image = jax.ShapeDtypeStruct(image_shape, jnp.float32)
  mask = jax.ShapeDtypeStruct(mask_shape, jnp.float32)
  # .trace stops before lowering and compilation: the error comes from tracing.
  with pytest.raises(ValueError, match=message):
    jax.jit(functools.partial(model.init, train=False)).trace(jax.random.key(0), image, mask)


@pytest.mark.parametrize('model_cls', [models.PConvUNet, models.UNet])
def test_mask_values_outside_unit_interval_raise(model_cls):
  model = model_cls(layers=2, base_features=4)
  image, mask = _tiny_inputs(size=8)
  for bad_value in (255.0, -1.0, np.nan):
    bad_mask = mask.copy()
    bad_mask[0, 0, 0, 0] = bad_value
    with pytest.raises(ValueError, match=r'mask values must lie in \[0, 1\]'):
      model.init(jax.random.key(0), image, bad_mask, train=False)


def test_cross_device_batch_norm_under_pmap():
  devices = jax.local_device_count()
  assert devices == 4, 'tests/conftest.py should simulate 4 CPU devices'
  model = models.PConvUNet(layers=2, base_features=4, axis_name='batch')
  image, mask = _tiny_inputs(batch=2 * devices, size=8)
  image[: 2] *= 0.1  # Devices see different data, so local statistics would differ.
  variables = model.clone(axis_name=None).init(jax.random.key(0), image, mask, train=False)

  train_apply = lambda m: functools.partial(m.apply, train=True, mutable=['batch_stats'])
  shard = lambda a: a.reshape((devices, -1) + a.shape[1:])
  output, updates = jax.pmap(train_apply(model), axis_name='batch', in_axes=(None, 0, 0))(
      variables, shard(image), shard(mask))
  for stats in jax.tree.leaves(updates['batch_stats']):
    for device_stats in stats[1:]:
      np.testing.assert_array_equal(device_stats, stats[0])

  # The same as BatchNorm over the whole batch on one device.
  global_output, global_updates = train_apply(model.clone(axis_name=None))(variables, image, mask)
  np.testing.assert_allclose(output.reshape(image.shape), global_output, atol=1e-5)
  jax.tree.map(lambda s, g: np.testing.assert_allclose(s[0], g, atol=1e-6),
               updates['batch_stats'], global_updates['batch_stats'])


@pytest.mark.parametrize('model_cls', [models.PConvUNet, models.UNet])
def test_mirror_input_starts_at_zero_and_then_sees_the_other_half(model_cls):
  """The mirror's side convolution starts at zero: the network computes what it did
  without the mirror; once it is non-zero, what lies across the vertical axis changes the
  output."""
  image = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  mask = (jax.random.uniform(jax.random.key(1), (2, 32, 32, 1)) > 0.3).astype(jnp.float32)
  settings = dict(layers=3, base_features=8, max_features=16, mask_channel=True)
  plain, mirrored = model_cls(**settings), model_cls(**settings, mirror=True)
  variables = plain.init(jax.random.key(2), image, mask, train=False)
  grown = mirrored.init(jax.random.key(2), image, mask, train=False)
  side = grown['params']['enc_1']['side_input']
  assert jax.tree.map(jnp.shape, side) == {'kernel': (7, 7, 4, 8)}
  assert all(float(jnp.abs(leaf).max()) == 0 for leaf in jax.tree.leaves(side))
  grown = jax.tree.map(lambda leaf: leaf, variables)
  grown['params']['enc_1']['side_input'] = side
  np.testing.assert_array_equal(plain.apply(variables, image, mask, train=False),
                                mirrored.apply(grown, image, mask, train=False))

  grown['params']['enc_1']['side_input'] = {
      'kernel': jax.random.normal(jax.random.key(3), side['kernel'].shape)}
  # Changing a known pixel on the left half changes the output on the right half only
  # through the mirror (the plain network's left pixels reach the right too, so compare the
  # two networks' responses).
  changed = image.at[:, 4:8, 4:8, :].add(0.5)
  response = lambda model, params: model.apply(params, changed, mask, train=False) - \
      model.apply(params, image, mask, train=False)
  assert float(jnp.abs(response(mirrored, grown) - response(plain, variables)).max()) > 1e-3


def test_mirror_input_is_the_flipped_known_image_and_mask():
  image = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(1, 2, 4, 3)
  mask = jnp.array([[1, 1, 0, 1], [1, 0, 1, 1]], jnp.float32).reshape(1, 2, 4, 1)
  side = models._mirror_input(image, mask)
  np.testing.assert_array_equal(side[..., 3], mask[0, :, ::-1, 0][None])
  np.testing.assert_array_equal(side[..., :3], (image * mask)[:, :, ::-1, :])


def test_known_contrast_is_zero_on_flat_known_pixels_and_infinite_without_any():
  flat = np.full((2, 64, 64, 3), 0.5, np.float32)
  known = np.ones((2, 64, 64, 1), np.float32)
  known[0, 20:40, 20:40] = 0.0
  known[1] = 0.0  # No known pixel: nothing says the photo is flat.
  contrast = np.asarray(prefill.known_contrast(flat, known, 16))
  assert np.all(contrast[0] < 1e-6) and np.all(np.isinf(contrast[1]))
  noisy = flat + np.random.default_rng(0).normal(0, 0.05, flat.shape).astype(np.float32)
  contrast = np.asarray(prefill.known_contrast(noisy, known, 16))[0]
  np.testing.assert_allclose(contrast[known[0] == 0], 0.05, rtol=0.15)
