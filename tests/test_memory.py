"""Issue 24, case 14: a measured memory model and a photo limit per fit under a bound
(--max_memory_gb), checked from the header before decoding, in the CLIs, the API and the
demo. No test allocates a large photo: big sizes exist only as headers."""

import contextlib
import dataclasses
import json
import io
import tracemalloc
from unittest import mock

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from define_jax import evaluate
from define_jax.demo import demo
from define_jax.files.image_files import InputError
from define_jax.inference import FITS, Inpainter
from define_jax.inference import memory

from conftest import cli_args, decoding_forbidden, png_header_only, run_cli


def bound_at(inpainter: Inpainter, path: str, side: int, less_bytes: float = 0.0) -> float:
  """The bound (GB) that `path`'s estimate for a side×side photo less `less_bytes` meets."""
  peak = memory.peak_bytes(path, side, side, network=inpainter.memory_network)
  return (peak - less_bytes) / memory.GB


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
  bound = bound_at(inpainter, fit, 256, less_bytes=1000)
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
                                   bound_at(inpainter, fit, 256, less_bytes=-1000)), inpainter)
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
    estimates = [memory.peak_bytes(path, side, side) for side in (1, 200, 1000, 3000, 10**4)]
    assert estimates == sorted(estimates) and len(set(estimates)) == len(estimates)
    limits = [memory.max_pixels(path, gb) for gb in (1, 2, 4, 8, 16)]
    assert limits == sorted(limits) and limits[-1] > limits[0]
    for gb in (2, 4, 8):  # The limit is the largest square whose estimate fits the bound.
      side = memory.max_side(path, gb)
      assert memory.peak_bytes(path, side, side) <= gb * memory.GB < memory.peak_bytes(
          path, side + 1, side + 1)
  # 'resize' runs the network on the model's canvas only, so it takes larger photos; 'auto'
  # does a 'pad' pass and more, the demo 'auto' and more.
  limit = {path: memory.max_pixels(path, 4) for path in memory.COSTS}
  assert limit['decode'] > limit['resize'] > limit['pad'] >= limit['auto'] >= limit['demo']
  # A wider network costs more per canvas pixel, and a larger canvas costs more.
  wide = dataclasses.replace(memory.PACKAGED, base_features=64)
  large = memory.Network(size=512, multiple=512)
  assert memory.max_pixels('pad', 4, wide) < limit['pad']
  assert memory.max_pixels('resize', 4, wide) < limit['resize']
  assert memory.max_pixels('resize', 4, large) < memory.max_pixels('resize', 4, wide)


# --- Issue 35, case 1: every canvas a photo needs is counted -------------------------------

