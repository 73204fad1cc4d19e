"""Every entry point: --help exits 0 and names the command as it is typed. The inpaint CLI on
hostile input: pixel limits, mask encodings, lossy formats, outputs it must never overwrite or
write through a link, folder runs that fail, are interrupted or run concurrently; the training
main's one-line errors."""

import ast
import contextlib
import importlib
import io
import os
import pathlib
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from PIL import Image

from define_jax import inpaint
from define_jax.files import image_files
from define_jax.files import output_files
from define_jax.files.image_files import InputError
from define_jax.inference import Inpainter

from conftest import (REPO_ROOT, SIZES, block_holes, cli_args, damaged, decoding_forbidden, photo,
                      png_header_only, run_cli)

ENTRY_POINTS = ('main', 'evaluate', 'inpaint', 'export', 'benchmark', 'study',
                'datasets.prepare', 'tools.port_vgg16', 'tools.model_card_figures',
                'tools.port_mtcnn', 'tools.measure_face_template', 'demo')
# Commands that are packages: `python -m define_jax.NAME` runs NAME/__main__.py, which calls
# the main() of this module.
MAIN_MODULES = {'benchmark': 'benchmark.benchmark', 'study': 'study.study', 'demo': 'demo.demo'}


@pytest.mark.parametrize('name', ENTRY_POINTS)
def test_help_exits_zero_and_names_the_command(name):
  module = importlib.import_module(f'define_jax.{MAIN_MODULES.get(name, name)}')
  out = io.StringIO()
  with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
    if name == 'main':  # absl's app.run reads the whole argv, program name first.
      module.run(['main', '--help'])
    else:
      module.main(['--help'])
  assert exit_info.value.code in (0, None)
  assert f'python -m define_jax.{name}' in out.getvalue().splitlines()[0]


def test_each_console_script_is_an_entry_point_s_main():
  """setup.py's console scripts call the function `python -m define_jax.NAME` calls."""
  tree = ast.parse((pathlib.Path(REPO_ROOT) / 'setup.py').read_text(encoding='utf-8'))
  scripts = next(ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and node.targets[0].id == 'CONSOLE_SCRIPTS')
  targets = {script.split(' = ')[1] for script in scripts}
  expected = {f'define_jax.{MAIN_MODULES.get(name, name)}:{"run" if name == "main" else "main"}'
              for name in ENTRY_POINTS if not name.startswith('tools.')}
  assert targets == expected
  for target in targets:
    module, function = target.split(':')
    assert callable(getattr(importlib.import_module(module), function)), target


def test_main_help_explains_config_overrides():
  from define_jax import main  # pylint: disable=g-import-not-at-top

  out = io.StringIO()
  with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
    main.run(['main', '-h'])
  assert '--config.SECTION.FIELD=VALUE' in out.getvalue() and '--verbosity' in out.getvalue()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Our own open.
def test_pixel_limit_is_checked_from_the_header_in_cli_and_api(inpainter, tmp_path):
  bomb = tmp_path / 'bomb.png'
  bomb.write_bytes(png_header_only(12_000, 12_000))
  mask = tmp_path / 'mask.png'
  Image.fromarray(np.zeros((48, 40), np.uint8)).save(mask)
  unbounded = 10_000  # GB: the memory bound (tests/test_memory.py) would refuse it first.
  with decoding_forbidden():
    status, err = run_cli(cli_args(bomb, mask, tmp_path / 'out.png', '--max_memory_gb',
                                   unbounded), inpainter)
    with pytest.raises(InputError, match=r'bomb\.png is 12000×12000 \(144 megapixels\), over '
                       r'the limit of 50 megapixels'):
      inpainter(str(bomb), np.zeros((10, 10), bool), polarity='hole_white',
                max_memory_gb=unbounded)
    with pytest.raises(InputError, match='over the limit of 50 megapixels'):
      inpainter(Image.open(bomb), np.zeros((10, 10), bool), polarity='hole_white',
                max_memory_gb=unbounded)
  assert status == 2 and str(bomb) in err and 'limit of 50 megapixels' in err
  assert not (tmp_path / 'out.png').exists()
  # The limit is configurable (arrays too, before any compilation).
  status, err = run_cli(cli_args(mask, mask, tmp_path / 'o.png', '--max_pixels', 1000), inpainter)
  assert status == 2 and 'mask.png is 40×48 (1,920 pixels), over the limit of 1,000 pixels' in err
  with pytest.raises(InputError, match='limit'):
    inpainter(photo(), block_holes(), polarity='hole_white', max_pixels=1000)


