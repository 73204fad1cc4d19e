"""Inference: checkpoint restore, sizes, dtypes, mask polarity, batching, bad input, CLI;
any array or mask encoding, non-finite outputs refused, flat regions that come back flat."""

import contextlib
import io
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
import skimage.transform
from hypothesis import HealthCheck, event, given, settings, strategies as st
from PIL import Image

from configs import tiny
from define_jax import inpaint
from define_jax.files.image_files import InputError
from define_jax.inference import inference
from define_jax.inference import Inpainter
from define_jax.model import checkpoints
from define_jax.model import network
from define_jax.model import prefill
from define_jax.runtime.data_parallel import DataParallel
from define_jax.training import steps

from conftest import (REPO_ROOT, SIZES, TRAIN_STEPS, astronaut, block_holes, photo, poisoned,
                      save_checkpoint)

def hole_mask(height, width):
  """bool, True = hole: a block and a stroke."""
  holes = np.zeros((height, width), bool)
  holes[height // 4:height // 2, width // 3:2 * width // 3] = True
  holes[3 * height // 4, :] = True
  return holes


def test_restores_step_and_size(inpainter):
  assert inpainter.step == TRAIN_STEPS
  assert inpainter.image_size == 64


@pytest.mark.parametrize('fit', ['resize', 'pad'])
@pytest.mark.parametrize('height, width', [(64, 64), (100, 80), (37, 130)])
def test_any_size_keeps_size_dtype_and_known_pixels(inpainter, fit, height, width):
  image = (astronaut(height, width) * 255).astype(np.uint8)
  holes = hole_mask(height, width)
  result = inpainter(image, holes, polarity='hole_white', fit=fit)
  assert result.shape == image.shape and result.dtype == np.uint8
  np.testing.assert_array_equal(result[~holes], image[~holes])
  assert np.any(result[holes] != image[holes])


def test_hole_content_never_reaches_the_network(inpainter):
  """Whatever is under the holes, the result is the same (also through resizing)."""
  image = astronaut(90, 70)
  holes = hole_mask(90, 70)
  black, white = image.copy(), image.copy()
  black[holes], white[holes] = 0.0, 1.0
  for fit in ('resize', 'pad'):
    np.testing.assert_array_equal(inpainter(black, holes, polarity='hole_white', fit=fit),
                                  inpainter(white, holes, polarity='hole_white', fit=fit))


def test_float_and_pil_inputs_come_back_in_kind(inpainter):
  image = astronaut(50, 60)
  holes = hole_mask(50, 60)
  result = inpainter(image.astype(np.float64), holes, polarity='hole_white')
  assert result.dtype == np.float64 and result.shape == image.shape
  pil_image = Image.fromarray((image * 255).astype(np.uint8))
  pil_mask = Image.fromarray(np.where(holes, 255, 0).astype(np.uint8))
  pil_result = inpainter(pil_image, pil_mask, polarity='hole_white')
  assert isinstance(pil_result, Image.Image)
  assert pil_result.size == pil_image.size and pil_result.mode == 'RGB'
  greyscale = inpainter(pil_image.convert('L'), pil_mask, polarity='hole_white')
  assert greyscale.mode == 'L' and greyscale.size == pil_image.size


def test_polarity_is_explicit_and_respected(inpainter):
  image = (astronaut(64, 64) * 255).astype(np.uint8)
  holes = hole_mask(64, 64)
  white_holes = np.where(holes, 255, 0).astype(np.uint8)
  white_keep = 255 - white_holes
  result = inpainter(image, white_holes, polarity='hole_white')
  np.testing.assert_array_equal(result, inpainter(image, white_keep, polarity='keep_white'))
  np.testing.assert_array_equal(
      result, inpainter(image, white_holes[..., None].repeat(3, -1), polarity='hole_white'))
  # The opposite polarity treats the block as the only known region.
  flipped = inpainter(image, white_holes, polarity='keep_white')
  np.testing.assert_array_equal(flipped[holes], image[holes])
  with pytest.raises(TypeError, match='polarity'):
    inpainter(image, white_holes)  # pylint: disable=missing-kwoa
  with pytest.raises(ValueError, match='polarity'):
    inpainter(image, white_holes, polarity='white')


def test_batches_match_single_calls_and_compile_once_per_shape(tiny_checkpoint):
  inpainter = Inpainter.from_checkpoint(tiny_checkpoint)
  images = np.stack([astronaut(48, 40), astronaut(48, 40)[::-1], astronaut(48, 40)[:, ::-1]])
  holes = np.stack([hole_mask(48, 40), hole_mask(48, 40)[::-1], hole_mask(48, 40)[:, ::-1]])
  batch = inpainter(images, holes, polarity='hole_white', fit='pad')
  assert batch.shape == images.shape
  singles = [inpainter(i, h, polarity='hole_white', fit='pad') for i, h in zip(images, holes)]
  np.testing.assert_allclose(batch, np.stack(singles), atol=1e-5)
  inpainter(images[::-1].copy(), holes, polarity='hole_white', fit='pad')
  # 3 images and 1 image both pad to one per device: a single compilation for this shape.
  assert len(inpainter.compiled_shapes) == 1, inpainter.compiled_shapes
  # Any photo size of the same 'pad' canvas (64×64 here) uses that one program; another
  # canvas (80×64) compiles once more.
  inpainter(astronaut(32, 32), hole_mask(32, 32), polarity='hole_white', fit='pad')
  assert len(inpainter.compiled_shapes) == 1, inpainter.compiled_shapes
  inpainter(astronaut(80, 40), hole_mask(80, 40), polarity='hole_white', fit='pad')
  assert [shape for shape, _, _ in inpainter.compiled_shapes] == [(4, 64, 64, 3), (4, 80, 64, 3)]


def test_data_parallel_splits_padded_batches_across_devices():
  parallel = DataParallel()
  shardings = []

  def double(factor, x):
    shardings.append(x.sharding)
    return {'y': x * factor}

  x = np.arange(6, dtype=np.float32)
  result = parallel(double, parallel.replicate(np.float32(2)), x)
  np.testing.assert_array_equal(result['y'], 2 * x)
  assert len(shardings[0].device_set) == jax.local_device_count() == 4
  assert shardings[0].shard_shape((8,)) == (2,)  # 6 padded to 8, two per device.


def test_repeated_passes_refine_the_holes_only(inpainter):
  image = astronaut(64, 64)
  holes = hole_mask(64, 64)
  once = inpainter(image, holes, polarity='hole_white')
  twice = inpainter(image, holes, polarity='hole_white', passes=2)
  np.testing.assert_array_equal(twice[~holes], image[~holes])
  assert np.abs(twice[holes] - once[holes]).max() > 0
  with pytest.raises(ValueError, match='passes'):
    inpainter(image, holes, polarity='hole_white', passes=0)


def test_later_passes_reuse_the_inference_core_without_rerunning_the_prefill(monkeypatch):
  """Passes after the first show the network the previous composite, all known, and restore
  the known pixels; the diffusion pre-fill of a mask without holes is the image itself, so
  it runs in the first pass only."""
  config = tiny.get_config()
  config.model.prefill, config.model.mask_channel = 'biharmonic', True
  variables = network.init_variables(config.model, jax.random.key(0))
  fill_runs = []

  def counted_fill(image, mask):
    jax.debug.callback(lambda: fill_runs.append(1))
    return prefill.biharmonic_fill(image, mask)

  monkeypatch.setitem(prefill.FILLS, 'biharmonic', counted_fill)
  inpainter = Inpainter(variables, config)
  images = astronaut(64, 64)[None]
  known = (~hole_mask(64, 64))[None, :, :, None].astype(np.float32)
  runs = {}
  for passes in (1, 3):
    fill_runs.clear()
    result = inpainter.inpaint_arrays(images, known, passes=passes)
    jax.effects_barrier()
    runs[passes] = len(fill_runs)
  assert runs[3] == runs[1] > 0

  # The passes spelled out: the network sees the previous fill as known everywhere, with
  # the pre-fill run on every pass.
  monkeypatch.setitem(prefill.FILLS, 'biharmonic', prefill.biharmonic_fill)
  apply = network.create_model(config.model).apply
  fill = network.inpaint(apply, variables, images * known, known)
  for _ in range(2):
    refined = apply(variables, fill, np.ones_like(known), train=False)
    fill = known * images + (1 - known) * refined
  np.testing.assert_allclose(result, known * images + (1 - known) * np.clip(fill, 0, 1),
                             atol=1e-5)


def test_prefill_of_a_mask_without_holes_is_the_image():
  image = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
  for known in (np.ones((2, 16, 16, 1), np.float32), np.full((1, 16, 16, 1), 0.7, np.float32)):
    for method, fill in prefill.FILLS.items():
      np.testing.assert_array_equal(prefill.fill_holes(method, image, known), image)
      np.testing.assert_array_equal(fill(image, known), image)
  holes = np.ones((2, 16, 16, 1), np.float32)
  holes[1, 4:8, 4:8] = 0  # One hole in the batch: every image is filled.
  np.testing.assert_array_equal(prefill.fill_holes('harmonic', image, holes),
                                prefill.harmonic_fill(image, holes))


def test_mask_of_another_size_is_an_error_unless_resizing_is_asked(inpainter):
  image = astronaut(60, 60)
  big_holes = hole_mask(120, 120)
  with pytest.raises(ValueError, match='120×120 but the image is 60×60'):
    inpainter(image, big_holes, polarity='hole_white')
  result = inpainter(image, big_holes, polarity='hole_white', resize_mask=True)
  small_holes = hole_mask(60, 60)
  np.testing.assert_array_equal(result[~small_holes & ~np.roll(small_holes, 1, 0)],
                                image[~small_holes & ~np.roll(small_holes, 1, 0)])


def test_masks_must_be_binary(inpainter):
  image = astronaut(64, 64)
  noise = np.random.default_rng(0).uniform(size=(64, 64)).astype(np.float32)
  with pytest.raises(ValueError, match='not binary'):
    inpainter(image, noise, polarity='hole_white')
  # Anti-aliased edges (a few grey pixels) are thresholded at mid-grey.
  soft_edge = hole_mask(64, 64).astype(np.float32)
  soft_edge[15, 20:40] = 0.3
  soft_edge[32, 20:40] = 0.7
  inpainter(image, soft_edge, polarity='hole_white')
  with pytest.raises(ValueError, match=r'\[0, 1\]'):
    inpainter(image, soft_edge * 2, polarity='hole_white')


@pytest.mark.parametrize('image, message', [
    (np.full((32, 32, 3), 200.0, np.float32), r'\[0, 1\]'),
    (np.zeros((32, 32), np.uint8), 'RGB'),
    (np.zeros((32, 32, 4), np.uint8), 'RGB'),
    (np.zeros((32, 32, 3), np.int32), 'dtype'),
])
def test_bad_images_are_rejected(inpainter, image, message):
  with pytest.raises(ValueError, match=message):
    inpainter(image, np.zeros(image.shape[:2], bool), polarity='hole_white')


def test_workdir_without_checkpoint_lists_its_contents(tmp_path):
  (tmp_path / 'events.out.tfevents.1').write_text('')
  with pytest.raises(FileNotFoundError, match='events.out.tfevents.1'):
    Inpainter.from_checkpoint(str(tmp_path))


def test_checkpoint_with_another_config_is_rejected(tmp_path):
  trained = tiny.get_config()
  state = steps.create_train_state(trained, jax.random.key(0))
  claimed = tiny.get_config()
  claimed.model.base_features = 16
  save_checkpoint(tmp_path, claimed, state)
  with pytest.raises(ValueError, match='(?s)base_features=16.*written with another config'):
    Inpainter.from_checkpoint(str(tmp_path))


def test_inference_imports_neither_tensorflow_nor_clu():
  code = ('import sys, define_jax.inference, define_jax.inpaint; '
          'print(sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "clu"}))')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
  assert result.stdout.strip() == '[]'


# What loading the packaged model and inpainting must not import: training (optax, the
# losses, the train step, Orbax's checkpoints), evaluation, the PyTorch reference, TensorFlow.
NOT_FOR_INFERENCE = ('optax', 'orbax', 'tensorflow', 'torch', 'clu', 'define_jax.training',
                     'define_jax.eval', 'define_jax.benchmark', 'define_jax.study')


def test_packaged_model_inpaints_without_training_evaluation_or_tensorflow_modules():
  code = ('import sys, numpy as np\n'
          'from define_jax.inference import Inpainter\n'
          'image = np.random.default_rng(0).random((40, 48, 3), np.float32)\n'
          'known = np.ones((40, 48, 1), np.float32); known[10:20, 12:30] = 0\n'
          'fill = Inpainter.pretrained()(image, known, polarity="keep_white")\n'
          'assert fill.shape == image.shape and np.isfinite(fill).all()\n'
          f'found = sorted(m for m in sys.modules for p in {NOT_FOR_INFERENCE!r}\n'
          '               if m == p or m.startswith(p + "."))\n'
          'print(found)\n')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == '[]'


def write_photo_and_mask(directory, name, size=(80, 60)):
  directory.mkdir(parents=True, exist_ok=True)
  width, height = size
  Image.fromarray((astronaut(height, width) * 255).astype(np.uint8)).save(directory / f'{name}.jpg')
  holes = np.where(hole_mask(height, width), 255, 0).astype(np.uint8)
  Image.fromarray(holes).save(directory / f'{name}_mask.png')


def test_cli_single_image(tiny_checkpoint, tmp_path, capsys):
  write_photo_and_mask(tmp_path, 'face')
  out = tmp_path / 'filled.png'
  args = ['--checkpoint', tiny_checkpoint, '--image', str(tmp_path / 'face.jpg'),
          '--mask', str(tmp_path / 'face_mask.png'), '--polarity', 'hole_white', '--out', str(out)]
  assert inpaint.main(args) == 0
  with Image.open(out) as written:
    assert written.size == (80, 60)
  # Bad input: the error says what is wrong, no traceback.
  (tmp_path / 'broken.jpg').write_bytes(b'not an image')
  args[args.index('--image') + 1] = str(tmp_path / 'broken.jpg')
  assert inpaint.main(args + ['--overwrite']) == 2
  assert 'broken.jpg is not an image' in capsys.readouterr().err


def test_cli_folder_mode_skips_failures_and_reports_them(tiny_checkpoint, tmp_path):
  images, masks = tmp_path / 'images', tmp_path / 'masks'
  for name in ('a', 'sub/b', 'c'):
    write_photo_and_mask(tmp_path / 'raw', name.replace('/', '_'))
    (images / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
    (masks / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
    os.replace(tmp_path / 'raw' / f'{name.replace("/", "_")}.jpg', images / f'{name}.jpg')
    os.replace(tmp_path / 'raw' / f'{name.replace("/", "_")}_mask.png', masks / f'{name}.png')
  Image.new('L', (10, 10)).save(masks / 'c.png')  # Wrong size.
  out = tmp_path / 'out'
  command = [sys.executable, '-m', 'define_jax.inpaint', '--checkpoint', tiny_checkpoint,
             '--images', str(images), '--masks', str(masks), '--polarity', 'hole_white',
             '--out', str(out)]
  result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1, result.stderr[-3000:]
  assert sorted(p.relative_to(out).as_posix() for p in out.rglob('*.png')) == ['a.png', 'sub/b.png']
  assert 'c.png is 10×10' in result.stderr
  assert '2 written' in result.stderr and '1 skipped (1 size mismatch)' in result.stderr
  assert '3/3' in result.stderr  # The progress bar.
  # fit='auto' says per photo what it did with faces.
  assert re.search(r'a\.jpg: (no face found|\d+ of \d+ faces found)', result.stderr)


def test_face_prefill_applies_to_aligned_face_canvases_only(tiny_checkpoint):
  """model.face_prefill changes the fill of canvases marked as aligned faces (fit='auto''s),
  never that of other calls; without it both are the same program's."""
  image = astronaut(128, 128)[None]
  known = np.ones((1, 128, 128, 1), np.float32)
  known[:, 40:60, 16:44] = 0.0
  plain = Inpainter.pretrained(overrides=['--config.model.face_prefill=biharmonic'])
  mirrored = Inpainter.pretrained(overrides=['--config.model.face_prefill=mirror'])
  reference = plain.inpaint_arrays(image, known)
  np.testing.assert_array_equal(plain.inpaint_arrays(image, known, aligned_faces=True),
                                reference)
  np.testing.assert_array_equal(mirrored.inpaint_arrays(image, known), reference)
  assert np.abs(mirrored.inpaint_arrays(image, known, aligned_faces=True)
                - reference).max() > 1e-2
  with pytest.raises(ValueError, match='face_prefill'):
    Inpainter.pretrained(overrides=['--config.model.face_prefill=smear'])
  with pytest.raises(ValueError, match="face_prefill='mirror' needs a network trained"):
    Inpainter.from_checkpoint(tiny_checkpoint, overrides=['--config.model.face_prefill=mirror'])


def arbitrary_array(draw, shape, binary=False):
  dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, bool]))
  rng = np.random.default_rng(draw(st.integers(0, 2**31)))
  if dtype == bool:
    return rng.integers(0, 2, shape).astype(bool)
  if binary:  # 0 and the dtype's "white"
    white = 1 if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).max
    return (rng.integers(0, 2, shape) * white).astype(dtype)
  if np.issubdtype(dtype, np.integer):
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
  out_of_range = draw(st.sampled_from([False, False, False, True]))
  values = rng.uniform(-0.5 if out_of_range else 0.0, 1.5 if out_of_range else 1.0,
                       shape).astype(dtype)
  if draw(st.sampled_from([False, False, False, True])):
    values.flat[draw(st.integers(0, values.size - 1))] = draw(
        st.sampled_from([np.nan, np.inf, -np.inf]))
  return values


