"""Face finding: the MTCNN port against PyTorch, the weights file, detection on real photos."""

import json
import pickle

import jax
import numpy as np
import pytest
import skimage.color
import skimage.data
import torch
from PIL import Image
from torch import nn

from define_jax.data import image_folder
from define_jax.faces import face_models
from define_jax.faces import faces
from define_jax.files.image_files import InputError
from define_jax.tools import measure_face_template
from define_jax.tools import port_mtcnn


def _torch_nets() -> dict[str, nn.Module]:
  """facenet-pytorch's PNet, RNet and ONet, written out independently (same layer names)."""

  def block(in_ch, out_ch, kernel, pool=None):
    layers = [nn.Conv2d(in_ch, out_ch, kernel), nn.PReLU(out_ch)]
    return layers + ([nn.MaxPool2d(*pool, ceil_mode=True)] if pool else [])

  class Net(nn.Module):

    def __init__(self, convs, dense, heads):
      super().__init__()
      for i, layers in enumerate(convs, 1):
        setattr(self, f'conv{i}', layers[0])
        setattr(self, f'prelu{i}', layers[1])
        setattr(self, f'pool{i}', layers[2] if len(layers) > 2 else nn.Identity())
      self.depth, self.dense_index, self.heads = len(convs), len(convs) + 1, heads
      if dense:
        setattr(self, f'dense{self.dense_index}', nn.Linear(*dense))
        setattr(self, f'prelu{self.dense_index}', nn.PReLU(dense[1]))
      for name, layer in heads.items():
        setattr(self, name, layer)

    def forward(self, x):
      for i in range(1, self.depth + 1):
        x = getattr(self, f'pool{i}')(getattr(self, f'prelu{i}')(getattr(self, f'conv{i}')(x)))
      if hasattr(self, f'dense{self.dense_index}'):
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        x = getattr(self, f'prelu{self.dense_index}')(getattr(self, f'dense{self.dense_index}')(x))
      return {name: getattr(self, name)(x) for name in self.heads}

  return {
      'pnet': Net([block(3, 10, 3, (2, 2)), block(10, 16, 3), block(16, 32, 3)], None,
                  {'conv4_1': nn.Conv2d(32, 2, 1), 'conv4_2': nn.Conv2d(32, 4, 1)}),
      'rnet': Net([block(3, 28, 3, (3, 2)), block(28, 48, 3, (3, 2)), block(48, 64, 2)],
                  (576, 128), {'dense5_1': nn.Linear(128, 2), 'dense5_2': nn.Linear(128, 4)}),
      'onet': Net([block(3, 32, 3, (3, 2)), block(32, 64, 3, (3, 2)), block(64, 64, 3, (2, 2)),
                   block(64, 128, 2)], (1152, 256),
                  {'dense6_1': nn.Linear(256, 2), 'dense6_2': nn.Linear(256, 4),
                   'dense6_3': nn.Linear(256, 10)}),
  }


def _torch_state_dict(params) -> dict[str, torch.Tensor]:
  """define_jax parameters back in PyTorch's names and layouts."""
  state = {}
  for layer, values in params.items():
    for kind, value in values.items():
      value = np.asarray(value)
      if kind == 'negative_slope':
        state[f'{layer}.weight'] = value
      elif kind == 'bias':
        state[f'{layer}.bias'] = value
      else:
        state[f'{layer}.weight'] = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
  return {name: torch.from_numpy(np.array(v)) for name, v in state.items()}


@pytest.fixture(scope='module')
def params():
  return faces.load_params()


@pytest.fixture(scope='module')
def detector(params):
  return faces.FaceDetector(params)


