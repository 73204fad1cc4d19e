"""Face finding with five landmarks: MTCNN (Zhang et al., 2016) on JAX, no PyTorch.

`FaceDetector.pretrained()(image)` returns the faces of a photo, best first, each with a
box, a probability and five landmarks. The networks are define_jax.faces.face_models, the weights
facenet-pytorch 2.6.0's (MIT licence; converted by define_jax/tools/port_mtcnn.py, see
pretrained/MTCNN_MODEL_CARD.md). The pipeline follows facenet-pytorch's detect_face:
an image pyramid through PNet, then RNet on 24x24 and ONet on 48x48 crops of the
surviving boxes, with non-maximum suppression and box calibration between stages.

Coordinates: x to the right, y down, in pixels, with the centre of pixel (row r, column c)
at (x=c, y=r); a box gives its outer edges, so the whole image is the box
(-0.5, -0.5, W - 0.5, H - 0.5). This is the convention of skimage.transform and OpenCV.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import cv2
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from define_jax.faces import face_models
from define_jax.files.image_files import InputError

PRETRAINED_DETECTOR = Path(__file__).parent.parent / 'pretrained' / 'mtcnn.msgpack'
NETS = ('pnet', 'rnet', 'onet')
_MODELS = {'pnet': face_models.PNet(), 'rnet': face_models.RNet(), 'onet': face_models.ONet()}
_INPUT_SIDES = {'pnet': 12, 'rnet': 24, 'onet': 48}

# facenet-pytorch's defaults: face-probability thresholds of PNet, RNet and ONet, and the
# ratio between neighbouring pyramid scales (about 1/sqrt(2): two levels halve the area).
THRESHOLDS = (0.6, 0.7, 0.7)
PYRAMID_FACTOR = 0.709
# Pixels of the first (largest) pyramid level at most: bounds memory and time on huge
# photos (a 24-megapixel photo searches faces from 42 pixels instead of 20).
_MAX_LEVEL_PIXELS = 2_000_000
# RNet and ONet run on batches padded to one of these sizes (fewer compilations); more
# boxes go through in chunks of the largest.
_BATCH_BUCKETS = (16, 64, 256)

# Mean five landmarks (left eye, right eye, nose, left and right mouth corner, left/right
# as seen in the image) of the training faces, as fractions of the model's square training
# canvas (0 = left/top edge, 1 = right/bottom edge; canvas_points gives a canvas's pixel
# coordinates, the convention of Face.landmarks), averaged with their mirror image as
# the random left-right flips of training show the faces. Measured with
#   python -m define_jax.tools.measure_face_template --image_dir ../shared/data/faces \
#       --num_images 2000
# on 2,000 evenly spaced photos of the training split of the UTKFace faces the packaged
# model learnt from (validation_fraction 0.1; training shows each whole 200x200 photo
# resized to 128x128): a face in 1,979 of them; standard deviation across faces
# 0.016-0.018 (eyes), 0.027-0.028 (nose), 0.025-0.033 (mouth corners) of the side;
# unmirrored mean left eye (0.2975, 0.2893), right eye (0.6928, 0.2896), nose
# (0.4914, 0.5221), mouth corners (0.3204, 0.6938), (0.6695, 0.6931).
FACE_TEMPLATE = np.array([[0.3023, 0.2894], [0.6977, 0.2894], [0.5000, 0.5221],
                          [0.3254, 0.6935], [0.6746, 0.6935]], np.float32)


class FramingSpread(NamedTuple):
  """How far a face may sit from the template and still count as framed like the training
  faces: the similarity transform onto the template within these bounds."""

  log_scale: float  # |log| of its scale.
  rotation: float  # |rotation|, radians.
  shift: float  # Largest per-axis shift of the landmarks' centre, fraction of the side.


# FRAMING_SPREAD holds this percentile of the training faces' offsets from the template
# (and of their mirror images): how far the network has seen faces sit. Measured by
# define_jax.tools.measure_face_template on the same 1,979 training faces as FACE_TEMPLATE
# (median 0.0217, 0.97 degrees, 0.0100; 95th percentile 0.0750, 3.63 degrees, 0.0239). The
# percentile was chosen on 600 other training photos at 128² (fit='auto', NVIDIA masks):
# 32.74 dB over all bands with the 99th, 32.63 dB with the 95th, 32.76 dB with
# fit='resize' (the network on the photo as it is), 31.93 dB warping every face.
FRAMING_PERCENTILE = 99
FRAMING_SPREAD = FramingSpread(log_scale=0.1234, rotation=0.1065, shift=0.0378)


def canvas_fractions(points: np.ndarray, side: float) -> np.ndarray:
  """Pixel coordinates (centres at integers, as Face.landmarks) in a square of `side`
  pixels -> fractions of the square (0 and 1 at its edges), as FACE_TEMPLATE is stored."""
  return (np.asarray(points) + 0.5) / side


def canvas_points(fractions: np.ndarray, side: float) -> np.ndarray:
  """Inverse of canvas_fractions: e.g. FACE_TEMPLATE in a side x side canvas's pixels."""
  return np.asarray(fractions) * side - 0.5