@pytest.mark.parametrize('path', ['resize', 'pad', 'auto', 'demo'])
def test_the_estimate_is_the_model_s_formula_over_the_canvases_a_photo_needs(path):
  cost, size = memory.COSTS[path], memory.PACKAGED.size
  for height, width in ((1, 150_000), (300, 200), (2900, 2900)):
    canvas = {'resize': size * size,
              'pad': max(size, -(-height // 128) * 128) * max(size, -(-width // 128) * 128)}
    canvas['auto'] = canvas['demo'] = canvas['pad'] + memory.FACE_BATCH * size * size
    expected = (cost.baseline_gb * memory.GB + cost.bytes_per_pixel * height * width
                + cost.network_bytes_per_pixel * canvas[path])
    assert memory.peak_bytes(path, height, width) == pytest.approx(expected)
    assert memory.peak_bytes(path, height, width, count=3) == pytest.approx(
        expected + 2 * (expected - cost.baseline_gb * memory.GB))


def test_a_thin_strip_is_refused_for_its_padded_canvas_from_the_header(inpainter, tmp_path):
  # 1×150,000 photo pixels, but a 256×150,016 canvas (the packaged model's side at least):
  # over 4 GB with 'pad' and 'auto'.
  assert memory.PACKAGED.size == 256 and memory.peak_bytes('auto', 1, 150_000) > 9 * memory.GB
  strip = tmp_path / 'strip.png'
  strip.write_bytes(png_header_only(150_000, 1))
  with decoding_forbidden(), pytest.raises(InputError) as refused:
    memory.check_input('auto', str(strip), 'strip.png', 4.0)
  peak = memory.peak_bytes('auto', 1, 150_000) / memory.GB
  assert str(refused.value).startswith(
      'strip.png is 150000×1 (150,000 pixels), padded to a 150016×256 network canvas (38.4 '
      f"megapixels): inpainting it with fit='auto' would peak at about {peak:.3g} GB, over the "
      'bound of 4 GB')
  # The tiny test model pads to its own canvas: the CLI refuses the strip before decoding.
  assert inpainter.memory_network.size == inpainter.image_size
  _, mask = write_pair(tmp_path, 16)
  bound = bound_at(inpainter, 'pad', 40) + 1e-6
  tall = tmp_path / 'tall.png'
  tall.write_bytes(png_header_only(1, 40 * 40))  # Fewer pixels than 40², a far larger canvas.
  with decoding_forbidden():
    status, err = run_cli(cli_args(tall, mask, tmp_path / 'out.png', '--fit', 'pad',
                                   '--max_memory_gb', bound), inpainter)
  assert status == 2 and 'tall.png is 1×1600 (1,600 pixels), padded to a' in err, err


def test_many_faces_cost_no_more_memory_than_one(monkeypatch):
  """auto_fill's peak of NumPy allocations with 64 faces on holes is that of one face plus
  a little (before: a weight plane of the whole photo per face, 64 planes)."""
  from test_align import SPREAD, TEMPLATE, face_at, native_fill
  from define_jax.inference import auto_fit

  height = width = 256
  image = np.random.default_rng(0).random((height, width, 3)).astype(np.float32)
  known = np.ones((height, width, 1), np.float32)
  grid = [(x, y) for y in range(16, 256, 32) for x in range(16, 256, 32)]
  for x, y in grid:
    known[y:y + 8, x - 6:x + 6] = 0.0
  calls = []

  def canvas_fills(images, known):
    calls.append(len(images))
    return np.where(known > 0, images, 0.5).astype(np.float32)

  def peak(found):
    tracemalloc.start()
    try:
      auto_fit.auto_fill(image, known, lambda _: found, TEMPLATE, SPREAD, 32, canvas_fills,
                         native_fill)
      return tracemalloc.get_traced_memory()[1]
    finally:
      tracemalloc.stop()

  peak([face_at(*grid[0], 10)])  # The first call also allocates what is made once.
  one = peak([face_at(*grid[0], 10)])
  calls.clear()
  many = peak([face_at(x, y, 10) for x, y in grid])
  assert calls == [memory.FACE_BATCH] * (64 // memory.FACE_BATCH)  # Batch by batch.
  plane = height * width * 4
  assert many - one < plane, (one / plane, many / plane)


# --- Issue 35, case 11: a batch is split into parts that fit ------------------------------

def test_a_batch_over_the_bound_is_inpainted_in_parts_and_only_a_lone_photo_refused(
    inpainter, tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (10, 48, 40, 3), dtype=np.uint8)
  holes = np.zeros((10, 48, 40), bool)
  holes[:, 10:30, 8:30] = True
  holes[3] = False
  holes[3, :4] = True
  network = inpainter.memory_network
  one = memory.peak_bytes('pad', 48, 40, 1, network)
  per_photo = one - memory.COSTS['pad'].baseline_gb * memory.GB
  kept = 10 * 48 * 40 * memory.RESULT_BYTES_PER_PIXEL
  bound = (one + 2 * per_photo + kept + 1) / memory.GB  # Three photos at once.
  with pytest.raises(InputError, match='10 photos of 40×48'):
    memory.check('pad', 40, 48, 'The image', bound, count=10, network=network)
  parts = []
  inpaint = inpainter._inpaint  # pylint: disable=protected-access
  with mock.patch.object(inpainter, '_inpaint',
                         side_effect=lambda i, m, **kw: parts.append(len(i)) or inpaint(i, m, **kw)):
    whole = inpainter(images, holes, polarity='hole_white', fit='pad', max_memory_gb=bound)
    files = []
    for k, image in enumerate(images):
      files.append(tmp_path / f'{k}.png')
      Image.fromarray(image).save(files[-1])
    listed = inpainter(files, list(holes), polarity='hole_white', fit='pad',
                       max_memory_gb=bound)
    assert parts == [3, 3, 3, 1] * 2
    Image.fromarray(images[7][:40]).save(files[7])  # A misfit is named before any part runs.
    with pytest.raises(InputError, match=r'image 0 is \(48, 40\), image 7 is \(40, 40\)'):
      inpainter(files, list(holes), polarity='hole_white', fit='pad', max_memory_gb=bound)
    assert len(parts) == 8
  one_by_one = np.stack([inpainter(image, hole, polarity='hole_white', fit='pad')
                         for image, hole in zip(images, holes)])
  np.testing.assert_array_equal(whole, one_by_one)
  np.testing.assert_array_equal(listed, one_by_one)
  with pytest.raises(InputError, match=r'image 3 of the batch\) marks every pixel'):
    holes[3] = True
    inpainter(images, holes, polarity='hole_white', fit='pad', max_memory_gb=bound)
  with pytest.raises(InputError, match='The image is 40×48 .* would peak at about'):
    inpainter(images, holes, polarity='hole_white', fit='pad', max_memory_gb=one / memory.GB / 2)


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
  too_small = bound_at(inpainter, 'demo', 256, less_bytes=1000)
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


def test_train_memory_tool_tables_the_largest_batch_per_card(capsys):
  from define_jax.benchmark import benchmark

  benchmark.main(['memory', '--train', '--config', 'configs/tiny.py',
                  '--config.optim.batch_size=3'])
  out = capsys.readouterr().out
  row = json.loads(out.splitlines()[-1])
  assert row['benchmark'] == 'memory_train' and set(row['peak_gb']) == {'1', '3'}
  fixed, per_image = row['fixed_gb'], row['per_image_gb']
  assert fixed > 0 and per_image > 0
  for card, cell in row['cards_gb'].items():
    budget = int(card) * memory.JAX_MEMORY_FRACTION
    largest = cell['largest_batch']
    # The JSON's figures are rounded: within 0.1 %.
    assert fixed + largest * per_image <= budget * 1.001
    assert fixed + (largest + 1) * per_image > budget * 0.999
    assert f'| {card} GB | {budget:.1f} GB | {largest} |' in out
  with pytest.raises(SystemExit, match='for --train'):
    benchmark.main(['memory', '--config', 'configs/tiny.py'])
