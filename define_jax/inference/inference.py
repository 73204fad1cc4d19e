"""Inpainting with a trained checkpoint: images of any size, explicit mask polarity, batches.

  inpainter = Inpainter.pretrained()                        # the default model shipped in the package
  inpainter = Inpainter.pretrained('faces128')              # another one, by name
  inpainter = Inpainter.from_checkpoint('runs/ffhq256')      # or a workdir / exported file
  result = inpainter(photo, mask, polarity='hole_white')   # white mask pixels = holes

JAX/Flax/NumPy/Pillow/OpenCV (no TensorFlow, no clu, ml_collections only where installed).

Size handling (`fit`): 'auto' (default) finds the faces, inpaints each face with a hole
through its aligned crop at the model's framing and the rest at native resolution (see
auto_fit.py); 'resize' scales the image so its longer side is the model's training size;
'pad' keeps the native resolution. With 'resize' and 'pad' the network's canvas is padded
to a size the U-Net accepts, the margin treated like the area beyond the image border (a
hole, which partial convolutions ignore), and the fill is scaled back. The known pixels of
the result are exactly the input's, at the input's resolution.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from define_jax.data import masks
from define_jax.faces import faces
from define_jax.files import image_files
from define_jax.files.image_files import ImageInput
from define_jax.files.image_files import InputError
from define_jax.inference import auto_fit
from define_jax.inference import memory
from define_jax.model import masking
from define_jax.model import model_file
from define_jax.model import network
from define_jax.model import weight_checks
from define_jax.runtime import data_parallel

if TYPE_CHECKING:  # Configs come from config_lib, which works without ml_collections too.
  import ml_collections

Polarity = image_files.MaskPolarity  # 'hole_white' (NVIDIA masks) or 'keep_white' (qd-imd masks).
Fit = Literal['auto', 'resize', 'pad']
FITS = ('auto', 'resize', 'pad')

# The models shipped with the package, by name, each with its model card beside it
# (pretrained/NAME_MODEL_CARD.md).
PRETRAINED_DIR = Path(__file__).parent.parent / 'pretrained'
PRETRAINED_MODELS = {name: PRETRAINED_DIR / f'{name}.msgpack'
                     for name in ('faces256', 'faces128')}
# What Inpainter.pretrained() and every command line use when no checkpoint is given: the 256²
# model with the mirror input, which fills a hidden eye from the other one (model card).
DEFAULT_MODEL = 'faces256'
PRETRAINED_MODEL = PRETRAINED_MODELS[DEFAULT_MODEL]

# Most network passes per call: each refines the previous fill a little less, and each costs
# a full network run.
MAX_PASSES = 16

# A resized mask pixel counts as known only if no hole pixel contributed to it, so hole
# content can never leak into the network's known input.
_FULLY_KNOWN = 1.0 - 1e-4


def _resize(x: jax.Array, height: int, width: int) -> jax.Array:
  """Antialiased bilinear resize of [N, H, W, C]; identity when the size already matches."""
  if x.shape[1:3] == (height, width):
    return x
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), 'linear', antialias=True)


def _network_canvas(height: int, width: int, size: int, multiple: int, fit: Fit
                    ) -> tuple[tuple[int, int], tuple[int, int]]:
  """(content height and width, canvas height and width) the network sees.

  'resize' scales the longer side to `size` (aspect ratio kept) on a size×size canvas;
  'pad' keeps the content and grows the canvas to at least size×size and a multiple of
  `multiple` (the U-Net's total downsampling) per side.
  """
  if fit == 'resize':
    scale = size / max(height, width)
    return (max(1, round(height * scale)), max(1, round(width * scale))), (size, size)
  return (height, width), memory.padded_canvas(height, width, size, multiple)


def _to_canvas(image: jax.Array, known: jax.Array, content: tuple[int, int],
               canvas: tuple[int, int]) -> tuple[jax.Array, jax.Array, tuple[int, int]]:
  """Resized image and known-mask, centred on the canvas; the margin counts as hole.

  A resized pixel is known only if all pixels it was made from are, so hole content never
  leaks into the network's known input. Returns the content's top-left corner too.
  """
  known_fraction = _resize(known, *content)
  # Normalised resize of the known pixels only, so holes do not darken their neighbours.
  image = _resize(image * known, *content) / jnp.maximum(known_fraction, 1e-6)
  known = (known_fraction >= _FULLY_KNOWN).astype(jnp.float32)
  top, left = (canvas[0] - content[0]) // 2, (canvas[1] - content[1]) // 2
  padding = ((0, 0), (top, canvas[0] - content[0] - top), (left, canvas[1] - content[1] - left),
             (0, 0))
  return jnp.pad(image * known, padding), jnp.pad(known, padding), (top, left)


def _on_pad_canvas(images: np.ndarray, known: np.ndarray, size: int, multiple: int
                   ) -> tuple[np.ndarray, np.ndarray, tuple[slice, ...]]:
  """Images and known-masks centred on fit='pad''s canvas on the host, the margin a hole
  (as _to_canvas would make it), so the compiled program depends on the canvas shape only;
  and the slice that crops results back to the photo."""
  height, width = images.shape[1:3]
  _, canvas = _network_canvas(height, width, size, multiple, 'pad')
  top, left = (canvas[0] - height) // 2, (canvas[1] - width) // 2
  padding = ((0, 0), (top, canvas[0] - height - top), (left, canvas[1] - width - left), (0, 0))
  crop = (slice(None), slice(top, top + height), slice(left, left + width))
  return np.pad(images * known, padding), np.pad(known, padding), crop


def _as_float_images(images: np.ndarray) -> np.ndarray:
  """uint8, uint16 or float [N, H, W, 3] as float32 in [0, 1]."""
  if images.dtype == np.uint8 or images.dtype == np.uint16:
    return images.astype(np.float32) / np.iinfo(images.dtype).max
  if np.issubdtype(images.dtype, np.floating):
    if not np.all((images >= 0.0) & (images <= 1.0)):  # Written so that NaN fails too.
      raise InputError(
          f'Float images must lie in [0, 1]; got range [{np.nanmin(images)}, '
          f'{np.nanmax(images)}]{" with NaNs" if np.isnan(images).any() else ""}. '
          'Divide 0–255 data by 255 or pass it as uint8.', 'unsupported')
    return images.astype(np.float32)
  raise InputError(f'Unsupported image dtype {images.dtype}: use uint8, uint16 or float in '
                   '[0, 1].', 'unsupported')


def _restore_dtype(result: np.ndarray, dtype: np.dtype) -> np.ndarray:
  if np.issubdtype(dtype, np.integer):
    return np.round(np.clip(result, 0.0, 1.0) * np.iinfo(dtype).max).astype(dtype)
  return result.astype(dtype)


def _check_fit(fit: str) -> None:
  if fit not in FITS:
    raise ValueError(f'fit={fit!r}: expected one of {FITS}.')


def _resize_known(known: np.ndarray, height: int, width: int) -> np.ndarray:
  """Resizes float [N, h, w, 1] known-masks to height×width (area, threshold at 0.5)."""
  resized = [masks.resize_mask(k[..., 0].astype(np.uint8), (height, width)) for k in known]
  return np.stack(resized)[..., None].astype(np.float32)


class Inpainter:
  """A restored model ready to inpaint; batched and data-parallel across local devices.

  Each input shape (for fit='pad': each canvas) and fit is compiled once and cached: one
  program for a single pass, and one for any number of passes above one (compiled only
  when asked for).
  """

  # Largest image or mask accepted by __call__ (height × width); set it per instance.
  max_pixels: int | None = image_files.DEFAULT_MAX_PIXELS
  # Bound on a call's estimated peak memory in GB (memory.py): larger photos are refused
  # before decoding; None: no bound. Set it per instance.
  max_memory_gb: float | None = memory.DEFAULT_MAX_MEMORY_GB
  # NaN or infinite outputs raise ValueError (never a picture); training's evaluation turns
  # this off: a diverging run is stopped by its own non-finite guard, with a checkpoint kept.
  refuse_non_finite: bool = True

  def __init__(self, variables: Mapping[str, Any], config: ml_collections.ConfigDict,
               *, step: int | None = None, devices: list[jax.Device] | None = None,
               detector: Callable[[np.ndarray], list[Any]] | None = None):
    """detector: image [H, W, 3] -> faces (with .box and .landmarks [5, 2]) for fit='auto';
    default define_jax.faces.faces.FaceDetector.pretrained(), loaded on first use."""
    self.config = config
    self._detector = detector
    # The training faces' mean landmarks (fractions of the canvas) that faces are aligned to;
    # model files written before it was stored get the measured default.
    self._face_template = config.model.face_template
    # auto_fit.FitReport of each image of the latest fit='auto' call.
    self.last_fit_reports: list[auto_fit.FitReport] = []
    self.step = step  # The training step of the checkpoint, when restored from one.
    self.image_size: int = config.model.image_size
    self._size_multiple = 2 ** config.model.layers
    # What this network's canvases cost in memory.py's model.
    self.memory_network = memory.Network(self.image_size, self._size_multiple,
                                         config.model.base_features)
    self._apply = network.create_model(config.model).apply
    # On fit='auto''s aligned face canvases the network may start from another prefill
    # (model.face_prefill: 'mirror' draws a hidden eye from the other one).
    self._face_apply = network.create_model(config.model,
                                            prefill=config.model.face_prefill).apply
    # Without its own face prefill a face canvas runs the plain program: no second compile.
    self._faces_differ = config.model.face_prefill not in (None, config.model.prefill)
    self.parallel = data_parallel.DataParallel(devices)
    self._variables = self.parallel.replicate(dict(variables))
    # `passes` is traced: any number of passes above one runs the one compiled program of a
    # shape; a single pass (the usual call) compiles no refinement loop.
    self._pipeline = jax.jit(self._inpaint_pipeline,
                             static_argnames=('fit', 'refine', 'aligned_faces'))
    # (batch shape, fit, refine) of every compilation, for users and tests to inspect.
    self.compiled_shapes: list[tuple[tuple[int, ...], str, bool]] = []

  def set_variables(self, variables: Mapping[str, Any]) -> None:
    """Inpaints with other variables of the same model (e.g. a training run's latest);
    they are an argument of the compiled programs, so nothing is recompiled."""
    self._variables = self.parallel.replicate(dict(variables))

  @classmethod
  def from_checkpoint(cls, path: str, *, step: int | None = None,
                      devices: list[jax.Device] | None = None,
                      detector: Callable[[np.ndarray], list[Any]] | None = None,
                      overrides: Sequence[str] = ()) -> Inpainter:
    """From a training workdir, its checkpoints directory or one step's directory (the
    newest readable checkpoint unless `step` is given); `overrides` (--config.FIELD=VALUE,
    e.g. --config.model.dtype=bfloat16) change its stored config.

    FileNotFoundError lists what is there when there is no checkpoint; ValueError when the
    weights do not match the checkpoint's own config.
    """
    if model_file.is_model_file(path):  # The packaged model and exported files: no Orbax.
      variables, stored_config, restored_step = model_file.read_model_file(path)
    else:
      # Orbax (about 230 modules) only for a training run's checkpoints.
      from define_jax.model import checkpoints  # pylint: disable=g-import-not-at-top
      variables, stored_config, restored_step = checkpoints.load_model(path, step)
    config = network.model_config(stored_config, path, overrides)
    model_file.check_variables_match(config, variables, path)
    return cls(variables, config, step=restored_step, devices=devices, detector=detector)

  @classmethod
  def pretrained(cls, name: str = DEFAULT_MODEL, *, devices: list[jax.Device] | None = None,
                 detector: Callable[[np.ndarray], list[Any]] | None = None,
                 overrides: Sequence[str] = ()) -> Inpainter:
    """A face model shipped with define_jax, by name (PRETRAINED_MODELS; default
    DEFAULT_MODEL). Training data, licence and scores: define_jax/pretrained/NAME_MODEL_CARD.md."""
    if name not in PRETRAINED_MODELS:
      raise ValueError(f'No packaged model {name!r}; the packaged models are '
                       f'{", ".join(PRETRAINED_MODELS)}.')
    path = PRETRAINED_MODELS[name]
    if not path.is_file():
      raise FileNotFoundError(f'The packaged model {path} is missing; reinstall define_jax or '
                              'pass a checkpoint.')
    return cls.from_checkpoint(str(path), devices=devices, detector=detector,
                               overrides=overrides)

  @classmethod
  def load(cls, path: str | None, **kwargs) -> Inpainter:
    """from_checkpoint(path); a packaged model's name (PRETRAINED_MODELS) where no file or
    folder of that name exists; the default packaged model when path is None or empty."""
    if not path:
      return cls.pretrained(**kwargs)
    if path in PRETRAINED_MODELS and not os.path.exists(path):
      return cls.pretrained(path, **kwargs)
    return cls.from_checkpoint(path, **kwargs)

  def _inpaint_pipeline(self, variables, images: jax.Array, known: jax.Array,
                        passes: jax.Array, *, fit: Fit, refine: bool,
                        aligned_faces: bool) -> jax.Array:
    self.compiled_shapes.append((tuple(images.shape), fit, refine))  # Runs only when tracing.
    _, height, width, _ = images.shape
    content, canvas = _network_canvas(height, width, self.image_size, self._size_multiple, fit)
    net_image, net_known, (top, left) = _to_canvas(images, known, content, canvas)
    apply = self._face_apply if aligned_faces else self._apply
    inpaint = functools.partial(network.inpaint, apply, variables,
                                contrast_cell=self.image_size // 4)
    fill = inpaint(net_image, net_known)
    if refine:
      # Later passes show the network the previous result as known everywhere (with the
      # original mask the partial convolutions would ignore the fill and repeat the first
      # pass); the original known pixels are restored after each pass. The all-known mask is
      # hidden from XLA behind a barrier: as a constant, XLA:CPU folds the network's mask path
      # on it (its reduce-windows, in an interpreter) at compile time, with "Constant folding
      # ... > 1s" alarms: compiling a 512² canvas (configs/ffhq512.py) took 15 s of CPU with
      # the constant, 6 s without (2-core CPU).
      everywhere = jax.lax.optimization_barrier(jnp.ones_like(net_known))
      later_pass = lambda _, fill: inpaint(fill, net_known, network_mask=everywhere)
      fill = jax.lax.fori_loop(1, passes, later_pass, fill)  # A loop, not unrolled.
    fill = _resize(fill[:, top:top + content[0], left:left + content[1]], height, width)
    return masking.composite(jnp.clip(fill, 0.0, 1.0), images, known)

  def check_memory(self, photo: Any, name: str, path: memory.Path,
                   max_memory_gb: float | None) -> int | None:
    """InputError naming the photo when `path` (a fit, or 'demo') would take one photo over
    max_memory_gb, read from a file's header before decoding; else how many photos of a
    batch to inpaint at once (None: all of them; memory.check_input)."""
    return memory.check_input(path, photo, name, max_memory_gb, network=self.memory_network)

  @property
  def detector(self) -> Callable[[np.ndarray], list[Any]]:
    if self._detector is None:
      self._detector = faces.FaceDetector.pretrained()
    return self._detector

  @property
  def face_template(self) -> np.ndarray:
    if self._face_template is None:
      return np.asarray(faces.FACE_TEMPLATE, np.float64)
    return np.asarray(self._face_template, np.float64)

  def _auto_fit(self, images: np.ndarray, known: np.ndarray, passes: int) -> np.ndarray:
    # Face canvases have the model's size, so 'resize' leaves them as they are.
    canvas_fills = lambda i, k: self.inpaint_arrays(i, k, passes=passes, fit='resize',
                                                    aligned_faces=True)
    native = lambda i, k: self.inpaint_arrays(i[None], k[None], passes=passes, fit='pad')[0]
    results, self.last_fit_reports = [], []
    for image, image_known in zip(images, known):
      result, report = auto_fit.auto_fill(image, image_known, self.detector,
                                          self.face_template, faces.FRAMING_SPREAD,
                                          self.image_size, canvas_fills,
                                          native)
      results.append(result)
      self.last_fit_reports.append(report)
    return np.stack(results)

  def inpaint_arrays(self, images: np.ndarray, known: np.ndarray, *, passes: int = 1,
                     fit: Fit = 'resize', aligned_faces: bool = False) -> np.ndarray:
    """Composites float32 [N, H, W, 3] from images in [0, 1] and known-masks [N, H, W, 1].

    The default suits images at the model's size (training-time evaluation, study); photos
    of users' sizes: fit='auto', as __call__ does by default. aligned_faces: the images are
    faces on the model's template (fit='auto' passes its face canvases), so
    model.face_prefill applies.
    """
    if not 1 <= passes <= MAX_PASSES:
      raise ValueError(f'passes={passes}: need 1 to {MAX_PASSES} passes (later passes change '
                       'little).')
    _check_fit(fit)
    if images.shape[:3] != known.shape[:3] or known.shape[3:] != (1,):
      raise ValueError(f'Images {images.shape} and masks {known.shape} do not match: need '
                       '[N, H, W, 3] and [N, H, W, 1].')
    if fit == 'auto':  # Each face and the native fill go through the other fits, checked there.
      return self._auto_fit(images.astype(np.float32), known.astype(np.float32), passes)
    images, known = images.astype(np.float32), known.astype(np.float32)
    if fit == 'pad':  # Shape buckets: every photo size of one canvas shares one program.
      images, known, crop = _on_pad_canvas(images, known, self.image_size, self._size_multiple)
    result = self.parallel(
        lambda v, i, k: self._pipeline(v, i, k, np.int32(passes), fit=fit, refine=passes > 1,
                                       aligned_faces=aligned_faces and self._faces_differ),
        self._variables, images, known)
    if fit == 'pad':
      result = result[crop]
    if self.refuse_non_finite:
      weight_checks.check_finite_result(result)
    return result

  def __call__(self, image: ImageInput | Sequence[ImageInput], mask: Any, *,
               polarity: Polarity, passes: int = 1, fit: Fit = 'auto',
               resize_mask: bool = False, allow_all_hole: bool = False,
               max_pixels: int | None = None, max_memory_gb: float | None = None,
               mask_threshold: float = image_files.DEFAULT_MASK_THRESHOLD
               ) -> np.ndarray | Image.Image:
    """Inpaints one image [H, W, 3] or a batch [N, H, W, 3] (NumPy, PIL or file paths).

    Args:
      image: uint8, uint16 or float in [0, 1]; a PIL image or a file path of any mode (16-bit
        greys are read as uint16, transparency is flattened onto white); or a list of these
        of one size, inpainted as a batch (the result is then a NumPy batch).
      mask: same height and width as the image (or a batch or list of them): bool, integer
        or float in [0, 1], [H, W], [H, W, 1] or [H, W, 3]; a PIL image or a file path is
        read as greyscale. A mask whose only values are 0 and 1 is binary (1 = white).
      polarity: which mask pixels are holes: 'hole_white' (e.g. NVIDIA masks) or
        'keep_white' (e.g. qd-imd masks). Required, because guessing it fails silently.
      passes: network passes (1 to MAX_PASSES); passes after the first refine the previous
        result, in a loop inside one compiled program (compiled on the first call with
        passes > 1).
      fit: 'auto' (faces through their aligned crops, the rest at native resolution;
        `last_fit_reports` then says what was done), 'resize' (to the model's size) or
        'pad' (native resolution), see the module docstring.
      resize_mask: resize a mask of another size to the image's (area, threshold at 0.5)
        instead of raising InputError.
      allow_all_hole: inpaint a mask that marks every pixel as a hole (the network then
        has nothing to condition on) instead of raising InputError.
      max_pixels: largest accepted image or mask (height × width), checked from the header
        of files before decoding; default self.max_pixels (image_files.DEFAULT_MAX_PIXELS).
      max_memory_gb: refuse an image whose inpainting with `fit` would peak over this many
        GB by memory.py's measured model, checked from a file's header before decoding;
        a batch that would is inpainted a part at a time (each part decoded when its turn
        comes), so that only a single photo too large is refused; default
        self.max_memory_gb (4).
      mask_threshold: grey level (fraction of white) above which a mask pixel is white.

    Returns:
      The composite, same type, size and dtype as `image` (a PIL image keeps its mode if it
      is 'RGB' or 'L', 16-bit greys come back as 'I;16', others as 'RGB').

    Raises:
      InputError (a ValueError) naming the file or argument for anything unusable.
    """
    _check_fit(fit)
    at_once = self.check_memory(image, image_files.source_name(image, 'The image'), fit,
                                self.max_memory_gb if max_memory_gb is None else max_memory_gb)
    inpaint = functools.partial(
        self._inpaint, polarity=polarity, passes=passes, fit=fit, resize_mask=resize_mask,
        allow_all_hole=allow_all_hole,
        max_pixels=self.max_pixels if max_pixels is None else max_pixels,
        mask_threshold=mask_threshold)
    if at_once is None:
      return inpaint(image, mask)
    return self._in_parts(inpaint, image, mask, at_once)

  def _in_parts(self, inpaint: Callable[..., np.ndarray], images: Sequence[ImageInput],
                masks: Any, at_once: int) -> np.ndarray:
    """inpaint(images, masks, first) on `at_once` photos at a time; the batch of results."""
    if not isinstance(masks, (list, tuple, np.ndarray)) or len(masks) != len(images):
      count = len(masks) if isinstance(masks, (list, tuple, np.ndarray)) else 1
      raise InputError(f'{len(images)} images but {count} masks.', 'ragged batch')
    if isinstance(images, (list, tuple)):  # From the headers, before a part is inpainted.
      sizes = [memory.photo_size(item) for item in images]
      # (height, width); a header that cannot be read is left to its reader to report.
      image_files.check_one_shape([(size or sizes[0])[1::-1] for size in sizes], 'image')
    results, reports = [], []
    for first in range(0, len(images), at_once):
      part = slice(first, first + at_once)
      results.append(inpaint(images[part], masks[part], first=first))
      reports += self.last_fit_reports
    self.last_fit_reports = reports
    return np.concatenate(results)

  def _inpaint(self, image: ImageInput | Sequence[ImageInput], mask: Any, *,
               polarity: Polarity, passes: int, fit: Fit, resize_mask: bool,
               allow_all_hole: bool, max_pixels: int | None, mask_threshold: float,
               first: int = 0) -> np.ndarray | Image.Image:
    """__call__ after the memory check, on a batch's photos from index `first`."""
    limit = max_pixels
    source = image
    if isinstance(source, (str, os.PathLike)):
      source = image_files.open_input(source, os.fspath(source), limit)
    pixels = image_files.image_array(source, limit, first)
    batched = pixels.ndim == 4
    images = _as_float_images(pixels if batched else pixels[None])
    mask_name = image_files.source_name(mask, 'The mask')
    known = image_files.known_pixels(image_files.mask_array(mask, batched, limit, first),
                                     polarity, mask_threshold,
                                     mask_name)[..., None].astype(np.float32)
    if known.shape[0] != images.shape[0]:
      raise InputError(f'{images.shape[0]} images but {known.shape[0]} masks.', 'ragged batch')
    height, width = images.shape[1:3]
    if known.shape[1:3] != (height, width):
      if not resize_mask:
        raise InputError(
            f'{mask_name} is {known.shape[2]}×{known.shape[1]} but the image is '
            f'{width}×{height}. Pass resize_mask=True to resize the mask to the image.',
            'size mismatch')
      known = _resize_known(known, height, width)
    if not allow_all_hole:
      all_hole = np.flatnonzero(known.reshape(len(known), -1).max(axis=1) == 0)
      if all_hole.size:
        which = f' (image {first + all_hole[0]} of the batch)' if batched else ''
        raise InputError(
            f'{mask_name}{which} marks every pixel as a hole: the network would have nothing to '
            'condition on. Check the polarity, or pass allow_all_hole=True (--allow_all_hole) '
            'if that is what you want.', 'all hole')
    result = self.inpaint_arrays(images, known, passes=passes, fit=fit)
    result = _restore_dtype(result if batched else result[0], pixels.dtype)
    if isinstance(source, Image.Image):
      return image_files.result_image(result, source)
    return result
