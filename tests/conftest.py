"""Test setup: four simulated CPU devices so pmap code paths run as on a multi-GPU host."""

import os
import struct
import zlib

# Must happen before JAX initialises its backends.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Many tests (and the training subprocesses they start) compile the same tiny programs:
# JAX's persistent compilation cache makes each compile once per suite run.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '.pytest_cache', 'jax'))

import pytest  # pylint: disable=g-import-not-at-top
import jax
import numpy as np
import skimage.data
import skimage.transform
from PIL import Image
from flax import jax_utils

from configs import tiny
from define_jax.config import config_lib
from define_jax.model import checkpoints
from define_jax.training import steps

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), 'shared', 'data')


@pytest.fixture(scope='session')
def shared_data() -> str:
  """../shared/data (real faces and masks) or a clean skip when it is absent."""
  if not os.path.isdir(SHARED_DATA):
    pytest.skip(f'{SHARED_DATA} is absent')
  return SHARED_DATA


TRAIN_STEPS = 2


def astronaut(height, width):
  return skimage.transform.resize(skimage.data.astronaut(), (height, width)).astype(np.float32)


# Hole rows of a 64-row mask: 3, 10, 16, 22, 29, 35 rows lie in bands 0..5; 0 and 52
# rows (no hole, 81%) in none.
BAND_ROWS = (3, 10, 16, 22, 29, 35)
OUT_OF_BAND_ROWS = (0, 52)


def write_masks(directory, rows_list, *, white_is_hole=True, copies=2):
  """64x64 mask files whose top `rows` rows are the hole, `copies` files per entry."""
  directory.mkdir(parents=True, exist_ok=True)
  for copy in range(copies):
    for rows in rows_list:
      holes = np.zeros((64, 64), bool)
      holes[:rows] = True
      pixels = np.where(holes == white_is_hole, 255, 0).astype(np.uint8)
      Image.fromarray(pixels).save(directory / f'{rows:02d}_{copy}.png')
  return directory


def with_fields(config, **fields):
  """The config with each field set in the section that holds it (seed at the top)."""
  for field, value in fields.items():
    owner = next((config[name] for name in config_lib.SECTIONS if field in config[name]), config)
    owner[field] = value
  return config


def save_checkpoint(workdir, config, state):
  manager = checkpoints.create_manager(str(workdir))
  checkpoints.save(manager, state, config.to_dict())
  checkpoints.finish(manager)


def train_tiny(workdir):
  """The tiny config trained for TRAIN_STEPS steps (L1 loss: no VGG to compile) and saved."""
  config = tiny.get_config()
  config.loss.preset = 'l1'
  devices = jax.local_device_count()
  per_device = config.optim.batch_size // devices
  image = astronaut(config.model.image_size, config.model.image_size)
  mask = np.ones(image.shape[:2] + (1,), np.float32)
  mask[16:40, 20:44] = 0.0
  batch = {'image': np.broadcast_to(image, (devices, per_device) + image.shape).copy(),
           'mask': np.broadcast_to(mask, (devices, per_device) + mask.shape).copy()}
  state = jax_utils.replicate(steps.create_train_state(config, jax.random.key(0)))
  p_train_step = steps.make_p_train_step(config)
  vgg_params = jax_utils.replicate({})
  for _ in range(TRAIN_STEPS):
    state, _ = p_train_step(state, batch, vgg_params)
  save_checkpoint(workdir, config, jax_utils.unreplicate(state))


@pytest.fixture(scope='session')
def tiny_checkpoint(tmp_path_factory) -> str:
  """Workdir of the tiny config trained for TRAIN_STEPS steps, made once per test process."""
  workdir = tmp_path_factory.mktemp('tiny_run')
  train_tiny(workdir)
  return str(workdir)


def synthetic_batch(config, seed=0):
  """[devices, per_device_batch, H, W, C] images with a square hole per image."""
  rng = np.random.default_rng(seed)
  devices, size = jax.local_device_count(), config.model.image_size
  shape = (devices, config.optim.batch_size // devices, size, size)
  mask = np.ones(shape + (1,), np.float32)
  mask[:, :, size // 4:size // 2, size // 3:2 * size // 3] = 0.0
  return {'image': rng.uniform(size=shape + (3,)).astype(np.float32), 'mask': mask}


def png_header_only(width: int, height: int) -> bytes:
  """A tiny PNG that declares width×height RGB (a decompression bomb's header)."""

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(b'')) + \
      chunk(b'IEND', b'')
