"""The exported model file: one msgpack file with the config, step and the weights inference uses.

Written by define_jax.export (the command line) and read wherever a model is restored
(checkpoints.load_model, Inpainter.from_checkpoint): the run's config as JSON, its step, the
weights (float16 by default; BatchNorm statistics stay float32) - msgpack, no pickle, so
loading runs no code. Every stored model, file or checkpoint, is checked against the
network its config describes before it is built (check_variables_match).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Mapping

import jax
import numpy as np
from flax import serialization

from define_jax.files import output_files
from define_jax.model import network
from define_jax.model import weight_checks

if TYPE_CHECKING:  # Configs come from config_lib, which works without ml_collections too.
  import ml_collections

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


def _shape_mismatches(expected: Any, actual: Any) -> list[str]:
  """'path: expected shape, found shape' for every differing leaf, missing or extra."""
  expected_flat = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
  actual_flat = dict(jax.tree_util.tree_flatten_with_path(actual)[0])
  problems = []
  for key in sorted(set(expected_flat) | set(actual_flat), key=jax.tree_util.keystr):
    want = tuple(expected_flat[key].shape) if key in expected_flat else 'nothing'
    have = tuple(np.shape(actual_flat[key])) if key in actual_flat else 'nothing'
    if want != have:
      problems.append(f'{jax.tree_util.keystr(key)}: config expects {want}, checkpoint has {have}')
  return problems


def check_variables_match(config: ml_collections.ConfigDict, variables: Mapping[str, Any],
                          path: str) -> None:
  """ValueError unless the checkpoint's weights have the shapes its config's model needs."""
  problems = _shape_mismatches(dict(network.variable_shapes(config.model)), dict(variables))
  if problems:
    shown = '\n  '.join(problems[:8])
    model = ', '.join(f'{field}={value!r}' for field, value in config.model.items()
                      if field != 'face_template')
    raise ValueError(
        f'The weights in {path} do not fit the model its config describes ({model}); '
        f'{len(problems)} mismatches:\n  {shown}\n'
        'The checkpoint was probably written with another config.')
