"""Orbax checkpoints of a run: save, resume past damaged checkpoints, restore for inference.

Layout: WORKDIR/checkpoints/<step>/{model,optimizer,config}. `model` holds params and
BatchNorm statistics (all inference needs), `optimizer` the Adam state and non-finite
counters, `config` the run's config as JSON so a checkpoint rebuilds its own model.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

ITEMS = ('model', 'optimizer', 'config')


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def create_manager(workdir: str, *, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  """Saves are asynchronous and atomic (written to a temporary directory, then renamed), so
  a run killed mid-save leaves the previous checkpoints intact; old ones are deleted only
  after a newer one is complete."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS)


def _split_state(state) -> dict[str, Any]:
  return {
      'model': {'params': state.params, 'batch_stats': state.batch_stats},
      'optimizer': {'opt_state': state.opt_state,
                    'nonfinite_streak': state.nonfinite_streak,
                    'nonfinite_total': state.nonfinite_total},
  }


def save(manager: ocp.CheckpointManager, state, config: Mapping[str, Any]) -> int:
  """Saves an unreplicated train state at its step; returns the step."""
  state = jax.device_get(state)
  step = int(state.step)
  items = _split_state(state)
  manager.save(step, args=ocp.args.Composite(
      model=ocp.args.StandardSave(items['model']),
      optimizer=ocp.args.StandardSave(items['optimizer']),
      config=ocp.args.JsonSave(dict(config))))
  return step


def _set_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves an unreadable checkpoint out of the manager's way (never deletes it), so the
  resumed run can write that step again."""
  source = os.path.join(str(manager.directory), str(step))
  target_dir = os.path.join(os.path.dirname(str(manager.directory)), 'checkpoints_unreadable')
  os.makedirs(target_dir, exist_ok=True)
  target = os.path.join(target_dir, f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
  if jax.process_index() == 0:  # The directory is shared by all hosts.
    os.replace(source, target)
  multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
  manager.reload()
  return target


def restore_latest(manager: ocp.CheckpointManager, state):
  """The newest readable checkpoint restored into `state`'s structure, or None.

  Checkpoints that fail to restore (truncated or damaged files) are skipped with a
  warning naming them, in favour of the next older one, and moved to
  WORKDIR/checkpoints_unreadable/. Interrupted saves never count: Orbax only lists
  checkpoints whose write completed.
  """
  template = _split_state(jax.device_get(state))
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          model=ocp.args.StandardRestore(template['model']),
          optimizer=ocp.args.StandardRestore(template['optimizer'])))
    except Exception as error:  # pylint: disable=broad-except
      logging.warning('Skipping unreadable checkpoint %s (%s: %s); moved to %s.',
                      os.path.join(str(manager.directory), str(step)),
                      type(error).__name__, error, _set_aside(manager, step))
      continue
    model, optimizer = restored['model'], restored['optimizer']
    return state.replace(
        step=np.asarray(step, np.int32), params=model['params'],
        batch_stats=model['batch_stats'], opt_state=optimizer['opt_state'],
        nonfinite_streak=optimizer['nonfinite_streak'],
        nonfinite_total=optimizer['nonfinite_total'])
  return None


def _describe(path: str) -> str:
  if not os.path.isdir(path):
    return f'{path} does not exist'
  entries = sorted(os.listdir(path))
  return f'{path} contains: {", ".join(entries) if entries else "(nothing)"}'


def load_model(path: str, step: int | None = None) -> tuple[dict, dict, int]:
  """(variables, config dict, step) for inference, without the optimizer.

  `path` is a training workdir, its `checkpoints` directory, or one step's directory.
  Raises FileNotFoundError listing what is there when no checkpoint is found.
  """
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(os.path.join(path, 'model')) and os.path.basename(path).isdigit():
    root, step = os.path.dirname(path), int(os.path.basename(path))
  elif os.path.isdir(os.path.join(path, 'checkpoints')):
    root = os.path.join(path, 'checkpoints')
  else:
    root = path
  if not os.path.isdir(root):
    raise FileNotFoundError(f'No checkpoint at {path}: {_describe(os.path.dirname(path))}')
  manager = ocp.CheckpointManager(
      root, options=ocp.CheckpointManagerOptions(read_only=True, create=False),
      item_names=ITEMS)
  steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
  if not steps:
    raise FileNotFoundError(f'No checkpoint found under {path}: {_describe(root)}')
  errors = []
  for candidate in steps:
    try:
      restored = manager.restore(candidate, args=ocp.args.Composite(
          model=ocp.args.StandardRestore(), config=ocp.args.JsonRestore()))
    except Exception as error:  # pylint: disable=broad-except
      logging.warning('Skipping unreadable checkpoint %s/%s: %s', root, candidate, error)
      errors.append(f'{candidate}: {error}')
      continue
    variables = jax.tree.map(np.asarray, dict(restored['model']))
    return variables, dict(restored['config']), int(candidate)
  raise FileNotFoundError(f'No readable checkpoint under {root}: ' + '; '.join(errors))
