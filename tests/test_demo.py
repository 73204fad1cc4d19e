"""Browser demo (Gradio): end to end in headless Chromium, many clients at once, hostile
requests, start-up errors.

The server tests start `python -m define_jax.demo` on the tiny checkpoint (conftest), with
its own Gradio cache folder. The browser test drives Debian's Chromium with Playwright,
blocks and counts every request that does not go to 127.0.0.1 (none may happen), uploads a
face photo, paints a stroke, presses Inpaint and checks the result pixel by pixel: changed
inside the stroke, identical outside. It skips only when /usr/bin/chromium is absent
(.ci/run installs it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import math
import os
import queue
import re
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from gradio import processing_utils
from gradio import route_utils
from PIL import Image
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect

from define_jax.demo import demo
from define_jax.demo import local_only
from define_jax.inference import Inpainter

from conftest import REPO_ROOT, png_header_only, sigterm_to_self_is_safe

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--no-first-run']
START_TIMEOUT_S = 180
MAX_UPLOAD_MB = 5
KEEP_FILES_S = 30  # Longer than the 20 parallel calls wait in the queue.
BRUSH_RADIUS = 12  # gr.Brush(default_size=12) in demo.build: a radius in photo pixels.


def demo_env(cache_dir) -> dict[str, str]:
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)  # conftest's 4 simulated devices: the demo runs as users run it.
  env.update(JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1', GRADIO_TEMP_DIR=str(cache_dir))
  env.pop('GRADIO_ANALYTICS_ENABLED', None)  # The demo must turn analytics off itself.
  return env


class DemoProcess:
  """`python -m define_jax.demo` on a free port; stop() ends it."""

  def __init__(self, args: list[str], directory):
    self.log_path = directory / 'server.log'
    self.cache_dir = directory / 'gradio_cache'
    self._log = open(self.log_path, 'w', encoding='utf-8')
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'define_jax.demo', '--port', '0', *args], cwd=REPO_ROOT,
        env=demo_env(self.cache_dir), stdout=subprocess.PIPE, stderr=self._log, text=True)
    self._lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=self._read_stdout, daemon=True).start()

  def _read_stdout(self) -> None:
    for line in self.process.stdout:
      self._lines.put(line)
    self._lines.put(None)

  def log(self) -> str:
    if not self._log.closed:
      self._log.flush()
    return self.log_path.read_text(encoding='utf-8')

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

  def peak_rss_mb(self) -> float:
    with open(f'/proc/{self.process.pid}/status', encoding='ascii') as status:
      return int(re.search(r'VmHWM:\s+(\d+) kB', status.read()).group(1)) / 1024

  def stop(self) -> None:
    if self.process.poll() is None:
      self.process.terminate()
      try:
        self.process.wait(timeout=20)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait(timeout=10)
    self._log.close()


@pytest.fixture(scope='session')
def demo_server(tiny_checkpoint, tmp_path_factory):
  """(base URL, DemoProcess) of a demo serving the tiny checkpoint."""
  server = DemoProcess(['--checkpoint', tiny_checkpoint, '--max_upload_mb', str(MAX_UPLOAD_MB),
                        '--keep_files_s', str(KEEP_FILES_S)], tmp_path_factory.mktemp('demo'))
  try:
    yield server.wait_for_url(), server
  finally:
    server.stop()


def face_photo() -> np.ndarray:
  """A face crop of scikit-image's astronaut, 256×256 like the example and the API calls,
  so that the server compiles the network for one photo size only (non-square sizes are
  tested in test_inference)."""
  return np.ascontiguousarray(skimage.data.astronaut()[0:256, 80:336])


def fetch_image(url: str) -> np.ndarray:
  with urllib.request.urlopen(url, timeout=30) as response:
    return np.asarray(Image.open(io.BytesIO(response.read())).convert('RGB'))


def server_errors(log: str) -> list[str]:
  """Tracebacks in the server log, less Starlette's ClientDisconnect (a browser that closed
  while an upload was still streaming: the client's doing, logged by Gradio)."""
  blocks = log.split('Traceback (most recent call last):')[1:]
  return [block for block in blocks if 'starlette.requests.ClientDisconnect' not in block]


def distance_to_segment(height, width, start, end) -> np.ndarray:
  """Distance of every pixel centre to the segment start–end (x, y), in pixels."""
  y, x = np.mgrid[0:height, 0:width] + 0.5
  (x0, y0), (x1, y1) = start, end
  dx, dy = x1 - x0, y1 - y0
  t = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
  return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