def test_masks_of_zeros_and_ones_are_binary(inpainter, tmp_path):
  image, holes = photo(), block_holes()
  ones = holes.astype(np.uint8)  # 1 = white = hole under hole_white.
  result = inpainter(image, ones, polarity='hole_white')
  np.testing.assert_array_equal(result, inpainter(image, holes, polarity='hole_white'))
  assert np.any(result[holes] != image[holes])
  kept = inpainter(image, 1 - ones, polarity='keep_white')
  np.testing.assert_array_equal(kept, result)
  # Through the CLI, as a PNG with values 0 and 1.
  Image.fromarray(image).save(tmp_path / 'face.png')
  Image.fromarray(ones).save(tmp_path / 'mask01.png')
  status, err = run_cli(cli_args(tmp_path / 'face.png', tmp_path / 'mask01.png',
                                 tmp_path / 'out.png'), inpainter)
  assert status == 0, err
  written = np.asarray(Image.open(tmp_path / 'out.png'))
  np.testing.assert_array_equal(written[~holes], image[~holes])
  np.testing.assert_array_equal(written, result)


def test_sixteen_bit_and_greyscale_images_are_converted_correctly(inpainter, tmp_path):
  height, width = 48, 40
  grey16 = (np.linspace(0, 65535, height * width).reshape(height, width)).astype(np.uint16)
  holes = block_holes()
  path = tmp_path / 'grey16.png'
  Image.fromarray(grey16).save(path)  # Hand-made 16-bit greyscale PNG.
  with Image.open(path) as opened:
    assert opened.mode == 'I;16'
  for source in (Image.fromarray(grey16), str(path)):
    result = inpainter(source, holes, polarity='hole_white')
    assert isinstance(result, Image.Image) and result.mode == 'I;16'
    values = np.asarray(result)
    np.testing.assert_array_equal(values[~holes], grey16[~holes])  # Exact, not clipped.
  # The same picture in 8 bit gives the same fill, to 8-bit precision.
  grey8 = np.round(grey16 / 257).astype(np.uint8)
  fill8 = np.asarray(inpainter(Image.fromarray(grey8), holes, polarity='hole_white'), float)
  assert np.abs(values[holes] / 257 - fill8[holes]).max() <= 2
  # uint16 masks (0/65535) and 16-bit mask files work the same as 8-bit ones.
  mask16 = np.where(holes, 65535, 0).astype(np.uint16)
  np.testing.assert_array_equal(inpainter(grey16[..., None].repeat(3, -1), mask16,
                                          polarity='hole_white')[~holes],
                                grey16[..., None].repeat(3, -1)[~holes])
  Image.fromarray(mask16).save(tmp_path / 'mask16.png')
  status, err = run_cli(cli_args(path, tmp_path / 'mask16.png', tmp_path / 'out16.png'),
                        inpainter)
  assert status == 0, err
  with Image.open(tmp_path / 'out16.png') as written:
    assert written.mode in ('I;16', 'I')
    np.testing.assert_array_equal(np.asarray(written)[~holes], grey16[~holes])
  # 8-bit data in a 16-bit array is ambiguous, not silently "no holes".
  with pytest.raises(InputError, match='scale is unclear'):
    inpainter(photo(), np.where(holes, 255, 0).astype(np.uint16), polarity='hole_white')


def test_all_hole_mask_is_an_error_unless_asked_for(inpainter, tmp_path):
  image = photo()
  everything = np.ones((48, 40), bool)
  with pytest.raises(InputError, match='every pixel as a hole'):
    inpainter(image, everything, polarity='hole_white')
  with pytest.raises(InputError, match=r'image 1 of the batch'):
    inpainter(np.stack([image, image]), np.stack([block_holes(), everything]),
              polarity='hole_white')
  assert inpainter(image, everything, polarity='hole_white', allow_all_hole=True).shape == \
      image.shape
  Image.fromarray(image).save(tmp_path / 'face.png')
  Image.fromarray(np.zeros((48, 40), np.uint8)).save(tmp_path / 'black.png')
  args = ['--image', tmp_path / 'face.png', '--mask', tmp_path / 'black.png', '--polarity',
          'keep_white', '--out', tmp_path / 'out.png']
  status, err = run_cli(args, inpainter)
  assert status == 2 and 'black.png marks every pixel as a hole' in err
  assert not (tmp_path / 'out.png').exists()
  status, err = run_cli(args + ['--allow_all_hole'], inpainter)
  assert status == 0 and (tmp_path / 'out.png').exists(), err


