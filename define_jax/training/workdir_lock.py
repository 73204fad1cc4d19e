"""One training run per workdir: a lock file WORKDIR/.define_jax.lock naming its holder.

Two runs on one workdir would write each other's checkpoints and lose the first run's work
without a word, so a second run is refused with the holder's PID and host. A lock left by
a process that died (same host, PID gone) is taken over with a warning; one from another
host cannot be checked and is reported with how to remove it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Iterator

from absl import logging

LOCK_NAME = '.define_jax.lock'


class WorkdirInUseError(ValueError):
  """Another live run holds the workdir."""


def _holder(path: str) -> dict:
  try:
    with open(path, encoding='utf-8') as file:
      holder = json.load(file)
    return holder if isinstance(holder, dict) else {}
  except (OSError, ValueError):
    return {}  # Unreadable or half-written: treated as held by an unknown process.


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Someone else's live process.
    return True
  try:  # A killed process not yet reaped by its parent (a zombie) answers too.
    with open(f'/proc/{pid}/stat', encoding='utf-8') as stat:
      return stat.read().rpartition(')')[2].split()[0] != 'Z'
  except (OSError, IndexError):
    return True


def _create(path: str) -> bool:
  """Creates the lock file holding this process's PID and host; False if it exists."""
  try:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(descriptor, 'w', encoding='utf-8') as file:
    json.dump({'pid': os.getpid(), 'host': socket.gethostname(),
               'started': time.strftime('%Y-%m-%d %H:%M:%S')}, file)
  return True


def acquire(workdir: str) -> str:
  """Takes the workdir's lock; returns the lock file's path. WorkdirInUseError (one line,
  naming the workdir and the holder) when another live run holds it."""
  path = os.path.join(workdir, LOCK_NAME)
  for _ in range(3):  # A takeover can race with another run's; the loser retries.
    if _create(path):
      return path
    holder = _holder(path)
    pid, host = holder.get('pid'), holder.get('host')
    same_host = host == socket.gethostname()
    if not (isinstance(pid, int) and same_host and not _alive(pid)):
      where = (f'PID {pid} on {host}, started {holder.get("started")}' if pid
               else 'an unknown process')
      advice = ('' if same_host else
                f'; if that run is no longer running, delete {path}')
      raise WorkdirInUseError(
          f'Workdir {workdir} is in use by another training run ({where}){advice}. '
          'Use another --workdir, or wait for that run to end.')
    logging.warning('Taking over the lock of %s from PID %d, which is no longer running.',
                    workdir, pid)
    with contextlib.suppress(FileNotFoundError):
      os.unlink(path)
  raise WorkdirInUseError(f'Workdir {workdir}: could not take its lock file {path}.')


def release(path: str) -> None:
  """Removes the lock file if this process still holds it."""
  if _holder(path).get('pid') == os.getpid():
    with contextlib.suppress(FileNotFoundError):
      os.unlink(path)


@contextlib.contextmanager
def held(workdir: str) -> Iterator[None]:
  path = acquire(workdir)
  try:
    yield
  finally:
    release(path)