# --- End to end in Chromium ------------------------------------------------------------


def wait_for_status(page, text: str, directory, server, timeout_ms: int = 120_000) -> None:
  """Waits for the status line to contain `text`. An error message in the page instead, or a
  timeout, fails at once with the message (or the page's text), a screenshot
  (failed_<text>.png in `directory`) and the server's tracebacks."""
  from playwright.sync_api import TimeoutError as PlaywrightTimeout
  error_toast = '[data-testid="toast-body"].error'
  try:
    page.wait_for_selector(f'#status:has-text("{text}"), {error_toast}', timeout=timeout_ms)
    toasts = page.locator(error_toast)
    if not toasts.count():
      return
    shown = f'an error message: {toasts.first.inner_text()!r}'
  except PlaywrightTimeout:
    shown = f'the page shows:\n{page.inner_text("body")[-2000:]}'
  shot = directory / f'failed_{re.sub(r"[^a-z0-9]", "_", text.lower())}.png'
  page.screenshot(path=str(shot), full_page=True)
  raise AssertionError(f'No "{text}" in the status; {shown}\nscreenshot: {shot}\n'
                       f'server tracebacks: {server_errors(server.log())[-2:]}')


def _settled_editor(page, reads: int = 3, interval_ms: int = 250, timeout_s: float = 30.0):
  """(zoom, canvas bounding box) once the editor shows a photo and `reads` readings in a row,
  interval_ms apart, agree."""
  # The empty editor shows a zoom too (57 %) beside its "Upload an image" placeholder: on a
  # loaded machine a photo can take seconds to arrive, and a stroke painted before it lands
  # on the empty canvas (Inpaint then says to upload a photo first).
  page.wait_for_function(
      "() => { const text = document.querySelector('#editor').innerText;"
      " return /\\d+%/.test(text) && !text.includes('Upload an image'); }", timeout=60_000)
  deadline, history = time.monotonic() + timeout_s, []
  while True:
    zoom = int(re.search(r'(\d+)%', page.inner_text('#editor')).group(1)) / 100
    box = page.locator('#editor canvas').first.bounding_box()
    history = (history + [(zoom, tuple(sorted(box.items())))])[-reads:]
    if len(history) == reads and len(set(history)) == 1:
      return zoom, box
    if time.monotonic() > deadline:
      raise AssertionError(f'The editor never settled: {history}')
    page.wait_for_timeout(interval_ms)


def upload_and_paint(page, photo_path, shape, x_offsets, y_offset):
  """Uploads the photo into the editor and drags the brush along a horizontal line at
  y_offset, from x_offsets[0] to x_offsets[1] (fractions of the photo's size from its
  centre); returns the line's ends (x, y) in photo pixels."""
  height, width = shape[:2]
  page.set_input_files('#editor input[type=file]', str(photo_path))
  # The photo is shown centred in the canvas at the toolbar's zoom, once the editor's layout
  # settles: on a loaded machine it can still move after the zoom first shows (a stroke then
  # landed 55 px right of where it was aimed).
  zoom, box = _settled_editor(page)
  centre_x, centre_y = box['x'] + box['width'] / 2, box['y'] + box['height'] / 2
  y = centre_y + y_offset * height * zoom
  x0, x1 = (centre_x + offset * width * zoom for offset in x_offsets)
  page.mouse.move(x0, y)
  page.mouse.down()
  page.mouse.move(x1, y, steps=30)
  page.mouse.up()
  to_photo = lambda screen_x: ((screen_x - centre_x) / zoom + width / 2,
                               (y - centre_y) / zoom + height / 2)
  return to_photo(x0), to_photo(x1)


@contextlib.contextmanager
def offline_chromium():
  """(browser context, requests to anywhere but 127.0.0.1 (blocked), page errors)."""
  if not os.path.exists(CHROMIUM):
    pytest.skip(f'{CHROMIUM} is absent (apt-get install chromium; .ci/run does it as root)')
  from playwright.sync_api import sync_playwright
  outside_requests, errors = [], []

  def only_this_machine(route):
    request_url = route.request.url
    if request_url.startswith(('http://127.0.0.1:', 'data:', 'blob:')):
      route.continue_()
    else:
      outside_requests.append(request_url)
      route.abort()

  with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
      context = browser.new_context(viewport={'width': 1400, 'height': 1000},
                                    accept_downloads=True)
      context.route('**/*', only_this_machine)
      context.on('page', lambda page: page.on('pageerror', lambda e: errors.append(str(e))))
      yield context, outside_requests, errors
    finally:
      browser.close()


