"""Issue 24, case 14: a measured memory model and a photo limit per fit under a bound
(--max_memory_gb), checked from the header before decoding, in the CLIs, the API and the
demo. No test allocates a large photo: big sizes exist only as headers."""

import contextlib
import io

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from define_jax import evaluate
from define_jax.demo import demo
from define_jax.files.image_files import InputError
from define_jax.inference import FITS, Inpainter
from define_jax.inference import memory

from conftest import png_header_only
from test_hostile_input import cli_args, decoding_forbidden, run_cli


@pytest.fixture(scope='module')
def inpainter(tiny_checkpoint) -> Inpainter:
  return Inpainter.from_checkpoint(tiny_checkpoint)


def bound_at(path: str, pixels: int) -> float:
  """The bound (GB) that `path`'s estimate for `pixels` pixels just meets."""
  return memory.peak_bytes(path, pixels) / memory.GB


def write_pair(directory, side=256):
  photo, mask = directory / 'photo.png', directory / 'mask.png'
  Image.fromarray(np.full((side, side, 3), 120, np.uint8)).save(photo)
  holes = np.zeros((side, side), np.uint8)
  holes[side // 4:side // 2, side // 4:side // 2] = 255
  Image.fromarray(holes).save(mask)
  return photo, mask


@pytest.mark.parametrize('fit', FITS)
def test_photo_over_the_bound_is_refused_before_decoding_and_the_flag_raises_it(
    inpainter, tmp_path, fit):
  photo, mask = write_pair(tmp_path)
  out = tmp_path / 'out.png'
  bound = bound_at(fit, 256 * 256 - 100)
  with decoding_forbidden():
    status, err = run_cli(cli_args(photo, mask, out, '--fit', fit, '--max_memory_gb', bound),
                          inpainter)
  assert status == 2 and not out.exists()
  message = err.strip()
  assert '\n' not in message and message.startswith(f'error: {photo} is 256×256 (65,536 pixels)')
  assert f"with fit='{fit}' would peak at about" in message
  assert f'over the bound of {bound:g} GB' in message and '--max_memory_gb' in message
  with pytest.raises(InputError, match='would peak at about'):  # The API: arrays too.
    inpainter(np.zeros((256, 256, 3), np.uint8), np.zeros((256, 256), bool),
              polarity='hole_white', fit=fit, max_memory_gb=bound)
  if fit == 'resize':  # The cheapest to run: a raised bound lets the photo through.
    status, err = run_cli(cli_args(photo, mask, out, '--fit', fit, '--max_memory_gb',
                                   bound_at(fit, 256 * 256 + 100)), inpainter)
    assert status == 0 and out.exists(), err


def test_the_7000_pixel_square_bomb_is_refused_by_the_default_bound_for_every_fit(
    inpainter, tmp_path):
  bomb = tmp_path / 'bomb.png'
  bomb.write_bytes(png_header_only(7000, 7000))  # 49 MP: under the 50 MP --max_pixels.
  _, mask = write_pair(tmp_path, 16)
  for fit in FITS:
    with decoding_forbidden():
      status, err = run_cli(cli_args(bomb, mask, tmp_path / 'out.png', '--fit', fit), inpainter)
    assert status == 2 and 'bomb.png is 7000×7000 (49 megapixels)' in err, err
    assert f'over the bound of {memory.DEFAULT_MAX_MEMORY_GB:g} GB' in err
  assert not (tmp_path / 'out.png').exists()


def test_estimates_grow_with_pixels_and_limits_with_the_bound():
  for path in memory.COSTS:
    estimates = [memory.peak_bytes(path, pixels) for pixels in (0, 1, 10**6, 10**7, 10**8)]
    assert estimates == sorted(estimates) and len(set(estimates)) == len(estimates)
    limits = [memory.max_pixels(path, gb) for gb in (1, 2, 4, 8, 16)]
    assert limits == sorted(limits) and limits[-1] > limits[0]
    for gb in (2, 4, 8):  # The limit is the largest size whose estimate fits the bound.
      limit = memory.max_pixels(path, gb)
      assert memory.peak_bytes(path, limit) <= gb * memory.GB < memory.peak_bytes(path,
                                                                                  limit + 1)
  # 'resize' runs the network on the model's canvas only, so it takes larger photos; 'auto'
  # does a 'pad' pass and more, the demo 'auto' and more.
  limit = {path: memory.max_pixels(path, 4) for path in memory.COSTS}
  assert limit['decode'] > limit['resize'] > limit['pad'] >= limit['auto'] >= limit['demo']
  # A wider network costs more per pixel where it runs at the photo's resolution.
  assert memory.max_pixels('pad', 4, base_features=64) < limit['pad']
  assert memory.max_pixels('resize', 4, base_features=64) == limit['resize']


def test_evaluate_image_size_over_the_bound_is_refused_before_anything_is_written(
    tiny_checkpoint, tmp_path):
  out = tmp_path / 'report'
  stderr = io.StringIO()
  with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
    status = evaluate.main(['--checkpoint', tiny_checkpoint, '--image_size', '4096', '--fit',
                            'pad', '--batch_size', '8', '--out', str(out)])
  assert status == 2 and not out.exists()
  assert ("--image_size 4096 is 8 photos of 4096×4096 (134.2 megapixels): inpainting it "
          "with fit='pad' would peak") in stderr.getvalue()


def test_demo_shows_the_memory_error_in_the_page(inpainter):
  too_small = bound_at('demo', 256 * 256 - 100)
  page = demo.Demo(inpainter, max_memory_gb=too_small)
  editor = demo.hole_editor(None, page.check_memory)
  upload = io.BytesIO()
  Image.fromarray(np.zeros((256, 256, 3), np.uint8)).save(upload, format='PNG')
  with decoding_forbidden(), pytest.raises(gr.Error, match=r'The photo is 256×256 .* in the '
                                           r'demo would peak at about .*--max_memory_gb'):
    editor.convert_and_format_image(upload.getvalue())
  holes = np.zeros((256, 256, 4), np.uint8)
  holes[60:90, 60:90] = 255
  value = {'background': Image.new('RGB', (256, 256)), 'layers': [Image.fromarray(holes)]}
  with pytest.raises(gr.Error, match='--max_memory_gb'):
    page.inpaint(value)


def test_measurement_counts_the_child_s_own_memory_and_fits_its_line(tmp_path):
  from define_jax.benchmark import memory_measurement

  ballast = np.ones(300 * 2**20 // 8)  # The parent's 300 MB must not count for the child.
  photo, mask = memory_measurement.write_photo(tmp_path, 64)
  peak = memory_measurement.peak_rss_bytes(
      memory_measurement.command('decode', photo, mask, tmp_path / 'out.png'))
  assert 10e6 < peak < 200e6 and ballast.size
  peaks = {'pad': {side: int(0.6e9 + 300 * side * side) for side in (512, 1024, 2048)}}
  table, model = memory_measurement.report(peaks)
  assert model == {'pad': {'baseline_gb': 0.6, 'bytes_per_pixel': 300.0}}
  assert '| pad | 0.68 | 0.91 | 1.86 | 0.60 | 300 |' in table
