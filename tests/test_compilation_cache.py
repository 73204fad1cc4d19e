"""The command-line tools' persistent compilation cache: where it goes, how to turn it off."""

import os
import stat
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from define_jax.runtime import compilation_cache


@pytest.fixture
def restore_jax_cache_dir():
  before = jax.config.jax_compilation_cache_dir
  yield
  jax.config.update('jax_compilation_cache_dir', before)


def test_per_user_directory_by_default(monkeypatch, tmp_path, restore_jax_cache_dir):
  monkeypatch.delenv(compilation_cache.ENV_VAR, raising=False)
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  assert compilation_cache.enable() == tmp_path / 'define_jax' / 'jax_cache'
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'define_jax' / 'jax_cache')
  monkeypatch.delenv('XDG_CACHE_HOME')
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  assert compilation_cache.cache_dir() == tmp_path / 'home' / '.cache' / 'define_jax' / 'jax_cache'


@pytest.mark.parametrize('setting', ['off', 'OFF', '0', ''])
def test_can_be_turned_off(monkeypatch, setting, restore_jax_cache_dir):
  monkeypatch.setenv(compilation_cache.ENV_VAR, setting)
  assert compilation_cache.enable() is None
  assert not jax.config.jax_compilation_cache_dir


def test_explicit_directories_win(monkeypatch, tmp_path):
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'jax'))
  monkeypatch.delenv(compilation_cache.ENV_VAR, raising=False)
  assert compilation_cache.cache_dir() == tmp_path / 'jax'
  monkeypatch.setenv(compilation_cache.ENV_VAR, str(tmp_path / 'mine'))
  assert compilation_cache.cache_dir() == tmp_path / 'mine'


# --- Issue 35: a private cache (owner and mode checked, atomic and checked entries) ---------

@pytest.fixture
def fresh_jax_cache(restore_jax_cache_dir):
  """JAX's cache re-opened after the test, at the directory it had."""
  from jax.experimental.compilation_cache import compilation_cache as jax_cache
  yield
  jax_cache.reset_cache()


def compile_twice(name='f'):
  """Two jitted copies of one program: the second is read from the persistent cache."""
  def make():
    def program(x):
      return jnp.sin(x) * 2 + 0.25
    program.__name__ = name
    return jax.jit(program)
  return [float(make()(np.float32(1.0))) for _ in range(2)]


def recorded_gets(monkeypatch):
  """Whether each PrivateCache.get found an entry."""
  found = []
  get = compilation_cache.PrivateCache.get

  def recording(self, key):
    value = get(self, key)
    found.append(value is not None)
    return value

  monkeypatch.setattr(compilation_cache.PrivateCache, 'get', recording)
  return found


def test_default_directory_and_entries_are_private_and_reused(monkeypatch, tmp_path,
                                                              fresh_jax_cache):
  monkeypatch.delenv(compilation_cache.ENV_VAR, raising=False)
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  directory = tmp_path / 'define_jax' / 'jax_cache'
  directory.mkdir(parents=True, mode=0o755)  # As earlier versions made it.
  os.chmod(directory, 0o755)
  assert compilation_cache.enable() == directory
  assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
  found = recorded_gets(monkeypatch)
  compile_twice('private_entry')
  assert found == [False, True]
  (entry,) = directory.glob('jit_private_entry-*')
  assert stat.S_IMODE(entry.stat().st_mode) == 0o600
  assert not list(directory.glob('.*.tmp'))


