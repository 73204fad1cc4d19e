"""Writing result files without losing anything: atomic, exclusive unless replacing, with
the permissions a user expects, and no temporary file left behind on errors or SIGTERM.

Each file is written to a hidden temporary file in its folder and then moved into place:
  - a new file is linked into place, which fails if another process created it meanwhile
    (two runs into one folder: the loser gets OutputExistsError instead of replacing it);
  - with replace=True, an existing file is replaced atomically and keeps its mode.
New files get the usual permissions (0666 less the umask), like files written by `open`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import stat
from pathlib import Path
from typing import BinaryIO, Callable, Iterator


class OutputExistsError(FileExistsError):
  """The output file exists (possibly written meanwhile by another run)."""


def _temporary_path(out: Path) -> Path:
  return out.with_name(f'.{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp')


def write_file(out: str | os.PathLike, write: Callable[[BinaryIO], None], *,
               replace: bool = False) -> None:
  """Calls write(file) on a temporary file beside `out`, then moves it into place.

  Raises OutputExistsError when `out` exists and replace is False (checked atomically at
  the end, so a concurrent writer's file is never replaced), IsADirectoryError when it is
  a directory, and OSError (e.g. PermissionError, FileNotFoundError for a missing folder)
  naming `out`'s folder. The temporary file is removed whatever happens.
  """
  out = Path(out)
  if out.is_dir():
    raise IsADirectoryError(errno.EISDIR, 'is a directory', str(out))
  temporary = _temporary_path(out)
  try:
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  except OSError as error:
    raise type(error)(error.errno, error.strerror, str(out.parent)) from error
  try:
    with os.fdopen(descriptor, 'wb') as file:
      write(file)
    if replace:
      with contextlib.suppress(FileNotFoundError):
        os.chmod(temporary, stat.S_IMODE(os.stat(out).st_mode))
      os.replace(temporary, out)
    else:
      _link_exclusively(temporary, out)
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(temporary)


def _link_exclusively(temporary: Path, out: Path) -> None:
  try:
    os.link(temporary, out)
  except FileExistsError:
    raise OutputExistsError(errno.EEXIST, 'exists', str(out)) from None
  except OSError as error:  # Filesystems without hard links: reserve the name instead.
    if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
      raise
    try:
      os.close(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
      raise OutputExistsError(errno.EEXIST, 'exists', str(out)) from None
    os.replace(temporary, out)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
  """SIGTERM raises KeyboardInterrupt inside the block, so `finally` clauses (temporary
  files, summaries) run as on Ctrl-C instead of the process dying mid-write."""

  def interrupt(signum, frame):  # pylint: disable=unused-argument
    raise KeyboardInterrupt(signal.Signals(signum).name)

  try:
    previous = signal.signal(signal.SIGTERM, interrupt)
  except ValueError:  # Not the main thread: leave signals alone.
    yield
    return
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)
