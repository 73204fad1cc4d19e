"""Orbax checkpoints of a run: save, resume past damaged checkpoints, restore for inference.

Layout: WORKDIR/checkpoints/<step>/{model,optimizer,config}. `model` holds params and
BatchNorm statistics, and their moving averages under `ema` when the run keeps them (all
inference needs), `optimizer` the Adam state and non-finite counters (and the adversarial
loss's discriminator with its Adam state, under `discriminator`), `config` the run's config
as JSON, in its sections, so a checkpoint rebuilds its own model (a flat config, written
before the sections, is migrated where it is read: `load_model`, `restore_latest`), and
`define_jax_checksums.json` the SHA-256 of every file of the step, written once the save is
complete and checked before each restore: Orbax notices truncated files but not damaged
bytes, which would otherwise restore as garbage weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging as std_logging
import os
import time
from typing import Any, Iterator, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from define_jax.config import config_lib
from define_jax.model import model_file
from define_jax.model import network
from define_jax.model import weight_checks

ITEMS = ('model', 'optimizer', 'config')
CHECKSUMS = 'define_jax_checksums.json'
# Steps saved by this process whose checksums are not written yet, by checkpoint directory.
_unsealed: dict[str, set[int]] = {}


class _ReadOnlyNotices(std_logging.Filter):
  """Drops Orbax's warnings that a read-only manager is read-only: restoring for inference
  asks for exactly that, and users took "Given directory is read only" for an error."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (message.startswith('Given directory is read only') or
                'read_only=True, setting' in message)


logging.get_absl_logger().addFilter(_ReadOnlyNotices())


def resolve_workdir(workdir: str) -> str:
  """An absolute local path, or a URL such as gs://bucket/run unchanged.

  Multi-host runs need a workdir that every host sees (a shared filesystem or a bucket):
  all hosts restore from it, and Orbax's primary host finalises each checkpoint in it.
  """
  if '://' in workdir:
    return workdir
  return os.path.abspath(os.path.expanduser(workdir))


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(resolve_workdir(workdir), 'checkpoints')


