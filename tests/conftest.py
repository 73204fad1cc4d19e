"""Test setup: four simulated CPU devices so pmap code paths run as on a multi-GPU host."""

import contextlib
import io
import os
import struct
import threading
import zlib
from unittest import mock

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
from PIL import ImageFile
from flax import jax_utils
from hypothesis import strategies as st

from configs import tiny
from define_jax import inpaint
from define_jax.config import config_lib
from define_jax.inference import Inpainter
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


# A few shapes (each compiles the network once), from 1×1 to non-square.
SIZES = st.sampled_from([(1, 1), (1, 9), (17, 5), (24, 40), (40, 24)])


def damaged(data: bytes, cut: int, flips: list[int]) -> bytes:
  data = bytearray(data[:max(cut, 0)] if cut < len(data) else data)
  for position in flips:
    if data:
      data[position % len(data)] ^= 0xFF
  return bytes(data)


@pytest.fixture(scope='module')
def inpainter(tiny_checkpoint) -> Inpainter:
  return Inpainter.from_checkpoint(tiny_checkpoint)


def photo(height=48, width=40, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def block_holes(height=48, width=40) -> np.ndarray:
  holes = np.zeros((height, width), bool)
  holes[height // 4:height // 2, width // 4:3 * width // 4] = True
  return holes


def poisoned(variables, kind):
  variables = jax.tree.map(np.array, variables)
  if kind == 'negative variance':
    leaf = next(v for p, v in jax.tree_util.tree_flatten_with_path(variables['batch_stats'])[0]
                if p[-1].key == 'var')
    leaf[...] = -1.0
  else:
    jax.tree.leaves(variables["params"])[0].flat[0] = {'nan': np.nan, 'inf': np.inf,
                                                        'huge': 6.5e37}[kind]
  return variables


def sigterm_to_self_is_safe():
  """Signal handlers are installed from the main thread only; elsewhere SIGTERM would kill
  the test process."""
  if threading.current_thread() is not threading.main_thread():
    pytest.skip('tests do not run in the main thread')


def run_cli(args, inpainter) -> tuple[int, str]:
  """inpaint.main in-process with an already loaded model; (exit status, stderr)."""
  stderr = io.StringIO()
  with mock.patch.object(Inpainter, 'load', return_value=inpainter), \
      contextlib.redirect_stderr(stderr):
    status = inpaint.main([str(a) for a in args])
  return status, stderr.getvalue()


def cli_args(image, mask, out, *extra):
  return ['--image', image, '--mask', mask, '--polarity', 'hole_white', '--out', out, *extra]


@contextlib.contextmanager
def decoding_forbidden():
  """Any attempt to decode pixel data fails the test."""
  def load(self):
    raise AssertionError(f'decoded {self.size}, a header check should have refused it')
  with mock.patch.object(ImageFile.ImageFile, 'load', load):
    yield