@dataclasses.dataclass(frozen=True, eq=False)
class Face:
  box: np.ndarray  # float32 [4]: x0, y0, x1, y1 (outer edges) in the input image's pixels
  score: float  # ONet's face probability
  landmarks: np.ndarray  # float32 [5, 2] (x, y): left eye, right eye, nose, left and right
  # mouth corner, left/right as seen in the image


def check_params(stored: Mapping[str, Any]) -> None:
  """ValueError unless `stored` has the parameters of PNet, RNet and ONet, shapes included."""
  for net in NETS:
    if net not in stored:
      raise ValueError(f'MTCNN weights lack {net!r}; got {sorted(stored)}.')
    side = _INPUT_SIDES[net]
    expected = jax.eval_shape(  # Traced only: nothing compiles.
        lambda: _MODELS[net].init(jax.random.key(0), jnp.zeros((1, side, side, 3))))['params']
    expected_shapes = jax.tree.map(lambda x: tuple(x.shape), expected)
    actual_shapes = jax.tree.map(lambda x: tuple(np.shape(x)), dict(stored[net]))
    if expected_shapes != actual_shapes:
      raise ValueError(f'MTCNN {net}: parameter shapes {actual_shapes}, expected '
                       f'{expected_shapes}.')


def load_params(path: str | Path = PRETRAINED_DETECTOR) -> dict[str, Any]:
  """{'pnet', 'rnet', 'onet'} parameters (float32) from a file written by port_mtcnn."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'MTCNN weights {path} not found; write them with '
                            'python -m define_jax.tools.port_mtcnn.')
  stored = flax.serialization.msgpack_restore(path.read_bytes())
  check_params(stored)
  return {net: jax.tree.map(lambda x: np.asarray(x, np.float32), stored[net]) for net in NETS}


@jax.jit
def _run_pnet(params: Any, canvas: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  return _MODELS['pnet'].apply({'params': params}, canvas, valid)


def _padded_side(side: int) -> int:
  """A canvas side rounded up to a bucket (4 per octave, multiples of 8), so that photos
  of similar sizes share PNet's compilation."""
  octaves = math.ceil(4 * math.log2(max(side, 8) / 8)) / 4
  return 8 * math.ceil(2**octaves - 1e-9)


def smallest_face(height: int, width: int, min_face_size: int) -> float:
  """The smallest face side (pixels) searched for: min_face_size, or more in photos so large
  that the first pyramid level would exceed _MAX_LEVEL_PIXELS."""
  return max(min_face_size, 12.0 * math.sqrt(height * width / _MAX_LEVEL_PIXELS))


def _pyramid(height: int, width: int, min_face_size: int) -> list[tuple[float, int, int]]:
  """(scale, height, width) of each level: 12-pixel windows find the smallest faces at the
  first level, 1/PYRAMID_FACTOR times larger ones at each next."""
  scale = 12.0 / smallest_face(height, width, min_face_size)
  shorter, levels = min(height, width) * scale, []
  while shorter >= 12:
    levels.append((scale, int(height * scale + 1), int(width * scale + 1)))
    scale *= PYRAMID_FACTOR
    shorter *= PYRAMID_FACTOR
  return levels


