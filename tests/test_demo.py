"""Browser demo: end to end in headless Chromium, its HTTP API on bad input, start-up errors.

The end-to-end test starts `python -m define_jax.demo` on the tiny checkpoint that
test_inference trains, uploads a face photo in Debian's Chromium (driven by Playwright),
paints a stroke, presses Inpaint and checks the composite pixel by pixel: changed inside
the stroke, identical outside. It saves a screenshot under the test's tmp_path. It skips
only when /usr/bin/chromium is absent (.ci/run installs it).
"""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib

import numpy as np
import pytest
import skimage.data
from PIL import Image

from define_jax import demo

from conftest import REPO_ROOT

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run',
                 '--disable-quic']
START_TIMEOUT_S = 120


def demo_env() -> dict[str, str]:
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)  # conftest's 4 simulated devices: the demo runs as users run it.
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONUNBUFFERED'] = '1'
  return env


class DemoProcess:
  """`python -m define_jax.demo` on a free port; stop() ends it."""

  def __init__(self, args: list[str], log_path):
    self.log_path = log_path
    self._log = open(log_path, 'w', encoding='utf-8')
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'define_jax.demo', '--port', '0', *args], cwd=REPO_ROOT,
        env=demo_env(), stdout=subprocess.PIPE, stderr=self._log, text=True)
    self._lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=self._read_stdout, daemon=True).start()

  def _read_stdout(self) -> None:
    for line in self.process.stdout:
      self._lines.put(line)
    self._lines.put(None)

  def log(self) -> str:
    self._log.flush()
    with open(self.log_path, encoding='utf-8') as f:
      return f.read()

  def wait_for_url(self) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
      try:
        line = self._lines.get(timeout=1.0)
      except queue.Empty:
        continue
      if line is None:
        break
      if 'running at http://' in line:
        return line.split('running at ', 1)[1].split()[0]
    self.stop()
    raise AssertionError(f'The demo did not start:\n{self.log()[-3000:]}')

  def stop(self) -> None:
    if self.process.poll() is None:
      self.process.terminate()
      try:
        self.process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait(timeout=10)
    self._log.close()


@pytest.fixture(scope='session')
def demo_server(tiny_checkpoint, tmp_path_factory):  # pylint: disable=redefined-outer-name
  """(base URL, DemoProcess) of a demo serving the tiny checkpoint."""
  log_path = tmp_path_factory.mktemp('demo') / 'server.log'
  server = DemoProcess(['--checkpoint', tiny_checkpoint], log_path)
  try:
    yield server.wait_for_url(), server
  finally:
    server.stop()


def http(url: str, body: bytes | None = None, content_type: str = 'application/json'
         ) -> tuple[int, bytes]:
  request = urllib.request.Request(url, data=body, method='POST' if body is not None else 'GET',
                                   headers={'Content-Type': content_type})
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return response.status, response.read()
  except urllib.error.HTTPError as error:
    return error.code, error.read()


def png_data_url(pixels: np.ndarray) -> str:
  return demo.data_url(pixels)


def decode_data_url(url: str) -> np.ndarray:
  assert url.startswith('data:image/png;base64,'), url[:40]
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(',', 1)[1]))).convert('RGB'))


def face_photo() -> np.ndarray:
  """A non-square face crop of scikit-image's astronaut, 300×260."""
  return np.ascontiguousarray(skimage.data.astronaut()[0:260, 80:380])


def distance_to_segment(height, width, start, end) -> np.ndarray:
  """Distance of every pixel centre to the segment start–end (x, y), in pixels."""
  y, x = np.mgrid[0:height, 0:width] + 0.5
  (x0, y0), (x1, y1) = start, end
  dx, dy = x1 - x0, y1 - y0
  t = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
  return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


# --- End to end ------------------------------------------------------------------------


