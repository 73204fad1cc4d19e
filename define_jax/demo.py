"""Browser demo: load a face, paint over what should disappear, inpaint it.

  python -m define_jax.demo --checkpoint runs/ffhq256 [--port 7860] [--host 127.0.0.1]

then open the printed address. The page (define_jax/demo_static/, plain HTML/CSS/JS, no
asset from the network) lets you upload a photo or pick an example, paint holes with a
brush (size adjustable), erase, undo, and press Inpaint; it shows the masked input, the
network's raw output, the composite (output in the holes, the photo elsewhere) and
OpenCV's Telea fill side by side, and offers the composite for download. "Run again on the
result" makes a refinement pass: the network sees the previous result as known everywhere
and the photo's own pixels are restored outside the holes (as `Inpainter`'s passes > 1).

The server is the standard library's ThreadingHTTPServer, bound to 127.0.0.1 unless --host
says otherwise. Endpoints (JSON errors are {"error": message}, status 400/404/413/500;
tracebacks go to the server log only):

  GET  /                   the page; /static/<file> its script and style
  GET  /api/info           model, checkpoint step, limits, example list, warm-up time
  GET  /api/examples/<i>   an example photo, as POST /api/image returns it
  GET  /api/examples/<i>/thumb.png
  POST /api/image          body: an image file of any format Pillow reads. Returns
                           {"image": PNG data URL, "width", "height", "notes"}: upright
                           (EXIF), RGB (alpha flattened on white), downscaled to
                           --max_side if larger (a note says so).
  POST /api/inpaint        JSON {"image": data URL, "mask": data URL, "mode": "first" or
                           "refine"}; mask white = hole (thresholded at mid-grey), same
                           size as the image. Returns {"masked", "output", "composite",
                           "telea": PNG data URLs, "width", "height", "hole_fraction",
                           "notes", "timings": {"network_s", "telea_s", "total_s"}}.

Sizes: the network always runs on one model-size canvas (the checkpoint's image_size,
e.g. 256²): the photo is scaled so its longer side fits, hole pixels never contribute to
the scaled known pixels, the fill is scaled back to the photo's size and pasted into the
holes at full resolution, as `Inpainter(fit='resize')` does. Because that canvas has one
shape, the network is compiled once, at start-up (warm-up), and every photo size runs at
the same speed. Photos larger than --max_side (default 1024 px on the longer side; so
every photo over 20 megapixels) are downscaled on upload and the page says so; images
over MAX_PIXELS (100 megapixels) are refused before decoding. An empty mask returns the
photo unchanged with a note. For full-resolution batch work use define_jax.inpaint.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import concurrent.futures
import http.server
import io
import json
import logging
import mimetypes
import os
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

STATIC_DIR = Path(__file__).with_name('demo_static')

DEFAULT_PORT = 7860
DEFAULT_MAX_SIDE = 1024
MAX_PIXELS = 100_000_000  # Refused before decoding (a decompression bomb or a panorama).
MIN_SIDE = 16
MAX_BODY_BYTES = 200 * 1024 * 1024
PNG_COMPRESS_LEVEL = 1  # Results are sent once over localhost: speed over size.

log = logging.getLogger('define_jax.demo')


class BadInput(ValueError):
  """A request the user can fix; its message is shown in the page."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


# --- Images -----------------------------------------------------------------------------


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
  """RGB; transparency is flattened onto white, 16-bit and float greys are scaled."""
  if image.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
    pixels = np.asarray(image, np.float64)
    top = 65535.0 if image.mode.startswith('I;16') or pixels.max() > 255 else 255.0
    if image.mode == 'F' and pixels.max() <= 1.0:
      top = 1.0
    image = Image.fromarray(np.round(np.clip(pixels / top, 0, 1) * 255).astype(np.uint8))
  if image.mode in ('RGBA', 'LA', 'PA') or 'transparency' in image.info:
    rgba = image.convert('RGBA')
    background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert('RGB')
  return image.convert('RGB')