@st.composite
def image_and_mask(draw):
  height, width = draw(SIZES)
  channels = draw(st.sampled_from([3, 3, 3, 3, None, 1, 4]))
  image_shape = (height, width) if channels is None else (height, width, channels)
  mask_height = draw(st.sampled_from([height, draw(st.integers(1, 9))]))
  mask_shape = draw(st.sampled_from([(mask_height, width), (mask_height, width, 1),
                                     (mask_height, width, 3)]))
  binary_mask = draw(st.sampled_from([True, True, True, False]))
  return arbitrary_array(draw, image_shape), arbitrary_array(draw, mask_shape, binary_mask)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_and_mask(), st.sampled_from(['hole_white', 'keep_white']))
def test_inpainter_on_arbitrary_arrays(inpainter, pair, polarity):
  image, mask = pair
  try:
    result = inpainter(image, mask, polarity=polarity)
  except (ValueError, TypeError) as error:
    assert len(str(error)) > 10
    event(f'refused: {str(error)[:30]}')
    return
  event('inpainted')
  assert result.shape == image.shape and result.dtype == image.dtype
  if np.issubdtype(result.dtype, np.floating):
    assert np.all(np.isfinite(result[np.isfinite(image)]))


def test_ragged_batches_and_empty_images_are_clear_errors(inpainter):
  with pytest.raises(InputError, match=r'share one shape: image 0 is \(48, 40, 3\), image 1 '
                     r'is \(32, 32, 3\)'):
    inpainter([photo(), photo(32, 32)], [block_holes(), block_holes(32, 32)],
              polarity='hole_white')
  with pytest.raises(InputError, match='share one shape'):
    inpainter([photo(), photo()], [block_holes(), block_holes(32, 32)], polarity='hole_white')
  with pytest.raises(InputError, match='0×0: an image needs at least one pixel'):
    inpainter(np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), bool), polarity='hole_white')
  with pytest.raises(InputError, match='empty'):
    inpainter(np.zeros((0, 8, 8, 3), np.uint8), np.zeros((0, 8, 8), bool),
              polarity='hole_white')
  # A list of equally sized images (PIL or arrays) is a batch.
  batch = inpainter([photo(), Image.fromarray(photo(seed=1))], [block_holes()] * 2,
                    polarity='hole_white')
  assert batch.shape == (2, 48, 40, 3)


