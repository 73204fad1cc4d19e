r"""Ports MTCNN's face-detection weights from facenet-pytorch 2.6.0 into define_jax's msgpack.

  pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/fnp
  unzip -q /tmp/fnp/facenet_pytorch-2.6.0-py3-none-any.whl 'facenet_pytorch/data/*' -d /tmp/fnp
  python -m define_jax.tools.port_mtcnn --input_dir /tmp/fnp/facenet_pytorch/data \
      --out define_jax/pretrained/mtcnn.msgpack

The wheel's pnet.pt, rnet.pt and onet.pt (MIT licence) are PyTorch state dicts in the
legacy (pre-zip) torch.save format. They are read without PyTorch by an unpickler that
admits only what a state dict of float tensors needs, so no code in the files can run.
"""

from __future__ import annotations

import argparse
import collections
import os
import pickle
import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import flax.serialization
import numpy as np

from define_jax.faces import faces

SOURCE = 'facenet-pytorch 2.6.0 (MIT licence), facenet_pytorch/data/{pnet,rnet,onet}.pt'
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Storage:
  """A torch.FloatStorage named in the state dict; its bytes follow the pickles."""

  def __init__(self, key: str, numel: int) -> None:
    self.key, self.numel = key, numel
    self.data: np.ndarray | None = None


class _TensorRef:
  """A tensor view (storage, offset, shape, strides) resolved once the storages are read."""

  def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...],
               strides: tuple[int, ...], *unused: Any) -> None:
    self.storage, self.offset, self.shape, self.strides = storage, offset, shape, strides

  def array(self) -> np.ndarray:
    flat = self.storage.data[self.offset:]
    itemsize = flat.itemsize
    return np.lib.stride_tricks.as_strided(
        flat, self.shape, tuple(s * itemsize for s in self.strides)).copy()


class _FloatStorageType:
  """Stands in for the torch.FloatStorage class in persistent ids."""


class _StateDictUnpickler(pickle.Unpickler):
  """Unpickles a legacy torch state dict of float32 tensors; refuses every other global."""

  _ALLOWED = {
      ('collections', 'OrderedDict'): collections.OrderedDict,
      ('torch._utils', '_rebuild_tensor_v2'): _TensorRef,
      ('torch', 'FloatStorage'): _FloatStorageType,
  }

  def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
    super().__init__(file)
    self._storages = storages

  def find_class(self, module: str, name: str) -> Any:
    try:
      return self._ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(f'Refusing to unpickle global {module}.{name}: only '
                                   'float32 tensors in a state dict are allowed.') from None

  def persistent_load(self, pid: Any) -> _Storage:
    kind, storage_type, key, _, numel = pid[:5]
    if kind != 'storage' or storage_type is not _FloatStorageType:
      raise pickle.UnpicklingError(f'Unexpected persistent id {pid!r}.')
    return self._storages.setdefault(key, _Storage(key, numel))


def load_legacy_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """{name: float32 array} from a state dict saved by torch.save's legacy format."""
  storages: dict[str, _Storage] = {}
  with open(path, 'rb') as f:
    if pickle.Unpickler(f).load() != _LEGACY_MAGIC:  # Plain ints only; nothing to restrict.
      raise ValueError(f'{path}: not a legacy torch.save file (zip-format files are not '
                       'supported; the facenet-pytorch 2.6.0 weights are legacy).')
    pickle.Unpickler(f).load()  # Protocol version.
    sys_info = pickle.Unpickler(f).load()
    if not sys_info.get('little_endian', False):
      raise ValueError(f'{path}: big-endian tensors are not supported.')
    state_dict = _StateDictUnpickler(f, storages).load()
    keys = pickle.Unpickler(f).load()  # A list of str: the order of the storages below.
    for key in keys:
      numel, = struct.unpack('<q', f.read(8))
      storage = storages[key]
      if numel != storage.numel:
        raise ValueError(f'{path}: storage {key} holds {numel} values, expected {storage.numel}.')
      storage.data = np.frombuffer(f.read(4 * numel), '<f4')
  return {name: ref.array() for name, ref in state_dict.items()}


def to_flax(state_dict: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
  """PyTorch names and layouts -> define_jax.faces.face_models parameters (same layer names)."""
  params: dict[str, dict[str, np.ndarray]] = {}
  for name, value in state_dict.items():
    layer, kind = name.rsplit('.', 1)
    if layer.startswith('prelu'):
      params.setdefault(layer, {})['negative_slope'] = value
    elif kind == 'bias':
      params.setdefault(layer, {})['bias'] = value
    elif value.ndim == 4:
      params.setdefault(layer, {})['kernel'] = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
    else:
      params.setdefault(layer, {})['kernel'] = value.T  # [out, in] -> [in, out].
  return params


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m define_jax.tools.port_mtcnn',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input_dir', required=True,
                      help="folder with the wheel's pnet.pt, rnet.pt and onet.pt")
  parser.add_argument('--out', required=True, help='msgpack file to write (must not exist)')
  args = parser.parse_args(argv)

  out = Path(args.out)
  if out.exists():
    print(f'--out {out} exists; remove it first (nothing was written).', file=sys.stderr)
    sys.exit(2)
  payload = {'source': SOURCE}
  for net in faces.NETS:
    path = Path(args.input_dir) / f'{net}.pt'
    if not path.is_file():
      print(f'--input_dir: {path} not found.', file=sys.stderr)
      sys.exit(2)
    payload[net] = to_flax(load_legacy_state_dict(path))
  faces.check_params(payload)
  out.parent.mkdir(parents=True, exist_ok=True)
  temporary = out.with_name(f'.{out.name}.tmp-{os.getpid()}')
  temporary.write_bytes(flax.serialization.msgpack_serialize(payload))
  os.replace(temporary, out)
  sizes = ', '.join(f'{net} {sum(v.size for l in payload[net].values() for v in l.values()):,}'
                    for net in faces.NETS)
  print(f'Wrote {out} ({out.stat().st_size / 2**20:.2f} MiB): parameters {sizes}.')


if __name__ == '__main__':
  main()
