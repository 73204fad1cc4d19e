"""One training run per workdir: a lease lock WORKDIR/.define_jax.lock naming its holder.

Two runs on one workdir would write each other's checkpoints and lose the first run's work
without a word, so a second run is refused with the holder's PID and host. The holder renews
its lease every RENEW_S seconds while it trains (a thread rewrites the file). A lock is
taken over, with a warning naming the old holder, when
  - its holder ran on this host and its PID is gone (at once), or
  - its lease was not renewed for LEASE_S seconds, on any host: a failed node, a job killed
    with SIGKILL or requeued by Slurm elsewhere. "Run the same command again" then works
    without deleting anything by hand.
A lock of another host whose lease is still running is watched until it expires: a holder
that renews it meanwhile is alive, and the run is refused; otherwise it is taken over, so
a requeued job waits at most LEASE_S. A live holder on this host is refused at once.

A lease's age is that of the older of the renewal time written in the file and the file's
modification time (the file server's clock): both move at every renewal, so either standing
still shows a holder that stopped. Hosts' clocks must agree to within LEASE_S - RENEW_S
(NTP keeps them far closer). A holder that finds its lock taken over anyway (a clock that
jumped, a lost filesystem) stops training before its next checkpoint (`Lease.check`), once
a save already under way has ended (`checkpoints.finished_on_exit`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from typing import Iterator

from absl import logging

LOCK_NAME = '.define_jax.lock'
# The holder rewrites its lock this often...
RENEW_S = 30.0
# ...and a lock not renewed for this long is taken over on any host (ten renewals missed).
LEASE_S = 300.0
# How often a run waiting on another host's lease looks at it again.
_WATCH_S = 5.0
_STARTED_FORMAT = '%Y-%m-%d %H:%M:%S'


class WorkdirInUseError(ValueError):
  """Another live run holds the workdir."""


def _holder(path: str) -> dict:
  try:
    with open(path, encoding='utf-8') as file:
      holder = json.load(file)
    return holder if isinstance(holder, dict) else {}
  except (OSError, ValueError):
    return {}  # Unreadable or half-written: an unknown holder, judged by its lease alone.


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


def _recorded_renewal(holder: dict) -> float | None:
  """When the holder says it last renewed: 'renewed' (seconds since the epoch), or for a lock
  written before leases its 'started' time (local time)."""
  renewed = holder.get('renewed')
  if isinstance(renewed, (int, float)):
    return float(renewed)
  try:
    return time.mktime(time.strptime(str(holder.get('started')), _STARTED_FORMAT))
  except (ValueError, OverflowError):
    return None


def lease_age(path: str, holder: dict) -> float | None:
  """Seconds since the lock at `path` (read as `holder`) was last renewed, by the older of
  its recorded renewal and its modification time; None when the file is gone."""
  try:
    stamps = [os.stat(path).st_mtime]
  except FileNotFoundError:
    return None
  recorded = _recorded_renewal(holder)
  if recorded is not None:
    stamps.append(recorded)
  return max(0.0, time.time() - min(stamps))


def _describe(holder: dict, age: float | None) -> str:
  if not holder.get('pid'):
    return 'an unknown process'
  renewed = '' if age is None else f', lease renewed {age:.0f} s ago'
  return (f'PID {holder["pid"]} on {holder.get("host")}, started {holder.get("started")}'
          f'{renewed}')


def _write(path: str, record: dict, *, exclusive: bool) -> bool:
  """Writes the lock: exclusive creation (False if it exists), or an atomic replacement."""
  if exclusive:
    try:
      descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(descriptor, 'w', encoding='utf-8') as file:
      json.dump(record, file)
    return True
  temporary = f'{path}.{record["token"]}.tmp'
  with open(temporary, 'w', encoding='utf-8') as file:
    json.dump(record, file)
  os.replace(temporary, path)
  return True


class Lease:
  """A held lock; `start_renewing` keeps it alive from a thread until `release`."""

  def __init__(self, workdir: str, path: str, record: dict):
    self.workdir, self.path, self.record = workdir, path, record
    # Why the lock is no longer ours (another run took it over), or None.
    self.lost: str | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def renew(self) -> bool:
    """Rewrites the lock with the current time; False (and `lost` set) when another run
    holds it now."""
    current = _holder(self.path)
    if current.get('token') != self.record['token']:
      self.lost = (f'The lock of workdir {self.workdir} was taken over by '
                   f'{_describe(current, None)}: this run stops so that the two do not '
                   'write over each other.')
      logging.error('%s', self.lost)
      return False
    self.record['renewed'] = time.time()
    _write(self.path, self.record, exclusive=False)
    return True

  def _renew_until_stopped(self, every_s: float) -> None:
    while not self._stop.wait(every_s):
      try:
        if not self.renew():
          return
      except OSError as error:  # A filesystem hiccup: the lease has LEASE_S to spare.
        logging.warning('Could not renew the lock %s: %s', self.path, error)

  def start_renewing(self, every_s: float | None = None) -> None:
    self._thread = threading.Thread(target=self._renew_until_stopped,
                                    args=(RENEW_S if every_s is None else every_s,),
                                    name='define_jax workdir lease', daemon=True)
    self._thread.start()

  def check(self) -> None:
    """WorkdirInUseError when another run has taken the lock over."""
    if self.lost:
      raise WorkdirInUseError(self.lost)

  def release(self) -> None:
    """Stops renewing and removes the lock file if this run still holds it."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if _holder(self.path).get('token') == self.record['token']:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(self.path)