def render_mask(holes: np.ndarray, encoding: str, polarity: str):
  """The hole set `holes` written in one of the many valid ways a user may pass a mask."""
  white = holes if polarity == 'hole_white' else ~holes
  if encoding == 'bool':
    return white
  if encoding == 'uint8 0/255':
    return np.where(white, 255, 0).astype(np.uint8)
  if encoding == 'uint8 0/1':
    return white.astype(np.uint8)
  if encoding == 'uint16 0/65535':
    return np.where(white, 65535, 0).astype(np.uint16)
  if encoding == 'int64 0/255':
    return np.where(white, 255, 0)
  if encoding == 'float 0/1':
    return white.astype(np.float32)
  if encoding == 'rgb uint8':
    return np.repeat(np.where(white, 255, 0).astype(np.uint8)[..., None], 3, -1)
  if encoding == 'PIL L':
    return Image.fromarray(np.where(white, 255, 0).astype(np.uint8))
  if encoding == 'PIL 1':
    return Image.fromarray(white)
  if encoding == 'PIL I;16':
    return Image.fromarray(np.where(white, 65535, 0).astype(np.uint16))
  raise AssertionError(encoding)


MASK_ENCODINGS = ['bool', 'uint8 0/255', 'uint8 0/1', 'uint16 0/65535', 'int64 0/255',
                  'float 0/1', 'rgb uint8', 'PIL L', 'PIL 1', 'PIL I;16']


