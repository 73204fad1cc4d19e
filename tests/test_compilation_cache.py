"""The command-line tools' persistent compilation cache: where it goes, how to turn it off."""

import jax
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