def test_ported_nets_match_pytorch(params):
  """Same outputs as PyTorch nets loaded with the weights transposed back, on inputs whose
  odd sizes exercise the partial pooling windows of ceil_mode."""
  rng = np.random.default_rng(0)
  sizes = {'pnet': (2, 37, 29), 'rnet': (5, 24, 24), 'onet': (5, 48, 48)}
  heads = {'pnet': ('conv4_2', 'conv4_1'), 'rnet': ('dense5_2', 'dense5_1'),
           'onet': ('dense6_2', 'dense6_3', 'dense6_1')}
  for net, torch_net in _torch_nets().items():
    torch_net.load_state_dict(_torch_state_dict(params[net]))
    images = rng.uniform(-1, 1, sizes[net] + (3,)).astype(np.float32)
    with torch.no_grad():
      expected = torch_net(torch.from_numpy(images).permute(0, 3, 1, 2))
    outputs = faces._MODELS[net].apply({'params': params[net]}, images)
    for name, output in zip(heads[net], outputs):
      reference = expected[name]
      if reference.shape[1] == 2:  # The face-probability head: softmax, face channel.
        reference = torch.softmax(reference, dim=1)[:, 1]
      elif reference.ndim == 4:
        reference = reference.permute(0, 2, 3, 1)
      np.testing.assert_allclose(output, reference.numpy(), atol=1e-4, err_msg=f'{net} {name}')