def render_image(pixels: np.ndarray, encoding: str):
  """uint8 RGB pixels as uint8, uint16, float or a PIL image; and the pixels as read back."""
  if encoding == 'uint8':
    return pixels, pixels
  if encoding == 'uint16':
    wide = pixels.astype(np.uint16) * 257
    return wide, wide
  if encoding == 'float32':
    return pixels / np.float32(255), pixels / np.float32(255)
  if encoding == 'PIL RGB':
    return Image.fromarray(pixels), pixels
  if encoding == 'PIL L':
    grey = pixels[..., 0]
    return Image.fromarray(grey), grey
  if encoding == 'PIL I;16':
    grey = pixels[..., 0].astype(np.uint16) * 257
    return Image.fromarray(grey), grey
  raise AssertionError(encoding)


@st.composite
def hole_sets(draw):
  height, width = draw(SIZES)
  kind = draw(st.sampled_from(['none', 'all', 'block', 'random']))
  holes = np.zeros((height, width), bool)
  if kind == 'all':
    holes[:] = True
  elif kind == 'block':
    top, left = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
    holes[top:top + draw(st.integers(1, height)), left:left + draw(st.integers(1, width))] = True
  elif kind == 'random':
    holes = np.random.default_rng(draw(st.integers(0, 2**31))).uniform(size=holes.shape) < 0.3
  return holes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hole_sets(), st.sampled_from(MASK_ENCODINGS), st.sampled_from(['hole_white', 'keep_white']),
       st.sampled_from(['uint8', 'uint16', 'float32', 'PIL RGB', 'PIL L', 'PIL I;16']),
       st.integers(0, 2**31))