def saved(photo, path):
  Image.fromarray(photo).save(path)
  return path


def open_demo(context, url):
  page = context.new_page()
  page.goto(url)
  page.wait_for_selector('#inpaint', timeout=60_000)
  return page


def test_browser_upload_stroke_inpaint_offline(demo_server, tmp_path):
  url, server = demo_server
  photo = face_photo()
  photo_path, (height, width) = saved(photo, tmp_path / 'face.png'), photo.shape[:2]
  with offline_chromium() as (context, outside_requests, errors):
    page = open_demo(context, url)
    assert 'pconv_unet' in page.inner_text('body')

    stroke = upload_and_paint(page, photo_path, photo.shape, (-0.3, 0.25), 0.0)

    page.click('#inpaint')
    wait_for_status(page, 'Pass 1', tmp_path, server)
    first = fetch_image(page.get_attribute('#network img', 'src'))
    telea = fetch_image(page.get_attribute('#telea img', 'src'))
    with page.expect_download() as download:
      page.locator('#network a[download]').first.click()
    downloaded = np.asarray(Image.open(download.value.path()).convert('RGB'))
    page.screenshot(path=str(tmp_path / 'demo_inpainted.png'), full_page=True)

    page.click('#again')
    wait_for_status(page, 'Pass 2', tmp_path, server)
    second = fetch_image(page.get_attribute('#network img', 'src'))

    # On a fresh page: pick an example, paint, inpaint.
    page = open_demo(context, url)
    page.locator('img[src*="astronaut_face"]').first.click()
    _, box = _settled_editor(page)
    middle_x, middle_y = box['x'] + box['width'] / 2, box['y'] + box['height'] / 2
    page.mouse.move(middle_x - 40, middle_y)
    page.mouse.down()
    page.mouse.move(middle_x + 40, middle_y, steps=8)
    page.mouse.up()
    page.click('#inpaint')
    wait_for_status(page, '256×256', tmp_path, server)
    page.wait_for_timeout(1000)  # Let the page finish its uploads before closing.

  assert outside_requests == [], outside_requests  # Nothing outside 127.0.0.1, not even fonts.
  assert not errors, errors
  distance = distance_to_segment(height, width, *stroke)
  inside, outside = distance < BRUSH_RADIUS - 3, distance > BRUSH_RADIUS + 3
  assert inside.sum() > 1000 and outside.sum() > 0.8 * height * width
  changed = {}
  for name, result in (('first', first), ('second', second), ('telea', telea)):
    assert result.shape == photo.shape
    np.testing.assert_array_equal(result[outside], photo[outside])  # Nothing outside changed.
    changed[name] = np.any(result != photo, axis=-1)
  # The stroke was painted and filled. (A loaded machine may drop a few mouse events, so
  # not necessarily every pixel under the drag line.)
  assert changed['first'][inside].mean() > 0.3, changed['first'][inside].mean()
  # The network and Telea filled the same holes: the painted pixels.
  union = changed['first'] | changed['telea']
  assert (changed['first'] == changed['telea'])[union].mean() > 0.9
  np.testing.assert_array_equal(downloaded, first)
  assert np.any(second[inside] != first[inside])  # The second pass refined the fill.
  assert not server_errors(server.log())


def two_astronauts() -> np.ndarray:
  """Two faces side by side (scikit-image's public-domain astronaut, twice): 512×256."""
  face = face_photo()
  return np.concatenate([face, face[:, ::-1]], axis=1)


