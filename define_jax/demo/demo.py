"""Browser demo on Gradio: load a face, paint over what should disappear, inpaint it.

  python -m define_jax.demo [--checkpoint runs/ffhq256] [--port 7860] [--host 127.0.0.1]

then open the printed address. Without --checkpoint the model shipped in the package is
used (`Inpainter.load`); --config.SECTION.FIELD=VALUE overrides its stored config, e.g.
--config.model.dtype=bfloat16. Upload a photo (or paste one, or pick an example), paint the holes
with the brush (eraser and undo in the editor's toolbar) and press Inpaint: the network's
composite appears next to OpenCV's Telea fill, each with a download button; "Run again on
the result" adds a refinement pass (Inpainter's `passes`).

All inpainting goes through `define_jax.inference.Inpainter`, the one inference core, with
fit='auto' (any photo size and framing: each face with paint on it is aligned to the
model's framing and filled there, the rest at the photo's resolution; the status says how
many faces were found and whether a face's fill was upscaled; "Show the faces found" draws
their boxes). The mask is the union of the painted layers' alpha: painted = hole.

Safety and resources:
  - bound to 127.0.0.1 unless --host says otherwise; requests whose Host header is not this
    machine (DNS rebinding) and cross-origin POSTs are refused (local_only.py);
  - Gradio's analytics are off and nothing is fetched from the internet (the page's fonts
    and scripts come from the installed package);
  - uploads over --max_upload_mb are cut off while streaming; images over --max_pixels, and
    photos whose inpainting would need more than --max_memory_gb (4 GB by default;
    memory.py's 'demo' line), are refused from their header before decoding, with a message
    in the page;
  - uploads, results and examples live in a private folder of this process (0700, files
    0600, never a shared /tmp/gradio); a file there is deleted --keep_files_s after it was
    last written, an upload cut off by its client at once, and the whole folder when the
    server stops (Ctrl-C or SIGTERM);
  - the examples' folder is the only one whose files are served besides Gradio's own
    uploads and results (--examples photos are copied there: nothing else below that folder
    is reachable);
  - a queue runs one inpainting at a time and makes concurrent requests wait;
  - bad input is a message in the page; other errors show a short message and the
    traceback goes to the server log only.
"""

from __future__ import annotations

import os

os.environ['GRADIO_ANALYTICS_ENABLED'] = 'False'  # Read when gradio is imported.

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import contextlib
import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import gradio as gr
from gradio import route_utils
import numpy as np
from PIL import Image

from define_jax.demo import local_only
from define_jax.files import image_files
from define_jax.files import output_files
from define_jax.files.image_files import InputError
from define_jax.inference import DEFAULT_MODEL, Inpainter, MAX_PASSES
from define_jax.inference import memory
from define_jax.runtime import compilation_cache
from define_jax.runtime import console

DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 100
DEFAULT_KEEP_FILES_S = 300
MAX_EXTRA_EXAMPLES = 12
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.tif', '.tiff')

log = logging.getLogger('define_jax.demo')


def user_error(message: str) -> gr.Error:
  """An error shown in the page (and to API clients); one log line, no traceback."""
  log.info('Refused input: %s', message)
  return gr.Error(message, print_exception=False)


# --- The editor: pixel limit before decoding, photo and painted layers ---------------------


def hole_editor(max_pixels: int | None, check_memory: Callable[[Any, str], None],
                **kwargs) -> gr.ImageEditor:
  """gr.ImageEditor whose images are read by image_files.open_image: the pixel limit and
  `check_memory(file, name)` (an InputError for a photo too large for the memory bound) are
  checked from the header before decoding and 16-bit photos are scaled (not clipped).

  Its value holds PIL images: the background and composite as RGB (transparency on white),
  the painted layers as RGBA (their alpha is the mask). The editor's own decoding is
  replaced on the instance (a subclass would make Gradio write a .pyi next to this file).
  """
  editor = gr.ImageEditor(type='pil', image_mode='RGBA', **kwargs)

  def convert_and_format_image(file, flatten_on_white: bool = False):
    if file is None:
      return None
    if isinstance(file, (bytes, bytearray, memoryview)):  # The page's canvas export.
      source, name = bytes(file), 'The photo'
    else:  # A file sent by an API client, already in Gradio's cache.
      source, name = file.path, f'The photo {file.orig_name or ""}'.strip()
    try:
      check_memory(source, name)
      image = image_files.open_image(source, name=name, max_pixels=max_pixels)
      if not flatten_on_white:
        return image.convert('RGBA')
      return Image.fromarray(image_files.to_uint8(image_files.photo_pixels(image, name)))
    except InputError as error:
      raise user_error(str(error)) from None

  editor.convert_and_format_image = convert_and_format_image
  return editor