def _pack(sizes: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], int, int]:
  """(top, left) of each (height, width), largest first, on shelves as wide as the first
  two side by side; even offsets, 2 pixels apart (PNet's `valid` rules). Also the height
  and width used. One canvas means one PNet compilation per photo size, not one per level."""
  shelf_width = sizes[0][1] + (sizes[1][1] + 3 if len(sizes) > 1 else 0)
  positions, top, left, shelf_height = [], 0, 0, 0
  for height, width in sizes:
    if left and left + width > shelf_width:
      top, left, shelf_height = top + shelf_height + 2 + (top + shelf_height) % 2, 0, 0
    positions.append((top, left))
    left += width + 2 + width % 2
    shelf_height = max(shelf_height, height)
  return positions, top + shelf_height, shelf_width


@jax.jit
def _run_rnet(params: Any, crops: jax.Array) -> tuple[jax.Array, jax.Array]:
  return _MODELS['rnet'].apply({'params': params}, crops)


@jax.jit
def _run_onet(params: Any, crops: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  return _MODELS['onet'].apply({'params': params}, crops)


def _normalise(pixels255: np.ndarray) -> np.ndarray:
  """0..255 pixels -> the networks' input range, (x - 127.5) / 128."""
  return ((pixels255 - 127.5) * 0.0078125).astype(np.float32)


def _in_batches(run, params: Any, crops: np.ndarray) -> list[np.ndarray]:
  """run(params, crops) over batches padded to _BATCH_BUCKETS; outputs cut to len(crops)."""
  outputs = []
  for start in range(0, len(crops), _BATCH_BUCKETS[-1]):
    chunk = crops[start:start + _BATCH_BUCKETS[-1]]
    bucket = next(b for b in _BATCH_BUCKETS if b >= len(chunk))
    padded = np.zeros((bucket,) + chunk.shape[1:], np.float32)
    padded[:len(chunk)] = chunk
    outputs.append([np.asarray(x)[:len(chunk)] for x in run(params, padded)])
  return [np.concatenate(parts) for parts in zip(*outputs)]


def rgb255(image: np.ndarray) -> np.ndarray:
  """float64 [H, W, 3] on a 0..255 scale from uint8, uint16 or float [0, 1] pixels, grey
  [H, W] or [H, W, 1], RGB or RGBA (flattened onto white, as a viewer shows it)."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or min(image.shape[:2]) < 1:
    raise InputError(f'Face detection expects an image [H, W], [H, W, 1], [H, W, 3] or '
                     f'[H, W, 4]; got shape {image.shape}.', 'unsupported')
  if image.dtype == np.uint8:
    pixels, white = image.astype(np.float64), 255.0  # Exactly the values MTCNN was run on.
  elif image.dtype == np.uint16:
    pixels, white = image * (255.0 / 65535.0), 255.0
  elif np.issubdtype(image.dtype, np.floating):
    if not np.all((image >= 0.0) & (image <= 1.0)):  # Written so that NaN fails too.
      raise InputError(f'Float images must lie in [0, 1]; got range [{np.nanmin(image)}, '
                       f'{np.nanmax(image)}].', 'unsupported')
    pixels, white = image * 255.0, 255.0
  else:
    raise InputError(f'Unsupported image dtype {image.dtype}: use uint8, uint16 or float in '
                     '[0, 1].', 'unsupported')
  if pixels.shape[-1] == 4:
    alpha = pixels[..., 3:] / white
    pixels = pixels[..., :3] * alpha + white * (1.0 - alpha)
  if pixels.shape[-1] == 1:
    pixels = np.repeat(pixels, 3, axis=-1)
  return np.asarray(pixels, np.float64)


class _AreaResizer:
  """PyTorch's interpolate(mode='area') (adaptive average pooling) of crops of one image,
  exact, from the image's summed-area table. Crops may reach beyond the image, which is
  then black (0), as in the original MTCNN: the face keeps its proportions."""

  def __init__(self, pixels255: np.ndarray) -> None:
    # [H + 1, W + 1, 3], a zero row and column first; OpenCV's is ~20x faster than cumsum.
    self._table = cv2.integral(np.ascontiguousarray(pixels255, np.float64), sdepth=cv2.CV_64F)

  @staticmethod
  def _bins(start: np.ndarray, stop: np.ndarray, out: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, out] first and one-past-last input index of each output cell (adaptive pooling)."""
    size, i = (stop - start)[:, None], np.arange(out)
    return start[:, None] + i * size // out, start[:, None] + (-((-(i + 1) * size) // out))

  def crops(self, windows: np.ndarray, height: int, width: int) -> np.ndarray:
    """windows [N, 4] int (row0, row1, col0, col1), half-open -> [N, height, width, 3]."""
    r0, r1 = self._bins(windows[:, 0], windows[:, 1], height)
    c0, c1 = self._bins(windows[:, 2], windows[:, 3], width)
    area = (r1 - r0)[:, :, None, None] * (c1 - c0)[:, None, :, None]
    t = self._table
    r0, r1 = (np.clip(r, 0, t.shape[0] - 1)[:, :, None] for r in (r0, r1))
    c0, c1 = (np.clip(c, 0, t.shape[1] - 1)[:, None, :] for c in (c0, c1))
    return (t[r1, c1] - t[r0, c1] - t[r1, c0] + t[r0, c0]) / area


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = 'union',
         inclusive: bool = False) -> np.ndarray:
  """Indices kept by greedy non-maximum suppression, best score first.

  mode 'union': overlap = intersection / union; 'min': intersection / the smaller area.
  inclusive: widths are x1 - x0 + 1 (facenet-pytorch's last stage), else x1 - x0
  (torchvision's nms, its first two stages).
  """
  one = 1.0 if inclusive else 0.0
  x0, y0, x1, y1 = boxes.T
  areas = (x1 - x0 + one) * (y1 - y0 + one)
  order = np.argsort(-scores, kind='stable')
  keep = []
  while order.size:
    best, rest = order[0], order[1:]
    keep.append(best)
    width = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]) + one)
    height = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]) + one)
    inter = width * height
    if mode == 'min':
      overlap = inter / np.minimum(areas[best], areas[rest])
    else:
      overlap = inter / (areas[best] + areas[rest] - inter)
    order = rest[overlap <= threshold]
  return np.asarray(keep, np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
  """Boxes grown to squares about their centres (facenet-pytorch's rerec)."""
  boxes = boxes.copy()
  width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  side = np.maximum(width, height)
  boxes[:, 0] += width * 0.5 - side * 0.5
  boxes[:, 1] += height * 0.5 - side * 0.5
  boxes[:, 2:4] = boxes[:, 0:2] + side[:, None]
  return boxes


def _calibrate(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  """Boxes moved by regression offsets in units of their inclusive size (bbreg)."""
  size = np.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1] * 2, axis=1)
  return boxes + offsets * size