def test_browser_two_faces_only_the_painted_one_changes(demo_server, tmp_path):
  url, server = demo_server
  photo = two_astronauts()
  photo_path, (height, width) = saved(photo, tmp_path / 'two_faces.png'), photo.shape[:2]
  with offline_chromium() as (context, outside_requests, errors):
    page = open_demo(context, url)
    page.check('#show_faces input[type=checkbox]')
    # Across the left face's mouth (the face is centred at 1/4 of the width).
    stroke = upload_and_paint(page, photo_path, photo.shape, (-0.32, -0.18), 0.05)
    page.click('#inpaint')
    wait_for_status(page, 'Pass 1', tmp_path, server)
    status = page.inner_text('#status')
    result = fetch_image(page.get_attribute('#network img', 'src'))
    boxes = fetch_image(page.get_attribute('#faces img', 'src'))
    page.screenshot(path=str(tmp_path / 'demo_two_faces.png'), full_page=True)
  assert outside_requests == [] and not errors, (outside_requests, errors)
  assert '1 of 2 faces found inpainted' in status, status
  distance = distance_to_segment(height, width, *stroke)
  inside, outside = distance < BRUSH_RADIUS - 3, distance > BRUSH_RADIUS + 3
  assert inside.sum() > 500 and inside[:, width // 2:].sum() == 0
  np.testing.assert_array_equal(result[outside], photo[outside])  # The other face too.
  assert np.any(result != photo, axis=-1)[inside].mean() > 0.3
  # A green box on each face.
  green = (boxes[..., 1] == 255) & (boxes[..., 0] == 0) & (boxes[..., 2] == 0)
  assert green[:, :width // 2].sum() > 100 and green[:, width // 2:].sum() > 100
  assert not server_errors(server.log())


# --- Many clients at once ------------------------------------------------------------


def client_inputs(tmp_path, size=256, seed=0):
  """An editor value for gradio_client: a photo and one painted RGBA layer."""
  from gradio_client import handle_file

  rng = np.random.default_rng(seed)
  photo = skimage.data.astronaut()[:size, 100:100 + size].copy()
  photo[:8] = rng.integers(0, 256, (8, size, 3), dtype=np.uint8)  # Distinct uploads.
  holes = np.zeros((size, size), bool)
  holes[size // 3:size // 2, size // 4:3 * size // 4] = True
  layer = np.zeros((size, size, 4), np.uint8)
  layer[holes] = (255, 0, 255, 255)
  photo_path, layer_path = tmp_path / f'photo{seed}.png', tmp_path / f'layer{seed}.png'
  Image.fromarray(photo).save(photo_path)
  Image.fromarray(layer).save(layer_path)
  value = {'background': handle_file(str(photo_path)), 'layers': [handle_file(str(layer_path))],
           'composite': None, 'id': None}
  return value, photo, holes


def test_twenty_parallel_clients_all_succeed(demo_server, tmp_path):
  from gradio_client import Client

  url, server = demo_server
  client = Client(url, verbose=False, download_files=str(tmp_path / 'downloads'))
  inputs = [client_inputs(tmp_path, seed=i) for i in range(20)]

  def call(index):
    value, photo, holes = inputs[index]
    start = time.perf_counter()
    network, _, _, status = client.predict(value, api_name='/inpaint')
    latency = time.perf_counter() - start
    result = np.asarray(Image.open(network).convert('RGB'))
    np.testing.assert_array_equal(result[~holes], photo[~holes])
    assert np.any(result[holes] != photo[holes]) and 'Pass 1' in status
    return latency

  with concurrent.futures.ThreadPoolExecutor(20) as pool:
    latencies = list(pool.map(call, range(20)))
  print(f'20 parallel inpaint calls: {len(latencies)} succeeded, median latency '
        f'{statistics.median(latencies):.2f} s, max {max(latencies):.2f} s')
  assert len(latencies) == 20
  assert not server_errors(server.log())


# --- Hostile requests (the demo rows) ------------------------------------------


def http(url: str, body: bytes | None = None, headers: dict | None = None,
         method: str | None = None) -> tuple[int, bytes]:
  request = urllib.request.Request(url, data=body, headers=headers or {},
                                   method=method or ('POST' if body is not None else 'GET'))
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      return response.status, response.read()
  except urllib.error.HTTPError as error:
    return error.code, error.read()


def test_hostile_requests_get_clear_refusals(demo_server, tiny_checkpoint, tmp_path):
  from gradio_client import Client, handle_file
  from gradio_client.exceptions import AppError

  url, server = demo_server
  port = url.rstrip('/').rsplit(':', 1)[1]
  import json
  status, answer = http(url + 'gradio_api/upload',
                        b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
                        b'Content-Type: image/png\r\n\r\n' + png_header_only(8, 8) + b'\r\n--b--\r\n',
                        {'Content-Type': 'multipart/form-data; boundary=b'})
  uploaded = json.loads(answer)[0]
  uploaded_at = time.monotonic()
  assert status == 200 and os.path.exists(uploaded)

  # DNS rebinding and cross-origin posts are refused before reaching Gradio.
  status, body = http(url, headers={'Host': f'evil.example:{port}'})
  assert status == 403 and b'not this demo' in body
  status, _ = http(url + 'gradio_api/queue/join', b'{"data": []}',
                   {'Origin': 'http://evil.example', 'Content-Type': 'text/plain'})
  assert status == 403
  status, page = http(url)
  assert status == 200
  status, config = http(url + 'config')
  assert status == 200
  for text in (page, config):  # No absolute checkpoint path shown to the page.
    assert os.path.abspath(tiny_checkpoint).encode() not in text

  # Odd paths are 4xx, never 500 with a traceback.
  for path in ('api/examples/%B2', 'gradio_api/file=%B2', 'gradio_api/file=/etc/passwd',
               'static/..%2F..%2Fdemo.py'):
    status, _ = http(url + path)
    assert 400 <= status < 500, (path, status)

  # An upload over --max_upload_mb is cut off while streaming, not read into memory.
  before = server.peak_rss_mb()
  chunk = b'\0' * 2**20

  def body():
    yield (b'--b\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
           b'Content-Type: image/png\r\n\r\n')
    for _ in range(300):
      yield chunk
    yield b'\r\n--b--\r\n'

  request = urllib.request.Request(url + 'gradio_api/upload', data=body(), method='POST',
                                   headers={'Content-Type': 'multipart/form-data; boundary=b',
                                            'Transfer-Encoding': 'chunked'})
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      status, answer = response.status, response.read()
  except urllib.error.HTTPError as error:
    status, answer = error.code, error.read()
  except (ConnectionError, urllib.error.URLError):  # Closed before the whole body was sent.
    status, answer = 413, b'maximum allowed size'
  assert status == 413 and b'maximum allowed size' in answer, (status, answer[:200])
  assert server.peak_rss_mb() - before < 100, (before, server.peak_rss_mb())

  # Through the API: a clear message for each, the limit checked from the header.
  client = Client(url, verbose=False, download_files=str(tmp_path / 'downloads'))
  value, photo, holes = client_inputs(tmp_path, size=64)
  bomb = tmp_path / 'bomb.png'
  bomb.write_bytes(png_header_only(12_000, 12_000))
  garbage = tmp_path / 'garbage.png'
  garbage.write_bytes(b'this is not an image')
  everything = tmp_path / 'everything.png'
  Image.fromarray(np.full((64, 64, 4), 255, np.uint8)).save(everything)
  # 144 MP: over --max_pixels and, first, over the memory bound (issue 24 case 14).
  cases = [(dict(value, background=handle_file(str(bomb))),
            r'bomb\.png is 12000×12000 .* in the demo would peak at .*--max_memory_gb'),
           (dict(value, background=handle_file(str(garbage))), 'is not an image'),
           (dict(value, layers=[handle_file(str(everything))]), 'every pixel as a hole')]
  for bad_value, message in cases:
    with pytest.raises(AppError, match=message) as raised:
      client.predict(bad_value, api_name='/inpaint')
    assert str(server.cache_dir) not in str(raised.value)  # No server paths in messages.
  # No mask: the photo unchanged, with a note. A 16-bit grey photo is scaled, not clipped.
  network, _, _, status_text = client.predict(dict(value, layers=[]), api_name='/inpaint')
  np.testing.assert_array_equal(np.asarray(Image.open(network).convert('RGB')), photo)
  assert 'empty' in status_text
  grey16 = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
  Image.fromarray(grey16).save(tmp_path / 'grey16.png')
  network, _, _, _ = client.predict(dict(value, background=handle_file(str(tmp_path / 'grey16.png'))),
                                    api_name='/inpaint')
  result = np.asarray(Image.open(network).convert('L')).astype(int)
  expected = np.round(grey16 / 257).astype(int)
  assert np.abs(result[~holes] - expected[~holes]).max() <= 1
  with pytest.raises(AppError, match='Press Inpaint first'):  # A new session has no result.
    Client(url, verbose=False).predict(api_name='/again')
  log = server.log()
  assert not server_errors(log) and 'Refused' in log

  # Uploads leave the cache --keep_files_s after they arrive (checked every keep_files_s / 2;
  # on a loaded 2-core machine the check itself can start tens of seconds late).
  while os.path.exists(uploaded) and time.monotonic() - uploaded_at < 4 * KEEP_FILES_S + 30:
    time.sleep(1)
  assert not os.path.exists(uploaded)
  assert time.monotonic() - uploaded_at >= KEEP_FILES_S - 1


# --- Start-up -----------------------------------------------------------------------------


def test_missing_or_wrong_checkpoint_is_a_clear_message(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(demo, 'configure_logging', lambda verbose: None)  # Leave pytest's alone.
  empty = tmp_path / 'empty_run'
  empty.mkdir()
  (empty / 'notes.txt').write_text('')
  assert demo.main(['--checkpoint', str(empty), '--port', '0']) == 2
  error = capsys.readouterr().err
  assert 'error: cannot start the demo: No checkpoint found' in error and 'notes.txt' in error


def test_without_checkpoint_the_packaged_model_is_loaded(capsys, monkeypatch):
  monkeypatch.setattr(demo, 'configure_logging', lambda verbose: None)
  requested = []

  def load(path, **_):  # The overrides (none here) too.
    requested.append(path)
    raise FileNotFoundError('The packaged model is missing (test)')

  monkeypatch.setattr(Inpainter, 'load', staticmethod(load))
  assert demo.main(['--port', '0']) == 2
  assert requested == [None]
  assert 'Loading the packaged model' in capsys.readouterr().err


def test_demo_uses_the_one_inference_core():
  """No second copy of the canvas / resize / paste-back logic in the demo."""
  source = open(demo.__file__, encoding='utf-8').read()
  for duplicated in ('def to_canvas', 'checkpoints.load_model', 'network.create_model',
                     'jax.jit', 'http.server'):
    assert duplicated not in source
  assert 'Inpainter' in source


def asgi_status(hosts, headers, method='POST') -> int:
  """The status LocalOnly answers (200: passed on to the app)."""
  sent = []

  async def app(scope, receive, send):  # pylint: disable=unused-argument
    sent.append({'type': 'http.response.start', 'status': 200})

  async def send(message):
    sent.append(message)

  scope = {'type': 'http', 'method': method, 'path': '/gradio_api/queue/join',
           'headers': [(k.encode(), v.encode()) for k, v in headers.items()]}
  asyncio.run(local_only.LocalOnly(app, hosts)(scope, None, send))
  return sent[0]['status']


@pytest.mark.parametrize('hosts', [list(local_only.LOCAL_NAMES), None])
def test_demo_origin_check_includes_the_port(hosts):
  host = {'host': 'localhost:7860'}
  assert asgi_status(hosts, {**host, 'origin': 'http://localhost:7860'}) == 200
  assert asgi_status(hosts, {**host, 'origin': 'http://localhost:9999'}) == 403
  assert asgi_status(hosts, {**host, 'origin': 'http://localhost'}) == 403  # Port 80.
  assert asgi_status(hosts, {'host': 'localhost', 'origin': 'http://localhost'}) == 200


def test_demo_serves_only_example_images_and_cleans_up_on_sigterm(inpainter, tmp_path,
                                                                  monkeypatch):
  sigterm_to_self_is_safe()
  monkeypatch.setattr(demo, 'configure_logging', lambda verbose: None)
  extra = tmp_path / 'extra'
  extra.mkdir()
  Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(extra / 'face.png')
  (extra / 'secret.txt').write_text('do not serve')
  upload = tmp_path / 'upload.png'
  upload.write_bytes(b'an upload in the cache')
  seen = {}

  def launch(app, **kwargs):
    seen['allowed_paths'] = kwargs['allowed_paths']

  def block_thread(app):
    app.upload_file_set.add(str(upload))
    (folder,) = seen['allowed_paths']
    seen['examples'] = sorted(os.listdir(folder))
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # The handler interrupts this.

  monkeypatch.setattr(Inpainter, 'load', staticmethod(lambda path, **_: inpainter))
  monkeypatch.setattr(demo.gr.Blocks, 'launch', launch)
  monkeypatch.setattr(demo.gr.Blocks, 'block_thread', block_thread)
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    assert demo.main(['--examples', str(extra), '--port', '8']) == 0
  (folder,) = seen['allowed_paths']
  assert os.path.basename(folder).startswith('define_jax_demo_examples_')
  assert 'example_03.png' in seen['examples'] and not any('secret' in f for f in seen['examples'])
  assert not os.path.exists(folder)  # The temporary folder is gone,
  assert not upload.exists()  # and so are the uploads.
  assert (extra / 'secret.txt').exists() and (extra / 'face.png').exists()


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