def load_photo(data: bytes, max_side: int, name: str = 'The file') -> tuple[np.ndarray, list[str]]:
  """uint8 [H, W, 3] from an encoded image, upright and at most max_side; (pixels, notes).

  BadInput for anything that is not a readable image, or too large or small.
  """
  if not data:
    raise BadInput(f'{name} is empty.')
  notes = []
  try:
    image = Image.open(io.BytesIO(data))
  except Image.DecompressionBombError as error:  # Pillow's own limit, about 179 megapixels.
    raise BadInput(f'{name} has over {MAX_PIXELS / 1e6:.0f} megapixels; the demo refuses such '
                   'images. Downscale it first.', 413) from error
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
    raise BadInput(f'{name} is not an image this demo can read (PNG, JPEG, WebP, BMP, GIF, '
                   'TIFF, …).') from error
  width, height = image.size
  if width * height > MAX_PIXELS:
    raise BadInput(f'{name} is {width}×{height} ({width * height / 1e6:.0f} megapixels); the '
                   f'demo refuses images over {MAX_PIXELS / 1e6:.0f} megapixels. Downscale it '
                   'first.', 413)
  try:
    if max(width, height) > max_side:
      image.draft('RGB', (max_side, max_side))  # JPEG: decode at a reduced scale, fast.
    image.load()
    image = ImageOps.exif_transpose(image)
    image = _flatten_to_rgb(image)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
    raise BadInput(f'{name} could not be decoded: it is damaged or truncated.') from error
  if max(image.size) > max_side:
    scale = max_side / max(image.size)
    new_size = tuple(max(1, round(side * scale)) for side in image.size)
    image = image.resize(new_size, Image.LANCZOS, reducing_gap=3.0)
    notes.append(f'The photo ({width}×{height}, {width * height / 1e6:.1f} megapixels) was '
                 f'downscaled to {image.width}×{image.height}: the demo works on photos up to '
                 f'{max_side} px on the longer side.')
  if min(image.size) < MIN_SIDE:
    raise BadInput(f'{name} is {image.width}×{image.height}: too small (at least {MIN_SIDE} px '
                   'on each side).')
  return np.asarray(image), notes


def png_bytes(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='PNG', compress_level=PNG_COMPRESS_LEVEL)
  return buffer.getvalue()


def data_url(pixels: np.ndarray) -> str:
  return 'data:image/png;base64,' + base64.b64encode(png_bytes(pixels)).decode('ascii')


def decode_data_url(value: Any, what: str) -> bytes:
  """The bytes of a base64 data URL (or bare base64 string)."""
  if not isinstance(value, str) or not value:
    raise BadInput(f'The request has no {what}.')
  payload = value.split(',', 1)[1] if value.startswith('data:') and ',' in value else value
  try:
    return base64.b64decode(payload, validate=True)
  except (binascii.Error, ValueError) as error:
    raise BadInput(f'The {what} is not valid base64 data.') from error


# --- Inference --------------------------------------------------------------------------