@pytest.mark.parametrize('problem', ['others_can_write', 'another_owner', 'relative'])
def test_unsafe_or_relative_directory_is_not_used_with_one_warning(
    monkeypatch, tmp_path, capsys, fresh_jax_cache, problem):
  shared = tmp_path / 'shared'
  shared.mkdir()
  setting, owner = str(shared), os.geteuid()
  if problem == 'others_can_write':
    os.chmod(shared, 0o777)
  elif problem == 'another_owner':
    monkeypatch.setattr(compilation_cache.os, 'geteuid', lambda: owner + 1)
  else:
    monkeypatch.chdir(tmp_path)
    setting = 'shared'
  monkeypatch.setenv(compilation_cache.ENV_VAR, setting)
  assert compilation_cache.enable() is None
  assert not jax.config.jax_compilation_cache_dir
  compile_twice(f'refused_{problem}')
  assert not list(shared.iterdir())
  (line,) = capsys.readouterr().err.strip().splitlines()
  expected = {'others_can_write': 'can be written by others (mode 0777)',
              'another_owner': f'belongs to another user (uid {owner})',
              'relative': 'is a relative path'}[problem]
  assert line.startswith('warning: the compilation cache directory') and expected in line


def test_two_spellings_of_one_directory_share_entries(monkeypatch, tmp_path, fresh_jax_cache):
  (tmp_path / 'cache').mkdir(mode=0o700)
  (tmp_path / 'elsewhere').mkdir()
  found = recorded_gets(monkeypatch)
  for spelling in (tmp_path / 'cache', tmp_path / 'elsewhere' / '..' / 'cache'):
    monkeypatch.setenv(compilation_cache.ENV_VAR, str(spelling))
    assert compilation_cache.enable() == tmp_path / 'cache'
    compile_twice('two_spellings')
  assert found == [False, True, True, True]


def entry_of(cache, key, value):
  cache.put(key, value)
  return cache._entry(key)  # pylint: disable=protected-access


def test_damaged_or_foreign_entries_are_deleted_and_written_again(tmp_path, monkeypatch):
  cache = compilation_cache.PrivateCache(str(tmp_path / 'c'))
  entry = entry_of(cache, 'k1', b'program' * 100)
  assert cache.get('k1') == b'program' * 100
  with open(entry, 'r+b') as file:  # A write cut off (ulimit -f, a full disk).
    file.truncate(entry.stat().st_size // 2)
  assert cache.get('k1') is None and not entry.exists()  # Deleted: the next put rewrites it.
  cache.put('k1', b'program' * 100)
  assert cache.get('k1') == b'program' * 100
  os.chmod(entry, 0o666)  # Anyone could have replaced it.
  assert cache.get('k1') is None and not entry.exists()
  target = entry_of(cache, 'k2', b'other')
  entry.symlink_to(target)
  assert cache.get('k1') is None and not entry.exists() and cache.get('k2') == b'other'
  entry_of(cache, 'k1', b'program')
  uid = os.geteuid()
  monkeypatch.setattr(compilation_cache.os, 'geteuid', lambda: uid + 1)  # Not the user's.
  assert cache.get('k1') is None and not entry.exists()


def test_interrupted_write_leaves_the_previous_entry_and_no_temporary_file(tmp_path,
                                                                          monkeypatch):
  cache = compilation_cache.PrivateCache(str(tmp_path))
  entry_of(cache, 'k', b'old')

  def replace(*_):
    raise OSError(27, 'File too large')

  monkeypatch.setattr(compilation_cache.os, 'replace', replace)
  with pytest.raises(OSError, match='File too large'):
    cache.put('k', b'new' * 1000)
  monkeypatch.undo()
  assert cache.get('k') == b'old'
  assert [p.name for p in tmp_path.iterdir()] == ['k-define_jax']


def test_least_recently_used_entries_and_stale_temporary_files_are_evicted(tmp_path):
  cache = compilation_cache.PrivateCache(str(tmp_path), max_size=3300)
  stale = tmp_path / '.k.123-abcd.tmp'
  stale.write_bytes(b'killed mid-write')
  old = time.time() - 2 * compilation_cache.STALE_TEMPORARY_S
  os.utime(stale, (old, old))
  for number, key in enumerate(('a', 'b', 'c')):
    entry = entry_of(cache, key, bytes(1000))
    os.utime(entry, (old + number, old + number))
  assert cache.get('a') == bytes(1000)  # Used: now the most recent.
  entry_of(cache, 'd', bytes(1000))
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a-define_jax', 'c-define_jax',
                                                         'd-define_jax']