def test_browser_upload_stroke_inpaint(demo_server, tmp_path):  # pylint: disable=redefined-outer-name
  if not os.path.exists(CHROMIUM):
    pytest.skip(f'{CHROMIUM} is absent (apt-get install chromium; .ci/run does it as root)')
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top

  url, server = demo_server
  photo = face_photo()
  photo_path = tmp_path / 'face.png'
  Image.fromarray(photo).save(photo_path)
  height, width = photo.shape[:2]

  with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
      page = browser.new_page(viewport={'width': 1360, 'height': 900})
      requests, errors = [], []
      page.on('request', lambda r: requests.append(r.url))
      page.on('pageerror', lambda e: errors.append(str(e)))
      page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
      page.goto(url)
      page.wait_for_selector('body[data-ready="true"]', timeout=30_000)
      assert 'pconv_unet' in page.inner_text('#model-info')

      page.set_input_files('#file', str(photo_path))
      page.wait_for_selector('#stage:not(.empty)', timeout=30_000)
      assert page.locator('#inpaint').is_enabled()

      # One horizontal stroke across the face, in screen pixels.
      box = page.locator('#mask').bounding_box()
      brush = float(page.input_value('#brush-size'))
      scale = width / box['width']  # Photo pixels per screen pixel.
      y = box['y'] + 0.45 * box['height']
      x0, x1 = box['x'] + 0.3 * box['width'], box['x'] + 0.7 * box['width']
      page.mouse.move(x0, y)
      page.mouse.down()
      page.mouse.move(x1, y, steps=12)
      page.mouse.up()

      page.click('#inpaint')
      page.wait_for_selector('body[data-passes="1"][data-busy="false"]', timeout=60_000)
      assert not page.locator('#notice.error').is_visible(), page.inner_text('#notice')
      first = decode_data_url(page.get_attribute('#composite', 'src'))
      telea = decode_data_url(page.get_attribute('#telea', 'src'))
      masked = decode_data_url(page.get_attribute('#masked', 'src'))
      with page.expect_download() as download:
        page.click('#download')
      assert download.value.suggested_filename == 'face_inpainted.png'
      downloaded = np.asarray(Image.open(download.value.path()).convert('RGB'))
      timings = page.evaluate('() => window.demo.state.lastTimings')
      page.screenshot(path=str(tmp_path / 'demo_inpainted.png'), full_page=True)

      page.click('#again')
      page.wait_for_selector('body[data-passes="2"][data-busy="false"]', timeout=60_000)
      second = decode_data_url(page.get_attribute('#composite', 'src'))
      assert '(pass 2)' in page.inner_text('#pass-label')
      page.screenshot(path=str(tmp_path / 'demo_second_pass.png'), full_page=True)
    finally:
      browser.close()

  assert (tmp_path / 'demo_inpainted.png').stat().st_size > 10_000
  assert not errors, errors
  # Offline: the page fetched nothing but its own server and data URLs.
  assert all(r.startswith(url) or r.startswith('data:') for r in requests), requests

  radius = brush * scale / 2
  distance = distance_to_segment(height, width, ((x0 - box['x']) * scale, (y - box['y']) * scale),
                                 ((x1 - box['x']) * scale, (y - box['y']) * scale))
  inside, outside = distance < radius - 2, distance > radius + 2
  assert inside.sum() > 500 and outside.sum() > 0.8 * photo.shape[0] * photo.shape[1]
  for result in (first, second, telea, masked):
    assert result.shape == photo.shape
    np.testing.assert_array_equal(result[outside], photo[outside])
  for result in (first, second, telea):
    changed = np.any(result[inside] != photo[inside], axis=-1)
    assert changed.mean() > 0.9, changed.mean()
  assert np.all(masked[inside] == 255)
  np.testing.assert_array_equal(downloaded, first)
  assert np.any(second[inside] != first[inside])  # The second pass refined the fill.
  assert timings['browser_s'] > timings['total_s'] > 0
  print(f'click to result: {timings}')
  assert 'Traceback' not in server.log()


# --- HTTP API on bad input ---------------------------------------------------------------


def inpaint_request(url, photo, holes, mode='first') -> tuple[int, dict]:
  mask = np.where(holes, 255, 0).astype(np.uint8)
  body = json.dumps({'image': png_data_url(photo), 'mask': png_data_url(mask), 'mode': mode})
  status, payload = http(url + 'api/inpaint', body.encode())
  return status, json.loads(payload)


def png_header_only(width: int, height: int) -> bytes:
  """A PNG that declares width×height but holds no pixel data (a decompression bomb's size)."""

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', b'') + chunk(b'IEND', b'')


def test_api_answers_bad_input_with_messages(demo_server):  # pylint: disable=redefined-outer-name
  url, server = demo_server
  photo = face_photo()[:96, :128]

  status, payload = http(url + 'api/image', b'this is not an image', 'application/octet-stream')
  assert status == 400 and 'not an image' in json.loads(payload)['error']

  status, payload = http(url + 'api/image', png_header_only(12_000, 10_000))
  assert status == 413 and '100 megapixels' in json.loads(payload)['error']

  # Over 20 megapixels: downscaled to --max_side (1024) with a note.
  buffer = io.BytesIO()
  Image.new('RGB', (6000, 4000), (90, 120, 200)).save(buffer, format='JPEG', quality=80)
  status, payload = http(url + 'api/image', buffer.getvalue(), 'image/jpeg')
  upload = json.loads(payload)
  assert status == 200 and (upload['width'], upload['height']) == (1024, 683)
  assert 'downscaled' in upload['notes'][0] and '24.0 megapixels' in upload['notes'][0]

  # An empty mask returns the photo unchanged, with a note.
  status, result = inpaint_request(url, photo, np.zeros(photo.shape[:2], bool))
  assert status == 200 and result['output'] is None and 'empty' in result['notes'][0]
  np.testing.assert_array_equal(decode_data_url(result['composite']), photo)

  status, result = inpaint_request(url, photo, np.zeros((10, 10), bool))
  assert status == 400 and 'The mask is 10×10 but the photo is 128×96' in result['error']

  status, result = inpaint_request(url, photo, np.ones(photo.shape[:2], bool))
  assert status == 400 and 'whole photo is masked' in result['error']

  status, payload = http(url + 'api/inpaint', b'{"image": ')
  assert status == 400 and 'JSON' in json.loads(payload)['error']
  status, payload = http(url + 'api/inpaint', json.dumps({'image': 'data:image/png;base64,!!'}).encode())
  assert status == 400 and 'base64' in json.loads(payload)['error']

  status, _ = http(url + 'static/..%2Fdemo.py')
  assert status == 404
  status, page = http(url)
  assert status == 200 and b'<canvas id="mask"' in page
  assert 'Traceback' not in server.log()