def _resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
  """float32 [H, W(, C)] resized: area when shrinking, bilinear when enlarging."""
  import cv2  # pylint: disable=g-import-not-at-top

  if array.shape[1] == width and array.shape[0] == height:
    return array
  shrinking = width * height < array.shape[0] * array.shape[1]
  return cv2.resize(array, (width, height),
                    interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


@dataclass
class Canvas:
  """The network's view of a photo: model-size image and known-mask, content placement."""
  image: np.ndarray  # float32 [S, S, 3], zero outside known content.
  known: np.ndarray  # float32 [S, S, 1]
  top: int
  left: int
  height: int  # Content size on the canvas.
  width: int


def to_canvas(image: np.ndarray, known: np.ndarray, size: int) -> Canvas:
  """Scales float [H, W, 3] and known [H, W] so the longer side is `size`, centred on a
  size×size canvas whose margin is hole. A scaled pixel is known only if every pixel it was
  made from is, and holes do not darken their known neighbours (normalised resize), as in
  define_jax.inference."""
  height, width = known.shape
  scale = size / max(height, width)
  content_h, content_w = max(1, round(height * scale)), max(1, round(width * scale))
  known_fraction = _resize(known.astype(np.float32), content_w, content_h)
  scaled = _resize(image * known[..., None], content_w, content_h)
  scaled = scaled / np.maximum(known_fraction, 1e-6)[..., None]
  scaled_known = (known_fraction >= 1.0 - 1e-4).astype(np.float32)
  top, left = (size - content_h) // 2, (size - content_w) // 2
  canvas_image = np.zeros((size, size, 3), np.float32)
  canvas_known = np.zeros((size, size, 1), np.float32)
  canvas_known[top:top + content_h, left:left + content_w, 0] = scaled_known
  canvas_image[top:top + content_h, left:left + content_w] = (
      np.clip(scaled, 0.0, 1.0) * scaled_known[..., None])
  return Canvas(canvas_image, canvas_known, top, left, content_h, content_w)


class DemoModel:
  """A checkpoint's network compiled once for its model-size canvas, plus Telea."""

  def __init__(self, checkpoint: str, step: int | None = None):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    import ml_collections  # pylint: disable=g-import-not-at-top

    from define_jax import checkpoints  # pylint: disable=g-import-not-at-top
    from define_jax import inference  # pylint: disable=g-import-not-at-top
    from define_jax import steps  # pylint: disable=g-import-not-at-top

    variables, config_dict, self.step = checkpoints.load_model(checkpoint, step)
    missing = [field for field in inference.MODEL_FIELDS if field not in config_dict]
    if missing:
      raise ValueError(f'The checkpoint at {checkpoint} has a config without '
                       f'{", ".join(missing)}; it was not written by define_jax.train.')
    self.config = ml_collections.ConfigDict(config_dict)
    inference.check_variables_match(self.config, variables, checkpoint)
    self.checkpoint = os.path.abspath(checkpoint)
    self.image_size = int(self.config.image_size)
    self.device = str(jax.devices()[0])
    apply = steps.create_model(self.config).apply
    self._variables = jax.device_put(dict(variables))

    def network(variables, image, known):
      output = apply(variables, image * known, known, train=False)
      return jnp.clip(output.astype(jnp.float32), 0.0, 1.0)

    self._network = jax.jit(network)
    self._lock = threading.Lock()  # One inference at a time: they share the CPU cores.
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='telea')
    self.warmup_s = self._warm_up()

  def describe(self) -> dict[str, Any]:
    return {'checkpoint': self.checkpoint, 'step': self.step, 'model': self.config.model,
            'image_size': self.image_size, 'layers': self.config.layers,
            'base_features': self.config.base_features, 'device': self.device,
            'warmup_s': round(self.warmup_s, 2)}

  def _warm_up(self) -> float:
    """Compiles the network (its only shape) and runs every step once; seconds taken."""
    start = time.perf_counter()
    photo = np.full((48, 40, 3), 128, np.uint8)
    holes = np.zeros((48, 40), bool)
    holes[10:30, 12:28] = True
    self.inpaint(photo, holes, refine=False)
    self.inpaint(photo, holes, refine=True)
    return time.perf_counter() - start

  def run_network(self, canvas: Canvas) -> np.ndarray:
    size = self.image_size
    output = self._network(self._variables, canvas.image.reshape(1, size, size, 3),
                           canvas.known.reshape(1, size, size, 1))
    return np.asarray(output)[0]

  def inpaint(self, photo: np.ndarray, holes: np.ndarray, *, refine: bool
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """(raw output, composite, Telea composite, timings), uint8 [H, W, 3] at the photo's size.

    refine=False: a first pass, the network sees only the known pixels. refine=True: the
    photo is a previous result, which the network sees whole; either way the composite
    keeps the photo's pixels outside the holes.
    """
    from define_jax import baselines  # pylint: disable=g-import-not-at-top

    height, width = holes.shape
    image = photo.astype(np.float32) / 255.0
    known = (~holes).astype(np.float32)
    timings = {}
    with self._lock:
      start = time.perf_counter()
      telea = self._pool.submit(self._telea, baselines.telea, image, known)
      canvas = to_canvas(image, np.ones_like(known) if refine else known, self.image_size)
      if not canvas.known.any():
        telea.cancel()
        raise BadInput('Almost the whole photo is masked: at the model\'s resolution nothing '
                       'known is left to inpaint from. Erase part of the mask.')
      output = self.run_network(canvas)
      output = output[canvas.top:canvas.top + canvas.height,
                      canvas.left:canvas.left + canvas.width]
      output = np.round(_resize(output, width, height) * 255.0).clip(0, 255).astype(np.uint8)
      timings['network_s'] = time.perf_counter() - start
      telea_result, timings['telea_s'] = telea.result()
    composite = np.where(holes[..., None], output, photo)
    return output, composite, telea_result, timings

  @staticmethod
  def _telea(method: Callable, image: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    result = method(image, known[..., None])
    return np.round(result * 255.0).clip(0, 255).astype(np.uint8), time.perf_counter() - start


# --- Examples ---------------------------------------------------------------------------


def _skimage_photo(name: str) -> Callable[[], np.ndarray]:
  def load():
    import skimage.data  # pylint: disable=g-import-not-at-top
    pixels = np.asarray(getattr(skimage.data, name)())
    return np.repeat(pixels[..., None], 3, -1) if pixels.ndim == 2 else pixels[..., :3]
  return load


def _astronaut_face() -> np.ndarray:
  return _skimage_photo('astronaut')()[0:256, 96:352]


BUILTIN_EXAMPLES = (
    ('Astronaut, portrait', _astronaut_face),
    ('Astronaut', _skimage_photo('astronaut')),
    ('Cameraman', _skimage_photo('camera')),
    ('Cat', _skimage_photo('chelsea')),
)
MAX_EXTRA_EXAMPLES = 12
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.tif', '.tiff')


@dataclass
class Example:
  title: str
  pixels: np.ndarray
  notes: list[str]
  thumb_png: bytes


def load_examples(extra_dir: str | None, max_side: int) -> list[Example]:
  sources: list[tuple[str, Callable[[], tuple[np.ndarray, list[str]]]]] = []
  for title, loader in BUILTIN_EXAMPLES:
    sources.append((title, lambda loader=loader: (loader(), [])))
  if extra_dir:
    files = sorted(p for p in Path(extra_dir).rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
      log.warning('No images in --examples %s.', extra_dir)
    for path in files[:MAX_EXTRA_EXAMPLES]:
      sources.append((path.stem[:40], lambda path=path: load_photo(path.read_bytes(), max_side,
                                                                  path.name)))
  examples = []
  for title, loader in sources:
    try:
      pixels, notes = loader()
    except (OSError, ValueError) as error:  # A missing or broken example is skipped.
      log.warning('Skipping example %s: %s', title, error)
      continue
    if max(pixels.shape[:2]) > max_side:
      pixels, notes = load_photo(png_bytes(pixels), max_side, title)
    thumb = Image.fromarray(pixels)
    thumb.thumbnail((160, 160), Image.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, format='PNG')
    examples.append(Example(title, pixels, notes, buffer.getvalue()))
  return examples


# --- Server -----------------------------------------------------------------------------


class DemoApp:
  """The request logic, independent of the HTTP plumbing (and testable without it)."""

  def __init__(self, model: DemoModel, *, max_side: int = DEFAULT_MAX_SIDE,
               examples: Sequence[Example] = ()):
    self.model = model
    self.max_side = max_side
    self.examples = list(examples)
    # PNG encoding of the four results dominates large photos; Pillow releases the GIL.
    self._encoders = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix='png')

  def info(self) -> dict[str, Any]:
    return {'model': self.model.describe(), 'max_side': self.max_side,
            'max_megapixels': MAX_PIXELS / 1e6, 'max_upload_mib': MAX_BODY_BYTES // 2**20,
            'examples': [{'id': i, 'title': e.title, 'thumb': f'/api/examples/{i}/thumb.png'}
                         for i, e in enumerate(self.examples)]}

  @staticmethod
  def photo_response(pixels: np.ndarray, notes: list[str]) -> dict[str, Any]:
    return {'image': data_url(pixels), 'width': pixels.shape[1], 'height': pixels.shape[0],
            'notes': notes}

  def upload(self, body: bytes, name: str = 'The file') -> dict[str, Any]:
    return self.photo_response(*load_photo(body, self.max_side, name))

  def example(self, index: int) -> Example:
    if not 0 <= index < len(self.examples):
      raise BadInput(f'There is no example {index}.', 404)
    return self.examples[index]

  def inpaint(self, request: Any) -> dict[str, Any]:
    start = time.perf_counter()
    if not isinstance(request, dict):
      raise BadInput('Expected a JSON object with "image" and "mask".')
    mode = request.get('mode', 'first')
    if mode not in ('first', 'refine'):
      raise BadInput(f'Unknown mode {mode!r}: expected "first" or "refine".')
    photo, notes = load_photo(decode_data_url(request.get('image'), 'image'), self.max_side,
                              'The photo')
    from define_jax import masks  # pylint: disable=g-import-not-at-top
    try:
      known = masks.decode_mask(decode_data_url(request.get('mask'), 'mask'), 'hole_white')
    except ValueError as error:
      raise BadInput(f'The mask is not a readable image ({error}).') from error
    if known.shape != photo.shape[:2]:
      if notes:  # The photo was downscaled here: the mask follows it.
        known = masks.resize_mask(known, photo.shape[:2])
      else:
        raise BadInput(f'The mask is {known.shape[1]}×{known.shape[0]} but the photo is '
                       f'{photo.shape[1]}×{photo.shape[0]}.')
    holes = known == 0
    hole_fraction = float(holes.mean())
    decode_s = time.perf_counter() - start
    response = {'width': photo.shape[1], 'height': photo.shape[0],
                'hole_fraction': round(hole_fraction, 4), 'mode': mode}
    if not holes.any():
      notes.append('The mask is empty: paint over what should disappear. The photo is '
                   'returned unchanged.')
      unchanged = data_url(photo)
      response.update(masked=unchanged, output=None, composite=unchanged, telea=None,
                      notes=notes, timings={'total_s': time.perf_counter() - start})
      return response
    output, composite, telea, timings = self.model.inpaint(photo, holes, refine=mode == 'refine')
    masked = np.where(holes[..., None], np.uint8(255), photo)
    names = ('masked', 'output', 'composite', 'telea')
    encode_start = time.perf_counter()
    encoded = list(self._encoders.map(data_url, (masked, output, composite, telea)))
    response.update(zip(names, encoded), notes=notes)
    timings.update(decode_s=decode_s, encode_s=time.perf_counter() - encode_start,
                   total_s=time.perf_counter() - start)
    response['timings'] = {k: round(v, 4) for k, v in timings.items()}
    log.info('inpaint %s %dx%d, %.1f%% holes: decode %.3f s, network %.3f s, Telea %.3f s, '
             'encode %.3f s, total %.3f s', mode, photo.shape[1], photo.shape[0],
             100 * hole_fraction, decode_s, timings['network_s'], timings['telea_s'],
             timings['encode_s'], timings['total_s'])
    return response


class Handler(http.server.BaseHTTPRequestHandler):
  """Routes requests to `server.app`; never sends a traceback to the client."""

  server_version = 'define_jax-demo'
  protocol_version = 'HTTP/1.1'

  @property
  def app(self) -> DemoApp:
    return self.server.app  # type: ignore[attr-defined]

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    log.debug('%s %s', self.address_string(), format % args)

  def _send(self, status: int, body: bytes, content_type: str) -> None:
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(body)))
    self.send_header('Cache-Control', 'no-store')
    self.send_header('X-Content-Type-Options', 'nosniff')
    # Everything comes from this server: nothing from CDNs, images only as data URLs.
    self.send_header('Content-Security-Policy',
                     "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                     "script-src 'self'; connect-src 'self'; object-src 'none'")
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(body)

  def _send_json(self, status: int, payload: Any) -> None:
    self._send(status, json.dumps(payload).encode('utf-8'), 'application/json; charset=utf-8')

  def _handle(self, route: Callable[[], None]) -> None:
    try:
      route()
    except BadInput as error:
      log.info('%s %s: %s', self.command, self.path, error)
      self._send_json(error.status, {'error': str(error)})
    except (BrokenPipeError, ConnectionResetError):
      log.info('%s %s: the client went away.', self.command, self.path)
    except Exception as error:  # pylint: disable=broad-except
      log.exception('%s %s failed', self.command, self.path)
      self._send_json(500, {'error': f'Internal error ({type(error).__name__}); the details '
                                     'are in the server log.'})

  def do_GET(self):  # pylint: disable=invalid-name
    self._handle(self._get)

  def do_HEAD(self):  # pylint: disable=invalid-name
    self._handle(self._get)

  def do_POST(self):  # pylint: disable=invalid-name
    self._handle(self._post)

  def _get(self) -> None:
    path = urllib.parse.urlsplit(self.path).path
    if path in ('/', '/index.html'):
      self._send_static('index.html')
    elif path.startswith('/static/'):
      self._send_static(path[len('/static/'):])
    elif path == '/api/info':
      self._send_json(200, self.app.info())
    elif path.startswith('/api/examples/'):
      parts = path[len('/api/examples/'):].split('/')
      if not parts[0].isdigit() or len(parts) > 2 or parts[1:] not in ([], ['thumb.png']):
        raise BadInput(f'Not found: {path}', 404)
      example = self.app.example(int(parts[0]))
      if parts[1:]:
        self._send(200, example.thumb_png, 'image/png')
      else:
        self._send_json(200, self.app.photo_response(example.pixels, list(example.notes)))
    else:
      raise BadInput(f'Not found: {path}', 404)

  def _send_static(self, name: str) -> None:
    allowed = {p.name for p in STATIC_DIR.iterdir() if p.is_file()}
    if name not in allowed:  # Also rules out '..' and subdirectories.
      raise BadInput(f'Not found: /static/{name}', 404)
    content_type = mimetypes.guess_type(name)[0] or 'application/octet-stream'
    if content_type.startswith('text/') or content_type.endswith('javascript'):
      content_type += '; charset=utf-8'
    self._send(200, (STATIC_DIR / name).read_bytes(), content_type)

  def _read_body(self) -> bytes:
    try:
      length = int(self.headers.get('Content-Length', ''))
    except ValueError as error:
      raise BadInput('The request has no Content-Length.', 411) from error
    if length > MAX_BODY_BYTES:
      self.close_connection = True  # The body stays unread.
      raise BadInput(f'The upload is {length / 2**20:.0f} MiB; the demo accepts at most '
                     f'{MAX_BODY_BYTES // 2**20} MiB.', 413)
    return self.rfile.read(length)

  def _post(self) -> None:
    path = urllib.parse.urlsplit(self.path).path
    if path not in ('/api/image', '/api/inpaint'):
      raise BadInput(f'Not found: {path}', 404)
    body = self._read_body()
    if path == '/api/image':
      name = urllib.parse.unquote(self.headers.get('X-Filename', '')) or 'The file'
      self._send_json(200, self.app.upload(body, name[:200]))
      return
    try:
      request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
      raise BadInput('The request is not valid JSON.') from error
    self._send_json(200, self.app.inpaint(request))


class DemoServer(http.server.ThreadingHTTPServer):
  daemon_threads = True
  allow_reuse_address = True

  def __init__(self, address: tuple[str, int], app: DemoApp):
    super().__init__(address, Handler)
    self.app = app

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    return f'http://{host if ":" not in host else f"[{host}]"}:{port}/'


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m define_jax.demo', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--checkpoint', required=True,
                      help='Training workdir, its checkpoints directory or one step directory.')
  parser.add_argument('--step', type=int, default=None,
                      help='Checkpoint step (default: the newest readable one).')
  parser.add_argument('--port', type=int, default=DEFAULT_PORT,
                      help=f'Port (default {DEFAULT_PORT}; 0 picks a free one).')
  parser.add_argument('--host', default='127.0.0.1',
                      help='Address to bind (default 127.0.0.1, this machine only).')
  parser.add_argument('--max_side', type=int, default=DEFAULT_MAX_SIDE,
                      help='Photos larger than this (longer side, px) are downscaled.')
  parser.add_argument('--examples', default=None,
                      help=f'A folder of extra example photos (the first {MAX_EXTRA_EXAMPLES}).')
  parser.add_argument('--verbose', action='store_true', help='Log every request.')
  options = parser.parse_args(argv)
  if options.max_side < MIN_SIDE:
    parser.error(f'--max_side must be at least {MIN_SIDE}.')
  if options.examples and not os.path.isdir(options.examples):
    parser.error(f'--examples {options.examples} is not a directory.')
  return options


