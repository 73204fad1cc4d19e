"""JAX's persistent compilation cache for the command-line tools, per user.

A compiled program is written to disk and read back by the next process that needs the
same program (same model, input shape, fit and passes, JAX version and device), so a second
`inpaint` of a photo of the same size skips compiling. The directory is
$DEFINE_JAX_CACHE_DIR if set, else JAX's own $JAX_COMPILATION_CACHE_DIR if set, else
$XDG_CACHE_HOME/define_jax/jax_cache (default ~/.cache/define_jax/jax_cache);
DEFINE_JAX_CACHE_DIR=off turns the cache off. Deleting the directory is always safe.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV_VAR = 'DEFINE_JAX_CACHE_DIR'
OFF = ('off', '0', 'none', 'false')
# Every program is cached: the face detector's many small ones (one per pyramid scale and
# photo size) add up to seconds.
MIN_COMPILE_TIME_S = 0.0


def cache_dir() -> Path | None:
  """The cache directory in effect, or None when the cache is off."""
  setting = os.environ.get(ENV_VAR)
  if setting is not None:
    return None if setting.strip().lower() in OFF or not setting.strip() else Path(setting)
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return Path(os.environ['JAX_COMPILATION_CACHE_DIR'])
  base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
  return Path(base, 'define_jax', 'jax_cache')


def enable() -> Path | None:
  """Points JAX at cache_dir() (unless off); returns it. Call before anything compiles."""
  directory = cache_dir()
  if directory is None:
    jax.config.update('jax_compilation_cache_dir', None)
    return None
  jax.config.update('jax_compilation_cache_dir', str(directory.expanduser()))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_TIME_S)
  return directory