def test_cli_never_overwrites_its_input_and_needs_overwrite_for_outputs(inpainter, tmp_path):
  face, mask = tmp_path / 'face.png', tmp_path / 'mask.png'
  Image.fromarray(photo()).save(face)
  Image.fromarray(np.where(block_holes(), 255, 0).astype(np.uint8)).save(mask)
  original = face.read_bytes()
  for out in (face, mask, tmp_path / '.' / 'face.png'):
    for extra in ([], ['--overwrite']):
      status, err = run_cli(cli_args(face, mask, out, *extra), inpainter)
      assert status == 2 and 'is the input' in err and 'Traceback' not in err
  assert face.read_bytes() == original
  out = tmp_path / 'out.png'
  out.write_bytes(b'precious')
  status, err = run_cli(cli_args(face, mask, out), inpainter)
  assert status == 2 and f'{out} exists; pass --overwrite' in err
  assert out.read_bytes() == b'precious'
  status, err = run_cli(cli_args(face, mask, out, '--overwrite'), inpainter)
  assert status == 0 and Image.open(out).size == (40, 48), err
  assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]  # Atomic write.


def write_pair(images: Path, masks: Path, name: str, holes=None, fmt='png'):
  images.mkdir(parents=True, exist_ok=True)
  masks.mkdir(parents=True, exist_ok=True)
  Image.fromarray(photo()).save(images / f'{name}.{fmt}')
  holes = block_holes() if holes is None else holes
  Image.fromarray(np.where(holes, 255, 0).astype(np.uint8)).save(masks / f'{name}.png')


def folder_args(images, masks, out, *extra):
  return ['--images', images, '--masks', masks, '--polarity', 'hole_white', '--out', out, *extra]


def test_folder_mode_refuses_two_inputs_with_one_output_name(inpainter, tmp_path):
  images, masks, out = tmp_path / 'images', tmp_path / 'masks', tmp_path / 'out'
  write_pair(images, masks, 'x', fmt='jpg')
  write_pair(images, masks, 'x', fmt='png')
  write_pair(images, masks, 'y')
  status, err = run_cli(folder_args(images, masks, out), inpainter)
  assert status == 2 and f'{images / "x.jpg"} and {images / "x.png"}' in err
  assert not out.exists()  # Refused before writing anything.
  # An output folder that is the input folder is refused too.
  (images / 'x.jpg').unlink()
  status, err = run_cli(folder_args(images, masks, images), inpainter)
  assert status == 2 and 'would overwrite the input' in err


def test_cli_out_that_cannot_be_a_file_is_a_clear_error(inpainter, tmp_path):
  face, mask = tmp_path / 'face.png', tmp_path / 'mask.png'
  Image.fromarray(photo()).save(face)
  Image.fromarray(np.where(block_holes(), 255, 0).astype(np.uint8)).save(mask)
  cases = [(tmp_path, 'is a directory'),
           (mask / 'o.png', f'{mask} is a file, not a directory'),
           (tmp_path / 'result', 'is not an image format'),
           (tmp_path / 'result.xyz', 'is not an image format')]
  for out, message in cases:
    status, err = run_cli(cli_args(face, mask, out), inpainter)
    assert status == 2 and message in err and 'Traceback' not in err, (out, err)