def test_any_valid_mask_encoding_gives_the_right_answer(inpainter, holes, mask_encoding, polarity,
                                                        image_encoding, seed):
  """Whatever the encoding, the result keeps exactly the known pixels and its fill does not
  depend on what was under the holes (so no hole was read as known); an all-hole mask is
  the one refusal."""
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, holes.shape + (3,), dtype=np.uint8)
  if image_encoding.startswith('PIL L') or image_encoding == 'PIL I;16':
    pixels[...] = pixels[..., :1]
  other = pixels.copy()
  other[holes] = 255 - other[holes]  # Different content under the holes.
  mask = render_mask(holes, mask_encoding, polarity)
  image, expected = render_image(pixels, image_encoding)
  image2, _ = render_image(other, image_encoding)
  if holes.all():
    with pytest.raises(InputError, match='every pixel as a hole'):
      inpainter(image, mask, polarity=polarity)
    return
  result = inpainter(image, mask, polarity=polarity)
  result2 = inpainter(image2, mask, polarity=polarity)
  values, values2 = np.asarray(result), np.asarray(result2)
  assert values.shape == np.asarray(expected).shape
  np.testing.assert_array_equal(values[~holes], np.asarray(expected)[~holes])
  np.testing.assert_array_equal(values[holes], values2[holes])