def configure_logging(verbose: bool) -> None:
  logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                      format='%(asctime)s %(levelname)s %(name)s: %(message)s')
  logging.getLogger('absl').setLevel(logging.ERROR)  # Orbax's read-only notices.
  logging.getLogger('jax').setLevel(logging.WARNING)  # 'Unable to initialize backend tpu'.


def main(argv: Sequence[str] | None = None) -> int:
  options = parse_args(sys.argv[1:] if argv is None else argv)
  configure_logging(options.verbose)
  print(f'Loading {options.checkpoint} and compiling the network…', file=sys.stderr, flush=True)
  try:
    model = DemoModel(options.checkpoint, options.step)
  except (FileNotFoundError, ValueError) as error:
    print(f'error: cannot start the demo: {error}', file=sys.stderr)
    return 1
  except Exception as error:  # pylint: disable=broad-except
    log.debug('Loading failed', exc_info=True)
    print(f'error: cannot load the checkpoint {options.checkpoint}: {type(error).__name__}: '
          f'{error}', file=sys.stderr)
    return 1
  info = model.describe()
  print(f'Model {info["model"]} {info["image_size"]}², step {info["step"]}, on {info["device"]}; '
        f'warm-up (compilation) {model.warmup_s:.1f} s.', file=sys.stderr, flush=True)
  app = DemoApp(model, max_side=options.max_side,
                examples=load_examples(options.examples, options.max_side))
  try:
    server = DemoServer((options.host, options.port), app)
  except OSError as error:
    print(f'error: cannot listen on {options.host}:{options.port}: {error.strerror or error}. '
          'Pass another --port (0 picks a free one).', file=sys.stderr)
    return 1
  print(f'DeFINe demo running at {server.url} (Ctrl+C to stop)', flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
  return 0


if __name__ == '__main__':
  sys.exit(main())
