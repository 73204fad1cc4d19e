"""Test setup: four simulated CPU devices so pmap code paths run as on a multi-GPU host."""

import os

# Must happen before JAX initialises its backends.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # pylint: disable=g-import-not-at-top

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), 'shared', 'data')


@pytest.fixture(scope='session')
def shared_data() -> str:
  """../shared/data (real faces and masks) or a clean skip when it is absent."""
  if not os.path.isdir(SHARED_DATA):
    pytest.skip(f'{SHARED_DATA} is absent')
  return SHARED_DATA
