"""JAX's persistent compilation cache for the command-line tools: per user, private, atomic.

A compiled program is written to disk and read back by the next process that needs the
same program (same model, input shape, fit and passes, JAX version and device), so a second
`inpaint` of a photo of the same size skips compiling. The directory is
$DEFINE_JAX_CACHE_DIR if set, else JAX's own $JAX_COMPILATION_CACHE_DIR if set, else
$XDG_CACHE_HOME/define_jax/jax_cache (default ~/.cache/define_jax/jax_cache), made 0700;
DEFINE_JAX_CACHE_DIR=off turns the cache off. Deleting the directory is always safe.

A cached program is code this process runs, so:
  - the directory must be absolute (a relative one would follow the current directory), be
    owned by the user and be writable by nobody else; otherwise the cache is off for the
    run, with one warning saying why;
  - an entry is read only if it is a regular file owned by the user that nobody else can
    write, and only if its checksum holds; a damaged entry (e.g. cut off by a full disk) is
    deleted, so the next compilation writes it anew instead of warning on every run;
  - entries are written to a temporary file and renamed into place, never half-written;
  - once the entries exceed MAX_BYTES (or JAX's jax_compilation_cache_max_size, if set) the
    least recently used are deleted, and so are temporary files of writes that were killed.
The path is resolved (symbolic links, `..`) before JAX sees it, because JAX puts it in every
program's key: two spellings of one folder share its entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import stat
import sys
import time
from pathlib import Path

import jax

ENV_VAR = 'DEFINE_JAX_CACHE_DIR'
OFF = ('off', '0', 'none', 'false')
# Every program is cached: the face detector's many small ones (one per pyramid scale and
# photo size) add up to seconds.
MIN_COMPILE_TIME_S = 0.0
# Size cap of the entries (the packaged model's programs take 1 to 20 MB each).
MAX_BYTES = 2 * 2**30
# A temporary file older than this belongs to a write that was killed.
STALE_TEMPORARY_S = 3600.0

_SUFFIX = '-define_jax'
_MAGIC = b'define_jax compilation cache entry 1\n'
_DIGEST_BYTES = 32

log = logging.getLogger(__name__)


def cache_dir() -> Path | None:
  """The cache directory as set (not yet checked), or None when the cache is off."""
  setting = os.environ.get(ENV_VAR)
  if setting is not None:
    return None if setting.strip().lower() in OFF or not setting.strip() else Path(setting)
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return Path(os.environ['JAX_COMPILATION_CACHE_DIR'])
  return default_dir()


def default_dir() -> Path:
  base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
  return Path(base, 'define_jax', 'jax_cache')


def _make_private_dirs(directory: Path) -> None:
  """Creates the missing folders of `directory` as 0700 (makedirs would use 0755 above it)."""
  missing = []
  for folder in (directory, *directory.parents):
    if folder.exists():
      break
    missing.append(folder)
  for folder in reversed(missing):
    with contextlib.suppress(FileExistsError):
      os.mkdir(folder, 0o700)


def unsafe_reason(directory: Path) -> str | None:
  """Why `directory` must not hold compiled programs (None: it may): it is not a directory,
  not the user's, or writable by others."""
  try:
    status = os.stat(directory)
  except OSError as error:
    return f'cannot be used ({error.strerror or error})'
  if not stat.S_ISDIR(status.st_mode):
    return 'is not a directory'
  if status.st_uid != os.geteuid():
    return f'belongs to another user (uid {status.st_uid})'
  if status.st_mode & 0o022:
    return f'can be written by others (mode {stat.S_IMODE(status.st_mode):04o})'
  return None


def _warn(message: str) -> None:
  print(f'warning: {message}', file=sys.stderr, flush=True)


def _checked_dir() -> Path | None:
  """cache_dir(), created, resolved and checked; None (after one warning) when unusable."""
  directory = cache_dir()
  if directory is None:
    return None
  directory = directory.expanduser()
  if not directory.is_absolute():
    _warn(f'the compilation cache directory {directory} is a relative path; give an '
          f'absolute one in {ENV_VAR}. The cache is off for this run.')
    return None
  try:
    _make_private_dirs(directory)
  except OSError as error:
    _warn(f'cannot create the compilation cache directory {directory} '
          f'({error.strerror or error}); the cache is off for this run.')
    return None
  directory = directory.resolve()
  if directory == default_dir().resolve():  # Made 0755 by earlier versions: make it private.
    with contextlib.suppress(OSError):
      if os.stat(directory).st_uid == os.geteuid():
        os.chmod(directory, 0o700)
  reason = unsafe_reason(directory)
  if reason:
    _warn(f'the compilation cache directory {directory} {reason}: a program read from it '
          'would run as you, so the cache is off for this run. Use a directory that is yours '
          f'and that only you can write, or set {ENV_VAR}=off.')
    return None
  return directory