def photo_and_holes(value: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
  """uint8 [H, W, 3] photo and bool [H, W] holes (painted pixels) from the editor's value."""
  if not value or value.get('background') is None:
    raise user_error('Upload a photo (or pick an example) first.')
  photo = np.asarray(value['background'].convert('RGB'))
  holes = np.zeros(photo.shape[:2], bool)
  for layer in value.get('layers') or []:
    alpha = np.asarray(layer.convert('RGBA'))[..., 3]
    if alpha.shape != holes.shape:  # A layer never leaves the canvas; be safe anyway.
      alpha = np.asarray(Image.fromarray(alpha).resize(holes.shape[::-1], Image.NEAREST))
    holes |= alpha > 0
  return photo, holes


# --- The app --------------------------------------------------------------------------------


class Demo:
  """The request logic: one Inpainter (the inference core), OpenCV Telea beside it."""

  def __init__(self, inpainter: Inpainter,
               max_memory_gb: float = memory.DEFAULT_MAX_MEMORY_GB):
    self.inpainter = inpainter
    self.max_memory_gb = max_memory_gb

  def check_memory(self, photo: Any, name: str) -> None:
    """InputError when the demo would need more than max_memory_gb for this photo."""
    self.inpainter.check_memory(photo, name, 'demo', self.max_memory_gb)

  def describe(self) -> str:
    model = self.inpainter.config.model
    step = f', step {self.inpainter.step}' if self.inpainter.step is not None else ''
    return (f'Model: {model.name}, {model.image_size}², {model.layers} levels{step}. '
            'Paint over what should disappear, then press **Inpaint**.')

  def run(self, photo: np.ndarray, holes: np.ndarray, passes: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    try:
      self.check_memory(photo, 'The photo')
      result = self.inpainter(photo, holes, polarity='hole_white', passes=passes,
                              max_memory_gb=self.max_memory_gb)
    except InputError as error:
      raise user_error(str(error).replace('The mask', 'The painted mask')) from None
    return result, time.perf_counter() - start

  def faces_found(self, photo: np.ndarray) -> np.ndarray:
    """The photo with a numbered box around every face the last inpainting found."""
    import cv2  # pylint: disable=g-import-not-at-top

    shown = photo.copy()
    thickness = max(2, round(max(photo.shape[:2]) / 300))
    for number, box in enumerate(self.inpainter.last_fit_reports[0].boxes, start=1):
      x0, y0, x1, y1 = (round(v) for v in box)
      cv2.rectangle(shown, (x0, y0), (x1, y1), (0, 255, 0), thickness)
      cv2.putText(shown, str(number), (x0, max(y0 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                  thickness / 3, (0, 255, 0), thickness)
    return shown

  def inpaint(self, value: dict[str, Any] | None, show_faces: bool = False):
    """Editor value -> (network composite, Telea, faces found or None, status, state)."""
    from define_jax.inference import baselines  # OpenCV, imported on first use.

    photo, holes = photo_and_holes(value)
    if not holes.any():
      gr.Warning('The mask is empty: paint over what should disappear.')
      return photo, photo, None, 'The mask is empty: the photo is unchanged.', None
    result, network_s = self.run(photo, holes, passes=1)
    faces = self.faces_found(photo) if show_faces else None
    start = time.perf_counter()
    known = (~holes).astype(np.float32)[..., None]
    telea = baselines.telea(photo.astype(np.float32) / 255.0, known)
    telea = np.round(telea * 255.0).clip(0, 255).astype(np.uint8)
    telea_s = time.perf_counter() - start
    log.info('inpaint %dx%d, %.1f%% holes: network %.3f s, Telea %.3f s', photo.shape[1],
             photo.shape[0], 100 * holes.mean(), network_s, telea_s)
    state = {'photo': photo, 'holes': holes, 'passes': 1}
    return result, telea, faces, self.status(state, network_s, telea_s), state

  def again(self, state: dict[str, Any] | None):
    """Previous state -> (composite with one more pass, status, state)."""
    if not state:
      raise user_error('Press Inpaint first.')
    if state['passes'] >= MAX_PASSES:
      raise user_error(f'{MAX_PASSES} passes is the most: later ones change little.')
    state = dict(state, passes=state['passes'] + 1)
    result, network_s = self.run(state['photo'], state['holes'], state['passes'])
    return result, self.status(state, network_s), state

  def status(self, state: dict[str, Any], network_s: float, telea_s: float | None = None) -> str:
    photo, holes = state['photo'], state['holes']
    telea = f', Telea {telea_s:.2f} s' if telea_s is not None else ''
    fit = self.inpainter.last_fit_reports[0].describe()
    return (f'**Pass {state["passes"]}**: {photo.shape[1]}×{photo.shape[0]}, '
            f'{holes.mean():.1%} painted; network {network_s:.2f} s{telea}. '
            f'{fit[0].upper()}{fit[1:]}.')


def write_examples(directory: Path, extra_dir: str | None, max_pixels: int,
                   check_memory: Callable[[Any, str], None]) -> list[str]:
  """PNG files of scikit-image's photographs (no network), then copies of up to
  MAX_EXTRA_EXAMPLES images from extra_dir, all in `directory` (the only folder the server
  serves files from: nothing else below extra_dir is reachable); unreadable extras and
  those too large for the memory bound are skipped with a warning."""
  import skimage.data

  paths = []
  astronaut = skimage.data.astronaut()
  for name, pixels in (('astronaut_face', astronaut[0:256, 96:352]), ('astronaut', astronaut),
                       ('cat', skimage.data.chelsea())):
    path = directory / f'{name}.png'
    Image.fromarray(pixels).save(path)
    paths.append(str(path))
  if extra_dir:
    files = sorted(p for p in Path(extra_dir).rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES)
    for file in files[:MAX_EXTRA_EXAMPLES]:
      try:
        check_memory(file, str(file))
        image_files.open_image(file, max_pixels=max_pixels)
      except InputError as error:
        log.warning('Skipping example: %s', error)
        continue
      copy = directory / f'example_{len(paths):02d}{file.suffix.lower()}'
      shutil.copyfile(file, copy)
      paths.append(str(copy))
  return paths


def build(inpainter: Inpainter, *, examples: Sequence[str] = (),
          max_pixels: int = image_files.DEFAULT_MAX_PIXELS,
          max_memory_gb: float = memory.DEFAULT_MAX_MEMORY_GB,
          keep_files_s: int = DEFAULT_KEEP_FILES_S) -> gr.Blocks:
  """The Gradio app (not launched). Event API names: 'inpaint' and 'again'."""
  demo = Demo(inpainter, max_memory_gb)
  with gr.Blocks(title='DeFINe face inpainting', analytics_enabled=False,
                 delete_cache=(max(1, keep_files_s // 2), keep_files_s)) as app:
    gr.Markdown(f'## DeFINe face inpainting\n{demo.describe()}')
    with gr.Row():
      editor = hole_editor(
          max_pixels, demo.check_memory, label='Photo: paint the holes', elem_id='editor',
          sources=('upload', 'clipboard'), layers=False, transforms=(), format='png',
          brush=gr.Brush(colors=['#ff00ff'], color_mode='fixed', default_size=12),
          eraser=gr.Eraser(default_size=12), height=520)
      with gr.Column():
        with gr.Row():
          network = gr.Image(label='DeFINe (network composite)', type='numpy', format='png',
                             interactive=False, elem_id='network', buttons=['download'])
          telea = gr.Image(label='OpenCV Telea', type='numpy', format='png', interactive=False,
                           elem_id='telea', buttons=['download'])
        faces = gr.Image(label='Faces found', type='numpy', format='png', interactive=False,
                         elem_id='faces')
        status = gr.Markdown(elem_id='status')
        show_faces = gr.Checkbox(label='Show the faces found', value=False,
                                 elem_id='show_faces')
        with gr.Row():
          inpaint_button = gr.Button('Inpaint', variant='primary', elem_id='inpaint')
          again_button = gr.Button('Run again on the result', elem_id='again')
    if examples:
      gr.Examples(examples=[[path] for path in examples], inputs=[editor], label='Examples')
    state = gr.State(None)
    inpaint_button.click(demo.inpaint, inputs=[editor, show_faces],
                         outputs=[network, telea, faces, status, state],
                         api_name='inpaint', concurrency_limit=1)
    again_button.click(demo.again, inputs=[state], outputs=[network, status, state],
                       api_name='again', concurrency_limit=1)
  # One inpainting at a time (they share the cores); up to 64 wait in the queue.
  app.queue(default_concurrency_limit=1, max_size=64)
  return app


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m define_jax.demo', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  console.add_checkpoint_argument(parser)
  parser.add_argument('--port', type=int, default=DEFAULT_PORT,
                      help=f'Port (default {DEFAULT_PORT}; 0 picks a free one).')
  parser.add_argument('--host', default='127.0.0.1',
                      help='Address to bind (default 127.0.0.1, this machine only).')
  parser.add_argument('--max_pixels', type=int, default=image_files.DEFAULT_MAX_PIXELS,
                      help='Refuse photos with more pixels, from their header (default '
                      f'{image_files.DEFAULT_MAX_PIXELS:,}).')
  memory.add_argument(parser, ('demo',))
  parser.add_argument('--max_upload_mb', type=int, default=DEFAULT_MAX_UPLOAD_MB,
                      help=f'Largest upload in MB (default {DEFAULT_MAX_UPLOAD_MB}).')
  parser.add_argument('--keep_files_s', type=int, default=DEFAULT_KEEP_FILES_S,
                      help='Delete uploads and results from the cache after this many '
                      f'seconds (default {DEFAULT_KEEP_FILES_S}).')
  parser.add_argument('--examples', default=None,
                      help=f'A folder of extra example photos (the first {MAX_EXTRA_EXAMPLES}).')
  parser.add_argument('--verbose', action='store_true', help='Log every request.')
  # --config.SECTION.FIELD=VALUE changes the checkpoint's stored config, e.g.
  # --config.model.dtype=bfloat16 (inference precision).
  options = console.parse_with_config_overrides(parser, argv)
  for name in ('max_pixels', 'max_upload_mb', 'keep_files_s'):
    if getattr(options, name) < 1:
      parser.error(f'--{name} must be at least 1.')
  if options.examples and not os.path.isdir(options.examples):
    parser.error(f'--examples {options.examples} is not a directory.')
  return options


def configure_logging(verbose: bool) -> None:
  logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                      format='%(asctime)s %(levelname)s %(name)s: %(message)s')
  for name in ('absl', 'httpx', 'uvicorn.access'):  # Orbax's read-only notices, requests.
    logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
  logging.getLogger('jax').setLevel(logging.WARNING)  # 'Unable to initialize backend tpu'.


def main(argv: Sequence[str] | None = None) -> int:
  options = parse_args(sys.argv[1:] if argv is None else argv)
  configure_logging(options.verbose)
  compilation_cache.enable()
  what = options.checkpoint or f'the packaged model {DEFAULT_MODEL}'
  print(f'Loading {what}…', file=sys.stderr, flush=True)
  try:
    inpainter = Inpainter.load(options.checkpoint or None, overrides=options.config_overrides)
    start = time.perf_counter()
    warm = np.full((48, 40, 3), 128, np.uint8)
    holes = np.zeros((48, 40), bool)
    holes[10:30, 12:28] = True
    inpainter(warm, holes, polarity='hole_white')  # Compiles the network's one canvas shape.
    log.info('Warm-up (compilation) %.1f s.', time.perf_counter() - start)
  except (FileNotFoundError, ValueError) as error:
    print(f'error: cannot start the demo: {error}', file=sys.stderr)
    return console.ERROR_STATUS
  except Exception as error:  # pylint: disable=broad-except
    log.debug('Loading failed', exc_info=True)
    print(f'error: cannot load {what}: {type(error).__name__}: {error}', file=sys.stderr)
    return console.ERROR_STATUS
  try:
    with private_files() as folder, output_files.terminate_as_interrupt():  # SIGTERM too.
      examples_dir = Path(tempfile.mkdtemp(prefix='define_jax_demo_examples_', dir=folder))
      return serve(inpainter, options, examples_dir)
  except KeyboardInterrupt:
    return 0


@contextlib.contextmanager
def private_files() -> Iterator[Path]:
  """A new folder (0700) that holds every file the server writes: Gradio's uploads and
  results (GRADIO_TEMP_DIR), other temporary files and the examples; files are created
  0600 and folders 0700 (umask 077). The folder is deleted on leaving, the settings
  restored."""
  folder = Path(tempfile.mkdtemp(prefix='define_jax_demo_'))
  umask = os.umask(0o077)
  saved = os.environ.get('GRADIO_TEMP_DIR'), tempfile.tempdir
  os.environ['GRADIO_TEMP_DIR'], tempfile.tempdir = str(folder / 'gradio'), str(folder)
  try:
    yield folder
  finally:
    if saved[0] is None:
      os.environ.pop('GRADIO_TEMP_DIR', None)
    else:
      os.environ['GRADIO_TEMP_DIR'] = saved[0]
    tempfile.tempdir = saved[1]
    os.umask(umask)
    shutil.rmtree(folder, ignore_errors=True)


def delete_old_files(folder: Path, age_s: float, keep: Callable[[str], bool]) -> None:
  """Deletes the files below `folder` last written more than age_s ago but those `keep`
  says to keep (uploads Gradio does not track, such as those cut off mid-way, go too),
  then the empty folders below it."""
  now = time.time()
  old = lambda path: now - os.lstat(path).st_mtime > age_s
  for directory, _, names in os.walk(folder, topdown=False):
    old_folder = False
    with contextlib.suppress(OSError):
      old_folder = Path(directory) != folder and old(directory)  # Not one just made.
    for name in names:
      path = os.path.join(directory, name)
      with contextlib.suppress(OSError):
        if old(path) and not keep(path):
          os.unlink(path)
    with contextlib.suppress(OSError):
      if old_folder:
        os.rmdir(directory)  # Only if empty.


@contextlib.contextmanager
def deleting_old_files(folder: Path, age_s: float, keep: Callable[[str], bool]
                       ) -> Iterator[None]:
  """delete_old_files every age_s / 2 seconds in a background thread inside the block."""
  stop = threading.Event()

  def sweep() -> None:
    while not stop.wait(max(1.0, age_s / 2)):
      delete_old_files(folder, age_s, keep)

  thread = threading.Thread(target=sweep, name='define_jax-demo-cleanup', daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()


def kept_file(app: gr.Blocks, examples_dir: Path, path: str) -> bool:
  """Whether `path` is an example or a file Gradio keeps in its cache (the examples' copies)."""
  if Path(path).parent == examples_dir:
    return True
  return any(path in getattr(block, 'keep_in_cache', ()) for block in app.blocks.values())


def remove_cut_off_uploads() -> None:
  """Makes Gradio delete an upload's temporary file when its client stops sending it (Gradio
  6.31 deletes it only when the upload is refused, e.g. for its size)."""
  parse = route_utils.GradioMultiPartParser.parse
  if getattr(parse, 'removes_cut_off_uploads', False):
    return

  async def parse_or_remove(parser):
    try:
      return await parse(parser)
    except BaseException:
      for file in parser._files_to_close_on_error:  # pylint: disable=protected-access
        with contextlib.suppress(OSError):
          file.close()
          os.unlink(file.name)
      raise

  parse_or_remove.removes_cut_off_uploads = True
  route_utils.GradioMultiPartParser.parse = parse_or_remove


def serve(inpainter: Inpainter, options: argparse.Namespace, examples_dir: Path) -> int:
  """Serves the app until Ctrl-C or SIGTERM; closing it deletes uploads and results."""
  examples = write_examples(examples_dir, options.examples, options.max_pixels,
                            Demo(inpainter, options.max_memory_gb).check_memory)
  app = build(inpainter, examples=examples, max_pixels=options.max_pixels,
              max_memory_gb=options.max_memory_gb,
              keep_files_s=options.keep_files_s)
  port = local_only.free_port(options.host) if options.port == 0 else options.port
  remove_cut_off_uploads()
  bound_anywhere = options.host in ('0.0.0.0', '::', '')
  hosts = (None if bound_anywhere else
           sorted({*local_only.LOCAL_NAMES, options.host.strip('[]').lower()}))
  try:
    app.launch(server_name=options.host, server_port=port, share=False, inbrowser=False,
               prevent_thread_lock=True, quiet=True, show_error=False, ssr_mode=False,
               pwa=False, mcp_server=False, enable_monitoring=False,
               max_file_size=f'{options.max_upload_mb}mb',
               allowed_paths=[str(examples_dir)],
               app_kwargs={'middleware': [local_only.middleware(hosts)]})
  except OSError as error:
    print(f'error: cannot listen on {options.host}:{port}: {error}. Pass another --port (0 '
          'picks a free one).', file=sys.stderr)
    return console.ERROR_STATUS
  shown_host = f'[{options.host}]' if ':' in options.host else options.host
  print(f'DeFINe demo running at http://{shown_host}:{port}/ (Ctrl+C to stop)', flush=True)
  try:
    with deleting_old_files(examples_dir.parent, options.keep_files_s,
                            lambda path: kept_file(app, examples_dir, path)):
      app.block_thread()
  except KeyboardInterrupt:
    pass
  finally:
    app.close()
    # Gradio deletes its cached uploads and results in the server thread's shutdown, which
    # a SIGTERM-ed process may not live to see: delete them here (private_files then
    # deletes the rest of the folder).
    route_utils.delete_files_created_by_app(app, age=None)
  return 0


if __name__ == '__main__':
  sys.exit(main())
