"""Exports a trained model to one file: config, step, and the weights inference uses.

  python -m define_jax.export --workdir runs/faces128 --out faces128.msgpack [--dtype float16]

The file holds the run's config (JSON, with the face template that fit='auto' aligns faces
to: the run's own, else the one measured on the training faces), its step and the
moving-average weights and BatchNorm statistics (the raw weights when the run kept no
average), as msgpack (no
pickle: loading it runs no code). Weights are stored as float16 by default (half the
size; scores are measured on the exported file); BatchNorm statistics stay float32.
`Inpainter.from_checkpoint`, `inpaint --checkpoint`, `evaluate --checkpoint` and the demo
take such a file wherever they take a workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import serialization

FORMAT = 'define_jax.model'
VERSION = 1
SUFFIX = '.msgpack'
STORAGE_DTYPES = ('float16', 'bfloat16', 'float32')


def write_model_file(path: str, variables: Mapping[str, Any], config: Mapping[str, Any],
                     step: int, dtype: str = 'float16') -> int:
  """Writes the model file atomically (a temporary file, then rename); returns its size."""
  if dtype not in STORAGE_DTYPES:
    raise ValueError(f'dtype={dtype!r}: expected one of {STORAGE_DTYPES}.')
  store = lambda x: np.asarray(x, jax.numpy.dtype(dtype))
  payload = {
      'format': FORMAT,
      'version': VERSION,
      'config': json.dumps(dict(config), sort_keys=True),
      'step': int(step),
      'weights_dtype': dtype,
      'params': jax.tree.map(store, dict(variables['params'])),
      'batch_stats': jax.tree.map(lambda x: np.asarray(x, np.float32),
                                  dict(variables['batch_stats'])),
  }
  data = serialization.msgpack_serialize(payload)
  temporary = f'{path}.tmp-{os.getpid()}'
  with open(temporary, 'wb') as file:
    file.write(data)
  os.replace(temporary, path)
  return len(data)


def read_model_file(path: str) -> tuple[dict, dict, int]:
  """(float32 variables, config dict, step) of a file written by write_model_file."""
  try:
    with open(path, 'rb') as file:
      payload = serialization.msgpack_restore(file.read())
  except Exception as error:  # OSError, or msgpack's own exception types on damaged data.
    raise ValueError(f'Cannot read model file {path}: {type(error).__name__}: {error}') from error
  if not isinstance(payload, dict) or payload.get('format') != FORMAT:
    raise ValueError(f'{path} is not a define_jax model file (written by define_jax.export).')
  if payload.get('version') != VERSION:
    raise ValueError(f'{path} has model file version {payload.get("version")}; this '
                     f'define_jax reads version {VERSION}.')
  variables = {name: jax.tree.map(lambda x: np.asarray(x, np.float32), payload[name])
               for name in ('params', 'batch_stats')}
  return variables, json.loads(payload['config']), int(payload['step'])


def is_model_file(path: str) -> bool:
  return str(path).endswith(SUFFIX) and os.path.isfile(path)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m define_jax.export', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True,
                      help='Training workdir, its checkpoints directory or one step directory.')
  parser.add_argument('--out', required=True, help=f'Model file to write (*{SUFFIX}).')
  parser.add_argument('--dtype', default='float16', choices=STORAGE_DTYPES,
                      help='Storage dtype of the weights (BatchNorm statistics stay float32).')
  parser.add_argument('--overwrite', action='store_true', help='Replace an existing --out.')
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  options = parse_args(sys.argv[1:] if argv is None else argv)
  from define_jax import checkpoints  # Orbax only for this direction.
  from define_jax import console

  def export() -> str:
    if not options.out.endswith(SUFFIX):
      raise ValueError(f'--out {options.out}: the model file name must end in {SUFFIX}.')
    if os.path.exists(options.out) and not options.overwrite:
      raise ValueError(f'--out {options.out} exists; pass --overwrite to replace it.')
    variables, config, step = checkpoints.load_model(options.workdir)
    if config.get('face_template') is None:  # The template fit='auto' aligns faces to.
      from define_jax import faces  # pylint: disable=g-import-not-at-top
      config = {**config, 'face_template': faces.FACE_TEMPLATE.tolist()}
    size = write_model_file(options.out, variables, config, step, options.dtype)
    return f'Wrote {options.out} ({size / 2**20:.1f} MiB, step {step}, {options.dtype} weights).'

  return console.exit_status(export)


if __name__ == '__main__':
  sys.exit(main())