def _private_file(status: os.stat_result) -> bool:
  return (stat.S_ISREG(status.st_mode) and status.st_uid == os.geteuid()
          and not status.st_mode & 0o022)


class PrivateCache:
  """JAX's cache interface (get, put) on one directory, as the module docstring says.

  Takes the arguments of JAX's LRUCache, which it replaces."""

  def __init__(self, path: str, *, max_size: int = -1, **unused):
    del unused  # e.g. lock_timeout_secs: renames need no lock.
    self._path = Path(path)
    _make_private_dirs(self._path)
    self.max_bytes = max_size if max_size >= 0 else MAX_BYTES

  def _entry(self, key: str) -> Path:
    if not key or '/' in key or key.startswith('.'):
      raise ValueError(f'Bad compilation cache key {key!r}.')
    return self._path / f'{key}{_SUFFIX}'

  def get(self, key: str) -> bytes | None:
    path = self._entry(key)
    try:
      descriptor = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0))
    except FileNotFoundError:
      return None
    except OSError:  # A symbolic link (ELOOP) or unreadable: not ours to run.
      self._discard(path, 'cannot be opened as a regular file')
      return None
    with os.fdopen(descriptor, 'rb') as file:
      if not _private_file(os.fstat(file.fileno())):
        self._discard(path, 'is not a private regular file of this user')
        return None
      data = file.read()
    value = data[len(_MAGIC) + _DIGEST_BYTES:]
    if (not data.startswith(_MAGIC) or
        data[len(_MAGIC):len(_MAGIC) + _DIGEST_BYTES] != hashlib.sha256(value).digest()):
      self._discard(path, 'is damaged (its checksum does not hold)')
      return None
    with contextlib.suppress(OSError):
      os.utime(path)  # Most recently used: evicted last.
    return value

  def put(self, key: str, value: bytes) -> None:
    if len(value) > self.max_bytes:
      return
    path = self._entry(key)
    temporary = self._path / f'.{key}.{os.getpid()}-{secrets.token_hex(4)}.tmp'
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
      with os.fdopen(descriptor, 'wb') as file:
        file.write(_MAGIC + hashlib.sha256(value).digest() + value)
      os.replace(temporary, path)
    finally:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    self.evict()

  def evict(self) -> None:
    """Deletes the least recently used entries beyond max_bytes, and stale temporary files."""
    entries, now = [], time.time()
    for path in self._path.iterdir():
      with contextlib.suppress(OSError):
        status = path.lstat()
        if path.name.endswith(_SUFFIX) and stat.S_ISREG(status.st_mode):
          entries.append((status.st_mtime, status.st_size, path))
        elif (path.name.startswith('.') and path.name.endswith('.tmp')
              and now - status.st_mtime > STALE_TEMPORARY_S):
          path.unlink()
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
      if total <= self.max_bytes:
        break
      with contextlib.suppress(FileNotFoundError):
        path.unlink()
      total -= size

  @staticmethod
  def _discard(path: Path, why: str) -> None:
    log.info('Compilation cache entry %s %s: deleted, it will be compiled anew.', path, why)
    with contextlib.suppress(OSError):
      os.unlink(path)

  def clear(self) -> None:
    for path in self._path.glob(f'*{_SUFFIX}'):
      with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _use_private_cache() -> bool:
  """Makes JAX build PrivateCache where it would build its LRUCache (whose writes are not
  atomic and whose entries are read from any owner); False if this JAX has no LRUCache."""
  from jax._src import compilation_cache as jax_cache  # pylint: disable=g-import-not-at-top

  if not hasattr(jax_cache, 'LRUCache'):
    return False
  jax_cache.LRUCache = PrivateCache
  return True


def enable() -> Path | None:
  """Points JAX at the checked cache directory (None: the cache is off); returns it. Call
  before anything compiles (programs compiled before use the previous setting)."""
  from jax.experimental.compilation_cache import compilation_cache as jax_cache  # pylint: disable=g-import-not-at-top

  directory = _checked_dir()
  if directory is not None and not _use_private_cache():
    _warn(f'this JAX ({jax.__version__}) has no cache backend that define_jax can make '
          'private; the compilation cache is off.')
    directory = None
  jax.config.update('jax_compilation_cache_dir', None if directory is None else str(directory))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_TIME_S)
  jax_cache.reset_cache()  # JAX opens its cache once, on the first compilation.
  return directory