def test_folder_mode_names_every_failing_file_and_summarises(inpainter, tmp_path):
  images, masks, out = tmp_path / 'images', tmp_path / 'masks', tmp_path / 'out'
  write_pair(images, masks, 'good')
  write_pair(images, masks, 'grey')
  noise = np.random.default_rng(0).integers(0, 256, (48, 40), dtype=np.uint8)
  Image.fromarray(noise).save(masks / 'grey.png')  # Not binary.
  write_pair(images, masks, 'broken')
  (images / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n garbage')
  write_pair(images, masks, 'done')
  out.mkdir()
  (out / 'done.png').write_bytes(b'existing')
  status, err = run_cli(folder_args(images, masks, out), inpainter)
  assert status == 1
  assert f'{masks / "grey.png"} is not binary' in err
  assert f'{images / "broken.png"} is not an image' in err
  assert f'{out / "done.png"} exists' in err
  assert '1 written' in err and '3 skipped (' in err
  for reason in ('1 not binary', '1 unreadable', '1 output exists'):
    assert reason in err
  assert (out / 'good.png').exists() and (out / 'done.png').read_bytes() == b'existing'
  status, err = run_cli(folder_args(images, masks, out, '--overwrite'), inpainter)
  assert status == 1 and '2 written' in err and '2 skipped (1 not binary, 1 unreadable)' in err


def encode_file(array: np.ndarray, image_format: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format=image_format)
  return buffer.getvalue()


@st.composite
def photo_files(draw):
  """Bytes of a file given as a photo: real images of several modes, damaged or arbitrary."""
  kind = draw(st.sampled_from(['real', 'real', 'damaged', 'bytes']))
  if kind == 'bytes':
    return draw(st.binary(max_size=512))
  height, width = draw(SIZES)
  rng = np.random.default_rng(draw(st.integers(0, 2**31)))
  mode = draw(st.sampled_from(['RGB', 'L', 'I;16', 'RGBA']))
  array = {'RGB': lambda: rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
           'L': lambda: rng.integers(0, 256, (height, width), dtype=np.uint8),
           'I;16': lambda: rng.integers(0, 65536, (height, width), dtype=np.uint16),
           'RGBA': lambda: rng.integers(0, 256, (height, width, 4), dtype=np.uint8)}[mode]()
  data = encode_file(array, draw(st.sampled_from(['PNG', 'TIFF'])))
  if kind == 'damaged':
    data = damaged(data, draw(st.integers(0, len(data))), draw(st.lists(st.integers(0, 10**6),
                                                                          max_size=3)))
  return data


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(photo_files(), st.one_of(st.binary(max_size=256), st.builds(
    lambda values: encode_file(np.array(values, np.uint8).reshape(2, -1), 'PNG'),
    st.lists(st.integers(0, 255), min_size=2, max_size=40).filter(lambda v: len(v) % 2 == 0))),
    st.booleans())
def test_cli_on_arbitrary_files_exits_cleanly(inpainter, tmp_path, image_bytes, mask_bytes,
                                              matching_mask):
  """Exit 2 with one line naming the file, or exit 0 with the known pixels kept."""
  directory = Path(tempfile.mkdtemp(dir=tmp_path))
  image_path, mask_path, out = directory / 'photo.png', directory / 'mask.png', directory / 'o.png'
  image_path.write_bytes(image_bytes)
  holes = None
  if matching_mask:  # A valid mask of the photo's size, when the photo can be read.
    try:
      with Image.open(io.BytesIO(image_bytes)) as probe:
        width, height = probe.size
      holes = np.random.default_rng(len(image_bytes)).uniform(size=(height, width)) < 0.3
      mask_bytes = encode_file(np.where(holes, 255, 0).astype(np.uint8), 'PNG')
    except Exception:  # pylint: disable=broad-except
      holes = None
  mask_path.write_bytes(mask_bytes)
  status, err = run_cli(cli_args(image_path, mask_path, out, '--resize_mask'), inpainter)
  assert 'Traceback' not in err
  event(f'exit {status}')
  try:  # The API on the same files agrees with the CLI.
    api_result = inpainter(str(image_path), str(mask_path), polarity='hole_white',
                           resize_mask=True)
  except InputError as error:
    assert status == 2 and (str(image_path) in str(error) or 'mask' in str(error).lower())
  if status != 0:
    assert status == 2 and err.startswith('error: ') and not out.exists()
    assert str(image_path) in err or str(mask_path) in err, err
    return
  with Image.open(out) as written:
    np.testing.assert_array_equal(np.asarray(written), np.asarray(api_result))
  source = image_files.photo_pixels(image_files.open_image(image_path), 'photo')
  with Image.open(out) as written:
    result = np.asarray(written)
  assert result.shape[:2] == source.shape[:2]
  if holes is not None:
    if result.ndim == 2:  # A grey photo stays grey.
      source = source[..., 0]
    np.testing.assert_array_equal(result[~holes], source[~holes])


def photo_folders(tmp_path, names):
  images, masks_dir = tmp_path / 'images', tmp_path / 'masks'
  images.mkdir()
  masks_dir.mkdir()
  holes = np.zeros((24, 20), np.uint8)
  holes[5:12, 4:15] = 255
  for name in names:
    Image.fromarray(np.full((24, 20, 3), 90, np.uint8)).save(images / f'{name}.png')
    Image.fromarray(holes).save(masks_dir / f'{name}.png')
  return images, masks_dir


def run_inpaint(inpainter, *args) -> tuple[int, str]:
  return run_cli(args, inpainter)


def test_a_concurrent_run_s_output_is_never_replaced(inpainter, tmp_path):
  images, masks_dir = photo_folders(tmp_path, ['a', 'b'])
  out = tmp_path / 'out'
  original_call = Inpainter.__call__
  calls = []

  def other_run_writes_b_meanwhile(self, *args, **kwargs):
    result = original_call(self, *args, **kwargs)
    calls.append(1)
    if len(calls) == 2:  # Inputs are taken in order: a, then b.
      (out / 'b.png').write_bytes(b'the other run')
    return result

  with mock.patch.object(Inpainter, '__call__', other_run_writes_b_meanwhile):
    status, err = run_inpaint(inpainter, *folder_args(images, masks_dir, out))
  assert (out / 'b.png').read_bytes() == b'the other run'
  assert status == 1 and '1 written' in err and '1 skipped (1 output exists)' in err
  assert sorted(os.listdir(out)) == ['a.png', 'b.png']  # No temporary file left.


def test_interrupted_folder_run_prints_its_summary_and_a_rerun_skips_finished_files(
    inpainter, tmp_path):
  images, masks_dir = photo_folders(tmp_path, ['a', 'b', 'c'])
  out = tmp_path / 'out'
  original = inpaint.inpaint_file

  def interrupted_at_b(inpainter_, image, *args):
    if image.name == 'b.png':
      raise KeyboardInterrupt
    original(inpainter_, image, *args)

  with mock.patch.object(inpaint, 'inpaint_file', interrupted_at_b):
    status, err = run_inpaint(inpainter, *folder_args(images, masks_dir, out))
  assert status == 130 and 'Traceback' not in err
  assert 'Interrupted after 1 of 3: 1 written' in err
  status, err = run_inpaint(inpainter, *folder_args(images, masks_dir, out, '--skip_existing'))
  assert status == 0 and '2 written' in err and '1 already there, 0 skipped' in err


def test_outputs_respect_the_umask_and_an_overwritten_file_keeps_its_mode(inpainter, tmp_path):
  image = tmp_path / 'image.png'
  Image.fromarray(np.full((24, 20, 3), 90, np.uint8)).save(image)
  holes = np.zeros((24, 20), np.uint8)
  holes[5:12, 4:15] = 255
  Image.fromarray(holes).save(tmp_path / 'mask.png')
  args = ['--image', image, '--mask', tmp_path / 'mask.png', '--polarity', 'hole_white']
  previous = os.umask(0o022)
  try:
    assert run_inpaint(inpainter, *args, '--out', tmp_path / 'new.png')[0] == 0
    (tmp_path / 'kept.png').write_bytes(b'x')
    os.chmod(tmp_path / 'kept.png', 0o640)
    assert run_inpaint(inpainter, *args, '--out', tmp_path / 'kept.png', '--overwrite')[0] == 0
  finally:
    os.umask(previous)
  assert stat.S_IMODE(os.stat(tmp_path / 'new.png').st_mode) == 0o644
  assert stat.S_IMODE(os.stat(tmp_path / 'kept.png').st_mode) == 0o640


MAIN = [sys.executable, '-m', 'define_jax.main', '--config', os.path.join(REPO_ROOT, 'configs',
                                                                          'tiny.py')]


@pytest.mark.parametrize('extra, message', [
    (['--workdir', 'FILE'], 'is a file, not a directory'),
    (['--config.optim.batch_size=0'], 'config.optim.batch_size=0 must be a positive multiple'),
    (['--config.optim.batch_size=-8'], 'config.optim.batch_size=-8 must be a positive multiple'),
    (['--config.model.image_size=100', '--config.model.layers=1000'],
     'layers=1000: need 2 to 13 levels'),
    (['--config.optim.batchsize=8'], 'Did you mean "batch_size"'),
    (['--config.batch_size=8'], 'Did you mean --config.optim.batch_size'),
])
def test_main_errors_are_one_line_with_exit_status_2(tmp_path, extra, message):
  (tmp_path / 'file').write_text('')
  extra = [str(tmp_path / 'file') if arg == 'FILE' else arg for arg in extra]
  workdir = [] if '--workdir' in extra else ['--workdir', str(tmp_path / 'run')]
  result = subprocess.run(MAIN + workdir + extra, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], lines


def test_mask_holes_only_in_alpha_are_used_and_mask_threshold_is_a_cli_option(
    inpainter, tmp_path):
  image = tmp_path / 'image.png'
  # Textured: a flat photo's hole would come back flat, the same as before the fill.
  pixels = np.random.default_rng(0).integers(0, 256, (24, 20, 3), np.uint8)
  Image.fromarray(pixels).save(image)
  rgba = np.zeros((24, 20, 4), np.uint8)  # Transparent black,
  rgba[5:12, 4:15] = (255, 0, 255, 255)  # with opaque magenta strokes painted on it.
  Image.fromarray(rgba, 'RGBA').save(tmp_path / 'alpha.png')
  out = tmp_path / 'out.png'
  assert run_inpaint(inpainter, '--image', image, '--mask', tmp_path / 'alpha.png',
                     '--polarity', 'hole_white', '--out', out)[0] == 0
  result = np.asarray(Image.open(out))
  assert not np.array_equal(result[5:12, 4:15], pixels[5:12, 4:15])  # Filled.
  np.testing.assert_array_equal(result[15:], pixels[15:])
  # --mask_threshold: where anti-aliased edges are cut, checked before anything runs.
  with pytest.raises(SystemExit, match='2'), contextlib.redirect_stderr(io.StringIO()) as err:
    inpaint.parse_args(['--image', 'i.png', '--mask', 'm.png', '--polarity', 'hole_white',
                        '--out', 'o.png', '--mask_threshold', '1.5'])
  assert '--mask_threshold 1.5: must lie between 0 and 1' in err.getvalue()
  assert inpaint.parse_args(['--image', 'i.png', '--mask', 'm.png', '--polarity', 'hole_white',
                             '--out', 'o.png', '--mask_threshold', '0.2']).mask_threshold == 0.2


def photo_and_mask(directory, pixels=None):
  face, mask = directory / 'face.png', directory / 'mask.png'
  Image.fromarray(photo() if pixels is None else pixels).save(face)
  Image.fromarray(np.where(block_holes(), 255, 0).astype(np.uint8)).save(mask)
  return face, mask


@pytest.mark.parametrize('suffix', ['.jpg', '.gif', '.jpeg'])
def test_lossy_output_is_refused_unless_allowed_and_the_message_says_so(inpainter, tmp_path,
                                                                       suffix):
  face, mask = photo_and_mask(tmp_path)
  out = tmp_path / f'out{suffix}'
  status, err = run_cli(cli_args(face, mask, out), inpainter)
  assert status == 2 and not out.exists()
  (line,) = err.strip().splitlines()
  assert line.startswith(f'error: --out {out}: ') and 'lossy' in line
  assert '--allow_lossy' in line and ".png" in line and '.jpg' not in line.split('Write')[1]
  status, err = run_cli(cli_args(face, mask, out, '--allow_lossy'), inpainter)
  assert status == 0 and out.exists()
  assert f'Wrote {out} (not exact: ' in err and 'lossy' in err


@pytest.mark.parametrize('suffix', ['.png', '.tif', '.bmp', '.ppm', '.tga', '.webp'])
def test_exact_formats_keep_every_known_pixel(inpainter, tmp_path, suffix):
  pixels = photo()
  face, mask = photo_and_mask(tmp_path, pixels)
  out = tmp_path / f'out{suffix}'
  status, err = run_cli(cli_args(face, mask, out), inpainter)
  assert status == 0, err
  assert f"Wrote {out} (the known pixels exactly the input's)." in err
  written = np.asarray(Image.open(out).convert('RGB'))
  np.testing.assert_array_equal(written[~block_holes()], pixels[~block_holes()])


def test_sixteen_bit_photo_into_an_eight_bit_format_is_lossy(inpainter, tmp_path):
  _, mask = photo_and_mask(tmp_path)
  grey16 = tmp_path / 'grey16.png'
  Image.fromarray((photo()[..., 0].astype(np.uint16) * 257 + 3)).save(grey16)
  status, err = run_cli(cli_args(grey16, mask, tmp_path / 'out.bmp'), inpainter)
  assert status == 2 and 'holds 8 bits per channel and the photo has 16' in err
  status, err = run_cli(cli_args(grey16, mask, tmp_path / 'out.png'), inpainter)
  assert status == 0 and 'exactly' in err


def test_help_suggests_exact_formats_only(capsys):
  with pytest.raises(SystemExit):
    inpaint.parse_args(['--help'])
  text = ' '.join(capsys.readouterr().out.split())
  assert '--allow_lossy' in text and 'WebP is written lossless' in text
  suggested = text.split('--out OUT Output file')[1].split('lossy formats')[0]
  assert '.png' in suggested and '.jpg' not in suggested


def test_folder_mode_never_writes_through_a_symbolic_link_out_of_out(inpainter, tmp_path):
  images, masks, out, elsewhere = (tmp_path / name for name in
                                   ('images', 'masks', 'out', 'elsewhere'))
  write_pair(images / 'sub', masks / 'sub', 'a')
  write_pair(images, masks, 'b')
  elsewhere.mkdir()
  (elsewhere / 'a.png').write_bytes(b'precious')
  out.mkdir()
  (out / 'sub').symlink_to(elsewhere, target_is_directory=True)
  for extra in ([], ['--overwrite']):
    status, err = run_cli(folder_args(images, masks, out, *extra), inpainter)
    assert status == 2 and f'through the symbolic link {out / "sub"}' in err, err
    assert 'nothing is written outside --out' in err
  assert (elsewhere / 'a.png').read_bytes() == b'precious'
  assert sorted(os.listdir(out)) == ['sub']  # Refused before writing anything.
  (out / 'sub').unlink()
  (out / 'sub').symlink_to(out / 'inside', target_is_directory=True)  # Within --out: fine.
  (out / 'inside').mkdir()
  status, err = run_cli(folder_args(images, masks, out), inpainter)
  assert status == 0 and (out / 'inside' / 'a.png').exists(), err


def test_a_link_made_after_planning_is_caught_before_writing(tmp_path):
  out, elsewhere = tmp_path / 'out', tmp_path / 'elsewhere'
  elsewhere.mkdir()
  out.mkdir()
  (out / 'sub').symlink_to(elsewhere, target_is_directory=True)
  with pytest.raises(inpaint.InputError, match='outside --out'):
    inpaint.write_atomically(Image.new('RGB', (4, 4)), out / 'sub' / 'a.png', False, out)
  assert not os.listdir(elsewhere)


@pytest.mark.parametrize('kind', ['fifo', 'symlink'])
def test_overwrite_replaces_only_regular_files(inpainter, tmp_path, kind):
  face, mask = photo_and_mask(tmp_path)
  out = tmp_path / 'out.png'
  target = tmp_path / 'target.png'
  if kind == 'fifo':
    os.mkfifo(out)
  else:
    target.write_bytes(b'precious')
    out.symlink_to(target)
  for extra in ([], ['--overwrite']):
    status, err = run_cli(cli_args(face, mask, out, *extra), inpainter)
    assert status == 2 and 'not a regular file: it is never replaced' in err, err
  mode = os.lstat(out).st_mode
  assert stat.S_ISFIFO(mode) if kind == 'fifo' else stat.S_ISLNK(mode)
  if kind == 'symlink':
    assert target.read_bytes() == b'precious'
  # The last check, just before the rename: a FIFO made after the first check.
  with pytest.raises(output_files.NotRegularFileError, match='not a regular file'):
    output_files.write_file(out, lambda file: file.write(b'x'), replace=True)
  assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]
