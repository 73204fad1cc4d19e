"""Issue 35, hostile input part four: each test is one case of the issue and failed on the
code before its fix (lossy outputs, writes outside --out, benchmark flags, the demo's
files, flat regions, batches, many faces and thin strips). The compilation cache's cases
are in test_compilation_cache.py."""

import asyncio
import contextlib
import io
import math
import os
import signal
import stat
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import skimage.transform
from gradio import processing_utils
from gradio import route_utils
from PIL import Image
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect

from define_jax import inpaint
from define_jax.benchmark import benchmark
from define_jax.demo import demo
from define_jax.files import output_files
from define_jax.inference import Inpainter
from define_jax.model import network
from define_jax.model import prefill

from test_hostile_input import block_holes, cli_args, folder_args, photo, run_cli, write_pair
from test_hostile_input3 import sigterm_to_self_is_safe


@pytest.fixture(scope='module')
def inpainter(tiny_checkpoint) -> Inpainter:
  return Inpainter.from_checkpoint(tiny_checkpoint)


def photo_and_mask(directory, pixels=None):
  face, mask = directory / 'face.png', directory / 'mask.png'
  Image.fromarray(photo() if pixels is None else pixels).save(face)
  Image.fromarray(np.where(block_holes(), 255, 0).astype(np.uint8)).save(mask)
  return face, mask


# --- Case 5: lossy output formats ----------------------------------------------------------

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


# --- Case 7: writes outside --out --------------------------------------------------------

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


# --- Case 8: benchmark memory's flags -------------------------------------------------------

@pytest.mark.parametrize('flag,value', [('--sides', '-5'), ('--sides', '0'),
                                        ('--sides', '99999999'), ('--at_limit', '-1'),
                                        ('--at_limit', '0.01'), ('--at_limit', 'nan'),
                                        ('--at_limit', '1e9')])
def test_benchmark_memory_flags_are_one_line_errors_naming_the_flag(capsys, flag, value):
  with pytest.raises(SystemExit) as stopped:
    benchmark.main(['memory', flag, value])
  assert stopped.value.code == 2
  err = capsys.readouterr().err
  last = err.strip().splitlines()[-1]
  assert 'error: ' in last and flag in last and 'Traceback' not in err


# --- Case 6: the demo's files --------------------------------------------------------------

def test_demo_files_are_private_and_gone_after_sigterm(inpainter, monkeypatch):
  sigterm_to_self_is_safe()
  monkeypatch.setattr(demo, 'configure_logging', lambda verbose: None)
  monkeypatch.delenv('GRADIO_TEMP_DIR', raising=False)
  umask = os.umask(0o022)
  os.umask(umask)
  seen = {}

  def block_thread(app):
    del app
    cache = Path(os.environ['GRADIO_TEMP_DIR'])
    result = processing_utils.save_pil_to_cache(Image.new('RGB', (8, 8)), str(cache))
    seen['root'] = cache.parent
    seen['modes'] = [stat.S_IMODE(os.stat(p).st_mode) for p in
                     (cache.parent, cache, Path(result).parent, result)]
    aborted = cache / 'tmpcutoff'  # What a cut-off upload leaves behind.
    aborted.write_bytes(b'part of an upload')
    seen['stray'] = Path(tempfile.mkstemp()[1])  # Any other temporary file of the server.
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # The handler interrupts this.

  monkeypatch.setattr(Inpainter, 'load', staticmethod(lambda path, **_: inpainter))
  monkeypatch.setattr(demo.gr.Blocks, 'launch', lambda app, **kwargs: None)
  monkeypatch.setattr(demo.gr.Blocks, 'block_thread', block_thread)
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    assert demo.main(['--port', '8']) == 0
  assert seen['modes'] == [0o700, 0o700, 0o700, 0o600]
  assert seen['root'].name.startswith('define_jax_demo_') and seen['root'].parent == Path(
      tempfile.gettempdir())
  assert not seen['root'].exists() and not seen['stray'].exists()
  assert 'GRADIO_TEMP_DIR' not in os.environ and os.umask(umask) == umask  # Restored.


def test_demo_deletes_files_keep_files_s_after_they_were_written(tmp_path):
  examples = tmp_path / 'examples'
  examples.mkdir()
  old = time.time() - 100
  files = {name: tmp_path / name for name in
           ('gradio/hash1/tmpcutoff', 'gradio/hash2/result.webp', 'gradio/fresh/upload.png',
            'examples/astronaut.png', 'gradio/kept/example_copy.png')}
  for name, path in files.items():
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'x')
    if 'fresh' not in name:
      os.utime(path, (old, old))
  for folder in ('gradio/hash1', 'gradio/hash2', 'gradio/kept'):
    os.utime(tmp_path / folder, (old, old))
  kept = {str(files['gradio/kept/example_copy.png'])}
  demo.delete_old_files(tmp_path, 60, lambda path: path in kept or 'examples' in path)
  assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*') if p.is_file()) == [
      'examples/astronaut.png', 'gradio/fresh/upload.png', 'gradio/kept/example_copy.png']
  assert not (tmp_path / 'gradio' / 'hash1').exists()  # Empty old folders go too.


def test_a_cut_off_upload_leaves_no_temporary_file(tmp_path):
  demo.remove_cut_off_uploads()
  headers = Headers({'content-type': 'multipart/form-data; boundary=xyz'})

  async def stream():
    yield (b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
           b'Content-Type: image/png\r\n\r\n' + bytes(100_000))
    raise ClientDisconnect()

  parser = route_utils.GradioMultiPartParser(headers, stream(), upload_dir=str(tmp_path),
                                             max_file_size=math.inf)
  with pytest.raises(ClientDisconnect):
    asyncio.run(parser.parse())
  assert not list(tmp_path.iterdir())


# --- Case 10: flat regions come back flat ----------------------------------------------

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


def test_known_contrast_is_zero_on_flat_known_pixels_and_infinite_without_any():
  flat = np.full((2, 64, 64, 3), 0.5, np.float32)
  known = np.ones((2, 64, 64, 1), np.float32)
  known[0, 20:40, 20:40] = 0.0
  known[1] = 0.0  # No known pixel: nothing says the photo is flat.
  contrast = np.asarray(prefill.known_contrast(flat, known, 16))
  assert np.all(contrast[0] < 1e-6) and np.all(np.isinf(contrast[1]))
  noisy = flat + np.random.default_rng(0).normal(0, 0.05, flat.shape).astype(np.float32)
  contrast = np.asarray(prefill.known_contrast(noisy, known, 16))[0]
  np.testing.assert_allclose(contrast[known[0] == 0], 0.05, rtol=0.15)