def test_non_finite_output_is_an_error_never_a_picture(tiny_checkpoint):
  inpainter = Inpainter.from_checkpoint(tiny_checkpoint)
  inpainter.set_variables(poisoned(checkpoints.load_model(tiny_checkpoint)[0], 'nan'))
  image = np.full((64, 64, 3), 128, np.uint8)
  holes = np.zeros((64, 64), bool)
  holes[10:30, 10:30] = True
  with pytest.raises(ValueError, match='NaN or infinite values'):
    inpainter(image, holes, polarity='hole_white')


def test_any_number_of_passes_runs_one_compiled_program(tiny_checkpoint):
  inpainter = Inpainter.from_checkpoint(tiny_checkpoint)
  image = (astronaut(40, 40) * 255).astype(np.uint8)
  holes = np.zeros((40, 40), bool)
  holes[10:25, 8:30] = True
  results = [inpainter(image, holes, polarity='hole_white', passes=passes)
             for passes in (1, 2, 3, inference.MAX_PASSES)]
  # One program without the refinement loop (passes=1), one for every larger count.
  assert [refine for _, _, refine in inpainter.compiled_shapes] == [False, True], \
      inpainter.compiled_shapes
  assert not np.array_equal(results[0], results[1])
  assert not np.array_equal(results[1], results[2])
  with pytest.raises(ValueError, match=f'need 1 to {inference.MAX_PASSES} passes'):
    inpainter(image, holes, polarity='hole_white', passes=10**6)
  with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
    inpaint.parse_args(['--image', 'i.png', '--mask', 'm.png', '--polarity', 'hole_white',
                        '--out', 'o.png', '--passes', '1000000'])
  assert f'--passes 1000000: at most {inference.MAX_PASSES}' in err.getvalue()