def test_internal_errors_are_logged_not_sent(caplog):
  """An unexpected exception answers 500 with its type only; the traceback goes to the log."""

  class BrokenModel:
    def describe(self):
      return {}

    def inpaint(self, *args, **kwargs):
      raise RuntimeError('secret internal detail')

  server = demo.DemoServer(('127.0.0.1', 0), demo.DemoApp(BrokenModel()))
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    photo = face_photo()[:64, :64]
    holes = np.zeros((64, 64), bool)
    holes[10:20, 10:20] = True
    status, result = inpaint_request(server.url, photo, holes)
  finally:
    server.shutdown()
    server.server_close()
  assert status == 500 and result['error'].startswith('Internal error (RuntimeError)')
  assert 'secret' not in json.dumps(result) and 'Traceback' not in json.dumps(result)
  assert 'secret internal detail' in caplog.text


def test_hole_content_never_reaches_the_network_canvas():
  rng = np.random.default_rng(0)
  image = rng.uniform(size=(90, 130, 3)).astype(np.float32)
  known = np.ones((90, 130), np.float32)
  known[20:50, 30:90] = 0.0
  black, white = image.copy(), image.copy()
  black[known == 0], white[known == 0] = 0.0, 1.0
  for size in (64, 256):  # Shrinking and enlarging.
    a, b = demo.to_canvas(black, known, size), demo.to_canvas(white, known, size)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.known, b.known)
    assert a.image.shape == (size, size, 3) and a.width == size and a.height < size
    assert a.known[:a.top].sum() == 0  # The letterbox margin is hole.


# --- Start-up errors ---------------------------------------------------------------------


def test_missing_or_wrong_checkpoint_is_a_clear_message(tiny_checkpoint, tmp_path, capsys,  # pylint: disable=redefined-outer-name
                                                        monkeypatch):
  monkeypatch.setattr(demo, 'configure_logging', lambda verbose: None)  # Leave pytest's alone.
  import jax  # pylint: disable=g-import-not-at-top
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from define_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from define_jax import steps  # pylint: disable=g-import-not-at-top

  empty = tmp_path / 'empty_run'
  empty.mkdir()
  (empty / 'notes.txt').write_text('')
  assert demo.main(['--checkpoint', str(empty), '--port', '0']) == 1
  error = capsys.readouterr().err
  assert 'error: cannot start the demo: No checkpoint found' in error and 'notes.txt' in error

  wrong = tmp_path / 'wrong_run'
  claimed = tiny.get_config()
  claimed.base_features = 16  # The weights are the tiny config's 8.
  manager = checkpoints.create_manager(str(wrong))
  variables, _, _ = checkpoints.load_model(tiny_checkpoint)
  state = steps.create_train_state(tiny.get_config(), jax.random.key(0), variables=variables)
  checkpoints.save(manager, state, claimed.to_dict())
  manager.wait_until_finished()
  assert demo.main(['--checkpoint', str(wrong), '--port', '0']) == 1
  captured = capsys.readouterr()
  assert 'written with another config' in captured.err and 'running at' not in captured.out


def test_uploads_are_normalised_to_upright_rgb():
  def encode(image: Image.Image, fmt: str = 'PNG', **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()

  grey16 = Image.fromarray(np.full((40, 50), 65535, np.uint16))
  pixels, notes = demo.load_photo(encode(grey16), 1024)
  assert pixels.shape == (40, 50, 3) and pixels.dtype == np.uint8 and np.all(pixels == 255)
  assert notes == []

  transparent = Image.new('RGBA', (40, 30), (0, 0, 0, 0))
  pixels, _ = demo.load_photo(encode(transparent), 1024)
  assert np.all(pixels == 255)  # Flattened on white, not black.

  exif = Image.Exif()
  exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display.
  rotated, _ = demo.load_photo(encode(Image.new('RGB', (60, 40)), 'JPEG', exif=exif), 1024)
  assert rotated.shape == (60, 40, 3)

  big, notes = demo.load_photo(encode(Image.new('RGB', (3000, 1000)), 'JPEG'), 1024)
  assert big.shape == (341, 1024, 3) and 'downscaled to 1024×341' in notes[0]

  for data, message in ((b'', 'empty'), (encode(Image.new('RGB', (8, 100))), 'too small'),
                        (encode(Image.new('RGB', (64, 64)))[:60], 'damaged or truncated')):
    with pytest.raises(demo.BadInput, match=message):
      demo.load_photo(data, 1024)