def _crop_windows(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
  """(kept, windows): which boxes (1-based inclusive pixel corners) overlap the image, and
  their pixels as half-open 0-based (row0, row1, col0, col1), which may reach outside.

  facenet-pytorch cuts the outside part off and stretches the rest; the original MTCNN's
  black fill (kept here) is what keeps landmarks right on faces cut by the image border.
  """
  corners = np.trunc(boxes[:, :4]).astype(np.int64)
  windows = np.stack([corners[:, 1] - 1, corners[:, 3], corners[:, 0] - 1, corners[:, 2]], axis=1)
  row0, row1, col0, col1 = windows.T
  kept = (row0 < height) & (row1 > 0) & (col0 < width) & (col1 > 0) & (row1 > row0) & (col1 > col0)
  return kept, windows[kept]


class FaceDetector:
  """MTCNN: image -> faces with boxes, probabilities and five landmarks."""

  def __init__(self, params: Mapping[str, Any]) -> None:
    check_params(params)
    self._params = jax.device_put({net: params[net] for net in NETS})  # Once, not per call.

  @classmethod
  def pretrained(cls) -> 'FaceDetector':
    """The detector with the shipped weights (define_jax/pretrained/mtcnn.msgpack)."""
    return cls(load_params(PRETRAINED_DETECTOR))

  def _proposals(self, resizer: _AreaResizer, height: int, width: int,
                 min_face_size: int) -> np.ndarray:
    """Stage 1: [N, 9] (x0, y0, x1, y1, score, 4 offsets), 1-based inclusive corners."""
    levels = _pyramid(height, width, min_face_size)
    if not levels:
      return np.zeros((0, 5))
    positions, used_h, used_w = _pack([(h, w) for _, h, w in levels])
    canvas = np.zeros((1, _padded_side(used_h), _padded_side(used_w), 3), np.float32)
    valid = np.zeros(canvas.shape[:3], bool)
    whole = np.array([[0, height, 0, width]])
    for (_, level_h, level_w), (top, left) in zip(levels, positions):
      canvas[0, top:top + level_h, left:left + level_w] = _normalise(
          resizer.crops(whole, level_h, level_w))[0]
      valid[0, top:top + level_h, left:left + level_w] = True
    all_offsets, all_probs = (np.asarray(x)[0] for x in _run_pnet(self._params['pnet'], canvas,
                                                                   valid))
    found = []
    for (scale, level_h, level_w), (top, left) in zip(levels, positions):
      cells_h, cells_w = math.ceil((level_h - 4) / 2) - 3, math.ceil((level_w - 4) / 2) - 3
      cells = np.s_[top // 2:top // 2 + cells_h, left // 2:left // 2 + cells_w]
      offsets, probs = all_offsets[cells], all_probs[cells]
      rows, cols = np.nonzero(probs >= THRESHOLDS[0])
      if rows.size:
        xy = np.stack([cols, rows], axis=1).astype(np.float64)
        boxes = np.concatenate([np.floor((2 * xy + 1) / scale),  # A 12x12 window, stride 2.
                                np.floor((2 * xy + 12) / scale),
                                probs[rows, cols, None], offsets[rows, cols]], axis=1)
        found.append(boxes[_nms(boxes[:, :4], boxes[:, 4], 0.5)])
    if not found:
      return np.zeros((0, 5))
    boxes = np.concatenate(found)
    boxes = boxes[_nms(boxes[:, :4], boxes[:, 4], 0.7)]
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
    calibrated = boxes[:, :4] + boxes[:, 5:9] * size
    return _square(np.concatenate([calibrated, boxes[:, 4:5]], axis=1))

  def __call__(self, image: np.ndarray, *, min_face_size: int = 20) -> list[Face]:
    """The faces in `image` ([H, W] or [H, W, 1|3|4]; uint8, uint16 or float in [0, 1]),
    best score first. Faces smaller than `min_face_size` pixels (in photos over 5.5 megapixels
    possibly more: `smallest_face`) may be missed."""
    if min_face_size < 12:
      raise ValueError(f'min_face_size must be at least 12 (pixels, the side of PNet\'s '
                       f'window); got {min_face_size}.')
    pixels = rgb255(image)
    height, width = pixels.shape[:2]
    resizer = _AreaResizer(pixels)
    boxes = self._proposals(resizer, height, width, min_face_size)

    # Stage 2: RNet rejects most proposals and refines the rest.
    kept, windows = _crop_windows(boxes, width, height)
    boxes = boxes[kept]
    if len(boxes):
      offsets, scores = _in_batches(_run_rnet, self._params['rnet'],
                                    _normalise(resizer.crops(windows, 24, 24)))
      passed = scores > THRESHOLDS[1]
      boxes = np.concatenate([boxes[passed, :4], scores[passed, None]], axis=1)
      pick = _nms(boxes[:, :4], boxes[:, 4], 0.7)
      boxes = _square(np.concatenate([_calibrate(boxes[pick, :4], offsets[passed][pick]),
                                      boxes[pick, 4:5]], axis=1))

    # Stage 3: ONet scores the final boxes and places the landmarks.
    kept, windows = _crop_windows(boxes, width, height)
    boxes = boxes[kept]
    if not len(boxes):
      return []
    offsets, points, scores = _in_batches(_run_onet, self._params['onet'],
                                          _normalise(resizer.crops(windows, 48, 48)))
    passed = scores > THRESHOLDS[2]
    boxes, offsets, points, scores = boxes[passed], offsets[passed], points[passed], scores[passed]
    size = boxes[:, 2:4] - boxes[:, 0:2] + 1
    landmarks = np.stack([points[:, :5], points[:, 5:]], axis=2) * size[:, None, :] \
        + boxes[:, None, 0:2] - 1
    boxes = _calibrate(boxes[:, :4], offsets)
    pick = _nms(boxes, scores, 0.7, mode='min', inclusive=True)
    # 1-based inclusive corners (facenet-pytorch's) -> outer edges, pixel centres at integers.
    return [Face(box=(boxes[i] - np.array([1.5, 1.5, 0.5, 0.5])).astype(np.float32),
                 score=float(scores[i]),
                 landmarks=(landmarks[i] - 0.5).astype(np.float32))
            for i in pick]
