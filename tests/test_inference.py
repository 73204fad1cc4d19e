"""Inference: checkpoint restore, sizes, dtypes, mask polarity, batching, bad input, CLI."""

import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import tiny
from define_jax import inpaint
from define_jax.inference import Inpainter
from define_jax.model import network
from define_jax.model import prefill
from define_jax.runtime.data_parallel import DataParallel
from define_jax.training import steps

from conftest import REPO_ROOT, TRAIN_STEPS, astronaut, save_checkpoint

@pytest.fixture(scope='module')
def inpainter(tiny_checkpoint) -> Inpainter:
  return Inpainter.from_checkpoint(tiny_checkpoint)


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
