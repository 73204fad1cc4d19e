"""Exports a trained model to one file: config, step, and the weights inference uses.

  python -m define_jax.export --workdir runs/faces128 --out faces128.msgpack [--dtype float16]

The file holds the run's config (JSON, in its sections, with the face template that
fit='auto' aligns faces to: the run's own, else the one measured on the training faces;
files written before the sections hold it flat, and checkpoints.load_model migrates it),
its step and the moving-average weights and BatchNorm statistics (the raw weights when the
run kept no average), as msgpack (no pickle: loading it runs no code). Weights are stored
as float16 by default (half the size; scores are measured on the exported file); BatchNorm
statistics stay float32.
`Inpainter.from_checkpoint`, `inpaint --checkpoint`, `evaluate --checkpoint` and the demo
take such a file wherever they take a workdir (export itself takes no config overrides: the
file describes the run as it was trained; the readers take them).
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

from define_jax import output_files
from define_jax import weight_checks

FORMAT = 'define_jax.model'
VERSION = 1
SUFFIX = '.msgpack'
STORAGE_DTYPES = ('float16', 'bfloat16', 'float32')


def write_model_file(path: str, variables: Mapping[str, Any], config: Mapping[str, Any],
                     step: int, dtype: str = 'float16') -> int:
  """Writes the model file atomically (see output_files; an existing file is replaced);
  returns its size."""
  if dtype not in STORAGE_DTYPES:
    raise ValueError(f'dtype={dtype!r}: expected one of {STORAGE_DTYPES}.')
  store = lambda x: np.asarray(x, jax.numpy.dtype(dtype))
  with np.errstate(over='ignore'):  # Overflows are reported below, naming the file.
    stored = {'params': jax.tree.map(store, dict(variables['params'])),
              'batch_stats': jax.tree.map(lambda x: np.asarray(x, np.float32),
                                          dict(variables['batch_stats']))}
  # After the cast: float16 turns weights over 65504 into infinities.
  weight_checks.check_variables(stored, f'{path} ({dtype} weights)')
  payload = {
      'format': FORMAT,
      'version': VERSION,
      'config': json.dumps(dict(config), sort_keys=True),
      'step': int(step),
      'weights_dtype': dtype,
      **stored,
  }
  data = serialization.msgpack_serialize(payload)
  output_files.write_file(path, lambda file: file.write(data), replace=True)
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
  missing = [key for key in ('config', 'step', 'params', 'batch_stats') if key not in payload]
  if missing:
    raise ValueError(f'{path} lacks {", ".join(missing)}: the file is damaged or was not '
                     'written by define_jax.export.')
  try:
    config = json.loads(payload['config'])
  except (TypeError, ValueError) as error:
    raise ValueError(f'{path}: its config is not JSON ({error}).') from error
  step = payload['step']
  if not isinstance(step, int) or isinstance(step, bool) or step < 0:
    raise ValueError(f'{path}: step={str(step)[:40]!r} is not a training step (an integer >= 0).')
  try:
    variables = {name: jax.tree.map(lambda x: np.asarray(x, np.float32), payload[name])
                 for name in ('params', 'batch_stats')}
  except (TypeError, ValueError) as error:
    raise ValueError(f'{path}: its weights are not arrays of numbers ({error}).') from error
  weight_checks.check_variables(variables, path)
  return variables, config, step


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
    check_output(options.out, options.overwrite)
    variables, config, step = checkpoints.load_model(options.workdir)
    if config['model'].get('face_template') is None:  # The template fit='auto' aligns to.
      from define_jax import faces  # pylint: disable=g-import-not-at-top
      config = {**config, 'model': {**config['model'],
                                    'face_template': faces.FACE_TEMPLATE.tolist()}}
    try:
      size = write_model_file(options.out, variables, config, step, options.dtype)
    except OSError as error:
      raise ValueError(f'Cannot write --out {options.out}: {error.strerror or error} '
                       f'({error.filename}).') from error
    return f'Wrote {options.out} ({size / 2**20:.1f} MiB, step {step}, {options.dtype} weights).'

  try:
    with output_files.terminate_as_interrupt():  # The temporary file is removed.
      return console.exit_status(export)
  except KeyboardInterrupt:
    print('Interrupted; nothing was written.', file=sys.stderr)
    return console.INTERRUPTED_STATUS


def check_output(out: str, overwrite: bool) -> None:
  """ValueError, before anything is read, unless a model file can be written at `out`."""
  folder = os.path.dirname(os.path.abspath(out))
  if os.path.isdir(out):
    raise ValueError(f'--out {out} is a directory; give a file name, e.g. '
                     f'{os.path.join(out, "model" + SUFFIX)}.')
  if not out.endswith(SUFFIX):
    raise ValueError(f'--out {out}: the model file name must end in {SUFFIX}.')
  if not os.path.isdir(folder):
    raise ValueError(f'--out {out}: the folder {folder} does not exist.')
  if not os.access(folder, os.W_OK):
    raise ValueError(f'--out {out}: the folder {folder} is not writable.')
  if os.path.exists(out) and not overwrite:
    raise ValueError(f'--out {out} exists; pass --overwrite to replace it.')


if __name__ == '__main__':
  sys.exit(main())