@pytest.fixture(scope='module')
def packaged():
  return Inpainter.pretrained(detector=lambda image: [])  # A flat photo has no face.


@pytest.mark.parametrize('fit', ['auto', 'pad', 'resize'])
def test_a_flat_photo_comes_back_flat(packaged, fit):
  image = np.full((256, 256, 3), 128, np.uint8)
  holes = np.zeros((256, 256), bool)
  holes[78:178, 78:178] = True
  result = packaged(image, holes, polarity='hole_white', fit=fit).astype(int)
  assert np.abs(result - 128).max() <= 1, (result[holes].min(), result[holes].max())


def test_a_flat_region_beside_texture_comes_back_flat_and_faces_keep_their_correction(
    packaged):
  image = np.full((256, 256, 3), 100, np.uint8)
  image[:, 128:] = skimage.data.astronaut()[:256, 128:256]
  holes = np.zeros((256, 256), bool)
  holes[100:160, 20:70] = True  # In the flat half, 58 pixels from the texture.
  result = packaged(image, holes, polarity='hole_white', fit='pad').astype(int)
  assert np.abs(result[holes] - 100).max() <= 1
  # On a face the correction is whole: its known pixels vary far beyond FLAT_CONTRAST.
  face = skimage.transform.resize(skimage.data.astronaut()[0:256, 96:352], (128, 128))
  known = np.ones((1, 128, 128, 1), np.float32)
  known[:, 60:90, 40:90] = 0.0
  fade = np.asarray(network.flat_fade(face[None].astype(np.float32), known, 32))
  assert fade.min() == 1.0