def create_manager(workdir: str, *, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  """Saves are asynchronous and atomic (written to a temporary directory, then renamed), so
  a run killed mid-save leaves the previous checkpoints intact; old ones are deleted only
  after a newer one is complete."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS)


def _split_state(state) -> dict[str, Any]:
  model = {'params': state.params, 'batch_stats': state.batch_stats}
  if state.ema_params:  # Moving averages, what inference and export use.
    model['ema'] = {'params': state.ema_params, 'batch_stats': state.ema_batch_stats}
  optimizer = {'opt_state': state.opt_state,
               'nonfinite_streak': state.nonfinite_streak,
               'nonfinite_total': state.nonfinite_total}
  if state.disc_params:  # The adversarial loss's discriminator: training state, not model.
    optimizer['discriminator'] = {'params': state.disc_params,
                                  'opt_state': state.disc_opt_state}
  return {'model': model, 'optimizer': optimizer}


def _file_checksums(step_dir: epath.Path) -> dict[str, str]:
  """SHA-256 of every file below a step directory (the manifest itself excluded)."""
  sums, pending = {}, [step_dir]
  while pending:  # epath has no recursive glob for buckets.
    for path in pending.pop().iterdir():
      if path.is_dir():
        pending.append(path)
      elif path.name != CHECKSUMS:
        digest = hashlib.sha256()
        with path.open('rb') as file:  # Bucket files lack readinto (hashlib.file_digest).
          while chunk := file.read(1 << 22):
            digest.update(chunk)
        sums[str(path.relative_to(step_dir))] = digest.hexdigest()
  return dict(sorted(sums.items()))


def verify_checksums(step_dir: epath.Path) -> None:
  """ValueError naming the first damaged, missing or added file of a step directory whose
  manifest disagrees with its files; steps saved without a manifest pass unchecked."""
  manifest = step_dir / CHECKSUMS
  if not manifest.exists():
    return
  try:
    expected = json.loads(manifest.read_text())
  except ValueError as error:
    raise ValueError(f'{manifest} is damaged: {error}') from error
  actual = _file_checksums(step_dir)
  for name in sorted(set(expected) | set(actual)):
    if expected.get(name) != actual.get(name):
      problem = ('is missing' if name not in actual else 'was not written by the save'
                 if name not in expected else 'is damaged (checksum mismatch)')
      raise ValueError(f'{step_dir / name} {problem}')


def finish(manager: ocp.CheckpointManager) -> None:
  """Waits for pending saves, then writes the checksums of the steps this process saved."""
  manager.wait_until_finished()
  directory = epath.Path(manager.directory)
  for step in sorted(_unsealed.pop(str(directory), set())):
    step_dir = directory / str(step)
    if jax.process_index() == 0 and step_dir.is_dir():  # Deleted meanwhile (max_to_keep).
      (step_dir / CHECKSUMS).write_text(json.dumps(_file_checksums(step_dir), indent=0))


@contextlib.contextmanager
def finished_on_exit(manager: ocp.CheckpointManager) -> Iterator[None]:
  """`finish`es the manager on the way out, also when an error stops the run, so that no
  save is left writing behind a run that said it stopped (a lost workdir lock, NaN losses).
  The error that stopped the run is the one raised; a save that cannot complete is a warning.
  Multi-host runs only finish on success: an error may have left another process unable
  to join the save's last step, and waiting for it would hang instead of stopping."""
  try:
    yield
  except BaseException:
    if jax.process_count() == 1:
      try:
        finish(manager)
      except Exception as error:  # pylint: disable=broad-except
        logging.warning('The checkpoint being saved when the run stopped was not completed: '
                        '%s', error)
    raise
  finish(manager)


def save(manager: ocp.CheckpointManager, state, config: Mapping[str, Any]) -> int:
  """Saves an unreplicated train state at its step; returns the step. The save runs in
  the background; its checksums are written by the next save or by `finish`."""
  finish(manager)
  state = jax.device_get(state)
  step = int(state.step)
  items = _split_state(state)
  manager.save(step, args=ocp.args.Composite(
      model=ocp.args.StandardSave(items['model']),
      optimizer=ocp.args.StandardSave(items['optimizer']),
      config=ocp.args.JsonSave(dict(config))))
  _unsealed.setdefault(str(epath.Path(manager.directory)), set()).add(step)
  return step


def _set_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves an unreadable checkpoint out of the manager's way (never deletes it), so the
  resumed run can write that step again."""
  directory = epath.Path(manager.directory)
  target = (directory.parent / 'checkpoints_unreadable' /
            f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
  if jax.process_index() == 0:  # The directory is shared by all hosts.
    target.parent.mkdir(parents=True, exist_ok=True)
    (directory / str(step)).rename(target)
  multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
  manager.reload()
  return str(target)


def restore_latest(manager: ocp.CheckpointManager, state, model=None):
  """The newest readable checkpoint restored into `state`'s structure, or None.

  Checkpoints that fail to restore (truncated or damaged files, non-finite weights) are
  skipped with a warning naming them, in favour of the next older one, and moved to
  WORKDIR/checkpoints_unreadable/. Interrupted saves never count: Orbax only lists
  checkpoints whose write completed. With `model` (a config's model section), ValueError
  when the checkpoint was written by another architecture (before anything is restored
  into `state`).
  """
  template = _split_state(jax.device_get(state))
  for step in sorted(manager.all_steps(), reverse=True):
    step_dir = epath.Path(manager.directory) / str(step)
    if model is not None:
      stored = _stored_config(step_dir)
      if stored is not None:
        network.check_same_architecture(model, config_lib.sectioned(stored)['model'],
                                           f'The checkpoint {step_dir}')
    try:
      verify_checksums(step_dir)
      restored = manager.restore(step, args=ocp.args.Composite(
          model=ocp.args.StandardRestore(template['model']),
          optimizer=ocp.args.StandardRestore(template['optimizer'])))
      weight_checks.check_variables(restored['model'], str(step_dir))
    except Exception as error:  # pylint: disable=broad-except
      logging.warning('Skipping unreadable checkpoint %s (%s: %s); moved to %s.',
                      os.path.join(str(manager.directory), str(step)),
                      type(error).__name__, error, _set_aside(manager, step))
      continue
    model, optimizer = restored['model'], restored['optimizer']
    ema = model.get('ema', {'params': {}, 'batch_stats': {}})
    discriminator = optimizer.get('discriminator', {'params': {}, 'opt_state': {}})
    return state.replace(
        disc_params=discriminator['params'], disc_opt_state=discriminator['opt_state'],
        step=np.asarray(step, np.int32), params=model['params'],
        batch_stats=model['batch_stats'], ema_params=ema['params'],
        ema_batch_stats=ema['batch_stats'], opt_state=optimizer['opt_state'],
        nonfinite_streak=optimizer['nonfinite_streak'],
        nonfinite_total=optimizer['nonfinite_total'])
  return None


def _stored_config(step_dir: epath.Path) -> dict | None:
  """The config a step was saved with, or None when it cannot be read (the restore then
  reports the damage)."""
  try:
    stored = json.loads((step_dir / 'config' / 'metadata').read_text())
  except (OSError, ValueError):
    return None
  return stored if isinstance(stored, dict) else None


def _sectioned(stored: Any) -> Any:
  """A stored config in sections; anything but a mapping is left for
  network.model_config to report."""
  return config_lib.sectioned(stored) if isinstance(stored, Mapping) else stored


def _describe(path: epath.Path) -> str:
  if not path.is_dir():
    return f'{path} does not exist'
  entries = sorted(entry.name for entry in path.iterdir())
  return f'{path} contains: {", ".join(entries) if entries else "(nothing)"}'


def load_model(path: str, step: int | None = None) -> tuple[dict, dict, int]:
  """(variables, config dict, step) for inference, without the optimizer; the variables
  are the moving averages of the weights when the run kept them (config.optim.ema_decay >
  0). The config is in sections (config_lib.sectioned), whenever it was written.

  `path` may also be a model file written by define_jax.export (*.msgpack).

  `path` is a training workdir, its `checkpoints` directory, or one step's directory,
  local or a URL (gs://...). Raises FileNotFoundError listing what is there when no
  checkpoint is found.
  """
  if model_file.is_model_file(str(path)):
    variables, config, step = model_file.read_model_file(str(path))
    return variables, _sectioned(config), step
  path = epath.Path(resolve_workdir(path))
  if (path / 'model').is_dir() and path.name.isdigit():
    root, step = path.parent, int(path.name)
  elif (path / 'checkpoints').is_dir():
    root = path / 'checkpoints'
  else:
    root = path
  if not root.is_dir():
    raise FileNotFoundError(f'No checkpoint at {path}: {_describe(path.parent)}')
  manager = ocp.CheckpointManager(
      root, options=ocp.CheckpointManagerOptions(read_only=True, create=False),
      item_names=ITEMS)
  steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
  if not steps:
    raise FileNotFoundError(f'No checkpoint found under {path}: {_describe(root)}')
  errors = []
  for candidate in steps:
    try:
      verify_checksums(root / str(candidate))
      restored = manager.restore(candidate, args=ocp.args.Composite(
          model=ocp.args.StandardRestore(), config=ocp.args.JsonRestore()))
      model = dict(restored['model'])
      # The moving averages, when the run kept them, are the weights to use.
      model = dict(model.get('ema', model))
      variables = jax.tree.map(np.asarray, {k: model[k] for k in ('params', 'batch_stats')})
      weight_checks.check_variables(variables, f'{root}/{candidate}')
    except Exception as error:  # pylint: disable=broad-except
      logging.warning('Skipping unreadable checkpoint %s/%s: %s', root, candidate, error)
      errors.append(f'{candidate}: {error}')
      continue
    return variables, _sectioned(restored['config']), int(candidate)
  raise FileNotFoundError(f'No readable checkpoint under {root}: ' + '; '.join(errors))