def test_pnet_on_a_packed_canvas_matches_each_image_alone(params):
  """Two images of odd sizes (partial pooling windows) packed the way faces._pack does."""
  rng = np.random.default_rng(1)
  images = [rng.uniform(-1, 1, (1, 23, 31, 3)).astype(np.float32),
            rng.uniform(-1, 1, (1, 15, 17, 3)).astype(np.float32)]
  positions, height, width = faces._pack([image.shape[1:3] for image in images])
  canvas = rng.uniform(-1, 1, (1, height + 5, width + 6, 3)).astype(np.float32)
  valid = np.zeros(canvas.shape[:3], bool)
  for image, (top, left) in zip(images, positions):
    canvas[:, top:top + image.shape[1], left:left + image.shape[2]] = image
    valid[:, top:top + image.shape[1], left:left + image.shape[2]] = True
  pnet = face_models.PNet()
  packed = pnet.apply({'params': params['pnet']}, canvas, valid)
  for image, (top, left) in zip(images, positions):
    for alone, together in zip(pnet.apply({'params': params['pnet']}, image), packed):
      cells = together[:, top // 2:top // 2 + alone.shape[1], left // 2:left // 2 + alone.shape[2]]
      np.testing.assert_allclose(cells, alone, atol=1e-5)


def test_legacy_torch_file_round_trip(tmp_path):
  """port_mtcnn reads torch.save's legacy format without PyTorch, and refuses other code."""
  nets = _torch_nets()
  path = tmp_path / 'rnet.pt'
  torch.save(nets['rnet'].state_dict(), path, _use_new_zipfile_serialization=False)
  loaded = port_mtcnn.load_legacy_state_dict(path)
  for name, tensor in nets['rnet'].state_dict().items():
    np.testing.assert_array_equal(loaded[name], tensor.numpy())
  faces.check_params({net: port_mtcnn.to_flax(
      {k: v.numpy() for k, v in nets[net].state_dict().items()}) for net in faces.NETS})

  hostile = tmp_path / 'hostile.pt'
  with open(hostile, 'wb') as f:
    for header in (0x1950A86A20F9469CFC6C, 1001, {'little_endian': True}):
      pickle.dump(header, f, protocol=2)
    pickle.dump(print, f, protocol=2)  # Stands for any callable a file could smuggle in.
  with pytest.raises(pickle.UnpicklingError, match='print'):
    port_mtcnn.load_legacy_state_dict(hostile)


def test_port_tool_writes_what_the_detector_loads(tmp_path, capsys):
  nets = _torch_nets()
  for net, module in nets.items():
    torch.save(module.state_dict(), tmp_path / f'{net}.pt', _use_new_zipfile_serialization=False)
  out = tmp_path / 'out' / 'mtcnn.msgpack'
  port_mtcnn.main(['--input_dir', str(tmp_path), '--out', str(out)])
  loaded = faces.load_params(out)
  np.testing.assert_array_equal(loaded['onet']['dense6_3']['kernel'],
                                nets['onet'].dense6_3.weight.detach().numpy().T)
  written = out.read_bytes()
  for argv in (['--input_dir', str(tmp_path), '--out', str(out)],  # Would overwrite.
               ['--input_dir', str(tmp_path / 'none'), '--out', str(tmp_path / 'new')]):
    with pytest.raises(SystemExit) as exit_info:
      port_mtcnn.main(argv)
    assert exit_info.value.code == 2
  assert out.read_bytes() == written and not (tmp_path / 'new').exists()
  assert 'exists' in capsys.readouterr().err


def test_shipped_detector_is_small_and_has_a_card():
  # The folder's 32 MiB budget, shared with the inpainting models: test_pretrained.
  assert faces.PRETRAINED_DETECTOR.stat().st_size <= 4 * 2**20
  assert (faces.PRETRAINED_DETECTOR.parent / 'MTCNN_MODEL_CARD.md').is_file()


def test_weights_with_wrong_shapes_are_refused(params):
  broken = {net: jax.tree.map(np.asarray, params[net]) for net in faces.NETS}
  broken['onet']['dense5']['kernel'] = broken['onet']['dense5']['kernel'][:100]
  with pytest.raises(ValueError, match='onet'):
    faces.FaceDetector(broken)
  with pytest.raises(ValueError, match='lack'):
    faces.check_params({'pnet': params['pnet']})


def test_astronaut_has_one_face_with_eyes_where_they_are(detector):
  found = detector(skimage.data.astronaut())
  assert len(found) == 1
  face, = found
  assert face.score > 0.99
  # Pupils, nose tip and mouth corners read off the 512² photo by eye.
  seen = np.array([[204, 101], [246, 103], [224, 127], [205, 138], [247, 140]], np.float32)
  np.testing.assert_allclose(face.landmarks, seen, atol=4)
  x0, y0, x1, y1 = face.box
  assert 170 < x0 < 195 and 230 < x1 < 280 and 50 < y0 < 95 and 150 < y1 < 185, face.box
  assert face.box.dtype == np.float32 and face.landmarks.shape == (5, 2)


def test_face_cut_by_the_image_border(detector):
  """The left border passes just beside the left eye: the face is still found, its
  landmarks where they are in the whole photo (black fill keeps the crop's proportions)."""
  photo = skimage.data.astronaut()
  (whole,) = detector(photo)
  (cut,) = detector(photo[:, 200:])
  np.testing.assert_allclose(cut.landmarks + [200, 0], whole.landmarks, atol=6)
  assert cut.box[0] < 0  # The square box reaches past the border.


@pytest.mark.parametrize('name', ['coffee', 'flat'])
def test_no_face_where_there_is_none(detector, name):
  image = skimage.data.coffee() if name == 'coffee' else np.full((400, 600, 3), 128, np.uint8)
  assert detector(image) == []


def test_grey_rgba_and_16_bit_photos(detector):
  rgb = skimage.data.astronaut()
  (reference,) = detector(rgb)
  opaque = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
  for image in (rgb.astype(np.uint16) * 257, rgb.astype(np.float32) / 255, opaque):
    (face,) = detector(image)
    np.testing.assert_allclose(face.box, reference.box, atol=1e-3)
  grey = skimage.color.rgb2gray(rgb)  # float64 in [0, 1]
  for image in (grey, (grey * 65535).astype(np.uint16)[..., None]):
    (face,) = detector(image)
    np.testing.assert_allclose(face.landmarks, reference.landmarks, atol=4)
  transparent = opaque.copy()
  transparent[..., 3] = 0  # Flattened onto white: nothing to see.
  assert detector(transparent) == []


@pytest.mark.parametrize('image, message', [
    (np.zeros((64, 64, 2), np.uint8), 'shape'),
    (np.zeros((64, 64, 3), np.int32), 'dtype'),
    (np.full((64, 64, 3), 2.0, np.float32), r'\[0, 1\]'),
    (np.zeros((0, 64, 3), np.uint8), 'shape'),
])
def test_unsupported_images_are_refused(detector, image, message):
  with pytest.raises(InputError, match=message):
    detector(image)


def test_canvas_fractions_follow_the_pixel_centre_convention():
  side = 128
  corners = np.array([[-0.5, -0.5], [side - 0.5, side - 0.5], [63.5, 63.5]])
  np.testing.assert_allclose(faces.canvas_fractions(corners, side), [[0, 0], [1, 1], [.5, .5]])
  np.testing.assert_allclose(faces.canvas_points(faces.canvas_fractions(corners, side), side),
                             corners)


def test_huge_photos_search_from_a_larger_smallest_face():
  """The first pyramid level stays within bounds (memory, time); usual photos are untouched."""
  assert faces._pyramid(1920, 1297, 20)[0][0] == pytest.approx(12 / 20)
  _, height, width = faces._pyramid(6000, 4000, 20)[0]
  assert 1.9e6 < height * width <= 2.0e6 + 6000 + 4000
  assert faces.smallest_face(6000, 4000, 20) == pytest.approx(41.6, abs=0.1)


def test_min_face_size_below_the_window_is_refused(detector):
  with pytest.raises(ValueError, match='min_face_size'):
    detector(np.zeros((64, 64, 3), np.uint8), min_face_size=8)


def test_template_tool_measures_the_training_split(tmp_path, capsys):
  """The astronaut's face and its mirror image as the training split, flat grey photos as
  the validation split (chosen by file name, left out): the template is symmetric and has
  the eyes where the detector sees them."""
  face = skimage.data.astronaut()[40:240, 125:325]  # 200x200, framed like a tight crop.
  names = [f'{letter}.png' for letter in 'abcdef']
  train, validation = image_folder.split_image_files(names, 0.5)
  assert train == ['d.png', 'f.png'] and len(validation) == 4
  for name in validation:
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / name)
  Image.fromarray(face).save(tmp_path / 'd.png')
  Image.fromarray(face[:, ::-1]).save(tmp_path / 'f.png')
  measure_face_template.main(['--image_dir', str(tmp_path), '--validation_fraction', '0.5'])
  out = capsys.readouterr().out
  assert 'Faces found in 2 of 2 training photos' in out
  rows = out.split('FACE_TEMPLATE = np.array(')[1].split(', np.float32')[0]
  template = np.array(json.loads(rows), np.float32)
  np.testing.assert_allclose(template, measure_face_template.mirrored(template), atol=2e-4)
  (seen,) = faces.FaceDetector.pretrained()(face)
  # A face and its mirror image lie equally far from their mean, the level template: each is
  # turned from it by about the astronaut's head tilt.
  spread = out.split('FRAMING_SPREAD = ')[1]
  assert spread.startswith('FramingSpread(log_scale=')
  log_scale, rotation, shift = (float(v.split('=')[1]) for v in spread.strip()[14:-1].split(','))
  (eye_dx, eye_dy) = seen.landmarks[1] - seen.landmarks[0]
  np.testing.assert_allclose(rotation, abs(np.arctan2(eye_dy, eye_dx)), atol=0.02)
  assert 0 <= log_scale < 0.02 and 0 <= shift < 0.02
  eyes = faces.canvas_fractions(seen.landmarks[:2], 200)
  np.testing.assert_allclose(template[:2, 1], eyes[:, 1].mean(), atol=0.01)
  np.testing.assert_allclose(template[1, 0] - template[0, 0], eyes[1, 0] - eyes[0, 0], atol=0.01)