def _refusal(workdir: str, holder: dict, age: float | None) -> WorkdirInUseError:
  return WorkdirInUseError(
      f'Workdir {workdir} is in use by another training run ({_describe(holder, age)}). '
      'Use another --workdir, or wait for that run to end (a run that died is taken over '
      f'{LEASE_S:.0f} s after its last renewal by the same command).')


def acquire(workdir: str, *, lease_s: float | None = None) -> Lease:
  """Takes the workdir's lock (see the module docstring); WorkdirInUseError (one line,
  naming the workdir and the holder) when another live run holds it. lease_s: LEASE_S
  unless given."""
  lease_s = LEASE_S if lease_s is None else lease_s
  path = os.path.join(workdir, LOCK_NAME)
  record = {'pid': os.getpid(), 'host': socket.gethostname(),
            'started': time.strftime(_STARTED_FORMAT), 'renewed': time.time(),
            'token': uuid.uuid4().hex}
  watched: tuple[dict, float] | None = None  # (holder, modification time) first seen.
  while True:
    record['renewed'] = time.time()
    if _write(path, record, exclusive=True):
      return Lease(workdir, path, record)
    holder = _holder(path)
    age = lease_age(path, holder)
    if age is None:
      continue  # Released meanwhile: try again.
    pid, same_host = holder.get('pid'), holder.get('host') == socket.gethostname()
    if same_host and isinstance(pid, int):  # The PID says it all on this host.
      if _alive(pid):
        raise _refusal(workdir, holder, age)
      reason = 'which is no longer running'
    elif age >= lease_s:
      reason = (f'whose lease was last renewed {age:.0f} s ago on {holder.get("host")} '
                f'(started {holder.get("started")}; leases last {lease_s:.0f} s)')
    else:
      with contextlib.suppress(FileNotFoundError):
        seen = (holder, os.stat(path).st_mtime)
        if watched is None:
          watched = seen
          logging.warning(
              'Workdir %s is locked by %s. Waiting up to %.0f s: a live run renews its lease '
              'within %.0f s (this run then stops); a dead one is taken over when its lease '
              'expires.', workdir, _describe(holder, age), lease_s - age, RENEW_S)
        elif seen != watched:
          raise _refusal(workdir, holder, lease_age(path, holder))
        time.sleep(min(_WATCH_S, lease_s - age))
      continue
    logging.warning('Taking over the lock of %s from PID %s, %s.', workdir, pid, reason)
    if _holder(path) == holder:  # Not replaced meanwhile by a run that took it over first.
      with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def held(workdir: str) -> Iterator[Lease]:
  """The workdir's lock, renewed from a thread while the block runs."""
  lease = acquire(workdir)
  lease.start_renewing()
  try:
    yield lease
  finally:
    lease.release()
