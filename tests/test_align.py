"""fit='auto': alignment geometry, faces through their own canvas, the rest natively."""

import types

import numpy as np
import pytest
from PIL import Image

from define_jax.faces import align
from define_jax.faces import faces
from define_jax.inference import Inpainter
from define_jax.inference import auto_fit
from define_jax.inference import baselines

from conftest import astronaut

TEMPLATE = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.75], [0.65, 0.75]])
SPREAD = faces.FRAMING_SPREAD


def face_at(x, y, eye_distance):
  """A face whose eyes are centred on (x, y) with the template's proportions."""
  offsets = (TEMPLATE - TEMPLATE[:2].mean(axis=0)) * eye_distance / 0.4
  landmarks = np.array([x, y]) + offsets
  box = np.concatenate([landmarks.min(0) - eye_distance / 2, landmarks.max(0) + eye_distance / 2])
  return types.SimpleNamespace(box=box.astype(np.float32), score=1.0,
                               landmarks=landmarks.astype(np.float32))


def recording_fills(calls):
  """canvas_fills stand-in: the network 'fills' every canvas hole with 0.5; records inputs."""

  def canvas_fills(images, known):
    calls.append((images.copy(), known.copy()))
    return np.where(known > 0, images, 0.5).astype(np.float32)

  return canvas_fills


def native_fill(image, known):
  """native_fill stand-in: 0.25 in the holes."""
  return np.where(known > 0, image, 0.25).astype(np.float32)


def test_similarity_transform_recovers_rotation_scale_and_shift():
  angle, scale = 0.3, 1.7
  matrix = np.array([[scale * np.cos(angle), -scale * np.sin(angle), 5.0],
                     [scale * np.sin(angle), scale * np.cos(angle), -3.0]])
  points = np.random.default_rng(0).uniform(0, 100, (5, 2))
  moved = points @ matrix[:, :2].T + matrix[:, 2]
  np.testing.assert_allclose(align.similarity_transform(points, moved), matrix, atol=1e-9)


@pytest.mark.parametrize('scale', [1.0, 0.6, 0.24, 2.5])
def test_hole_pixels_never_become_known_on_the_canvas(scale):
  image = astronaut(200, 160)
  known = np.ones((200, 160, 1), np.float32)
  known[60:90, 40:120] = 0
  known[150, :] = 0
  image[known[..., 0] == 0] = 1e6  # Any leak of hole content shows.
  matrix = np.array([[scale * 0.96, -scale * 0.28, 10.0], [scale * 0.28, scale * 0.96, -20.0]])
  canvas, canvas_known = align.warp_to_canvas(image, known, matrix, 64)
  assert canvas.max() <= 1.0
  assert 0 < canvas_known.mean() < 1  # Something known and something hole (the holes, edges).
  # Each canvas pixel's source (inverse transform) lies on a known photo pixel where known.
  inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
  v, u = np.nonzero(canvas_known[..., 0])
  x, y = (np.stack([u, v, np.ones_like(u)], 1) @ inverse.T).T
  assert known[np.round(y).astype(int).clip(0, 199), np.round(x).astype(int).clip(0, 159)].all()


def test_warp_then_inverse_warp_keeps_every_known_pixel_exact():
  image = astronaut(100, 120)
  known = np.ones((100, 120, 1), np.float32)
  known[30:50, 20:90] = 0
  face = face_at(60, 40, 30)
  composite, report = auto_fit.auto_fill(image, known, lambda _: [face], TEMPLATE, SPREAD,
                                         64, recording_fills([]), native_fill)
  assert report.faces_inpainted == 1
  np.testing.assert_array_equal(composite[known[..., 0] == 1], image[known[..., 0] == 1])
  # A translation by whole pixels at scale 1 comes back exactly everywhere the canvas covers.
  matrix = np.array([[1.0, 0.0, -20.0], [0.0, 1.0, -10.0]])
  canvas, _ = align.warp_to_canvas(image, np.ones_like(known), matrix, 64)
  back = align.warp_from_canvas(canvas, matrix, 100, 120)
  np.testing.assert_array_equal(back[10:74, 20:84], image[10:74, 20:84])


def test_the_detector_never_sees_the_pixels_under_the_holes():
  """It looks once, at the photo completed by the native fill: never at the ground truth
  (and, finding no face on the holes, not again)."""
  image = astronaut(100, 120)
  known = np.ones((100, 120, 1), np.float32)
  known[30:50, 20:90] = 0
  seen = []
  auto_fit.auto_fill(image, known, lambda photo: seen.append(photo) or [], TEMPLATE, SPREAD,
                     64, recording_fills([]), native_fill)
  native, = seen
  holes = known[..., 0] == 0
  np.testing.assert_array_equal(native[holes], 0.25)  # The native fill, not the ground truth.
  np.testing.assert_array_equal(native[~holes], image[~holes])


def test_two_faces_are_each_aligned_on_their_own():
  image = np.zeros((120, 240, 3), np.float32)
  image[:, :120] = (1.0, 0.0, 0.0)  # Left face red, right face blue.
  image[:, 120:] = (0.0, 0.0, 1.0)
  known = np.ones((120, 240, 1), np.float32)
  known[52:72, 48:72] = 0
  known[52:72, 168:192] = 0
  two_faces = [face_at(60, 45, 24), face_at(180, 45, 30)]
  calls = []
  composite, report = auto_fit.auto_fill(
      image, known, lambda _: two_faces, TEMPLATE, SPREAD, 32, recording_fills(calls),
      native_fill)
  (canvases, canvas_known), = calls
  assert report.faces_inpainted == 2 and len(canvases) == 2  # One canvas per face.
  # Each face's eyes land on the template's eyes in its own canvas.
  for canvas, colour in zip(canvases, [(1, 0, 0), (0, 0, 1)]):
    np.testing.assert_array_equal(canvas[int(0.4 * 32), int(0.3 * 32)], colour)
  assert (canvas_known[:, 8:24, 8:24] == 0).any(axis=(1, 2, 3)).all()
  holes = known[..., 0] == 0
  # Hole centres: the biharmonic fill (each face's colour) moved towards the face network's
  # 0.5 by its correction.
  for centre, colour in zip(composite[62, [60, 180]], [(1, 0, 0), (0, 0, 1)]):
    assert (np.abs(centre - 0.5) < np.abs(np.array(colour) - 0.5) - 0.1).all()
  np.testing.assert_array_equal(composite[~holes], image[~holes])


def test_seam_exact_meets_the_known_pixels_and_keeps_a_fill_that_already_does():
  image = astronaut(64, 80)
  known = np.ones((64, 80, 1), np.float32)
  known[10:40, 20:60] = 0
  known[50:52, 5:75] = 0
  matching = np.where(known > 0, image, 0.3).astype(np.float32)
  np.testing.assert_array_equal(baselines.seam_exact(matching, image, known), matching)
  # A fill off by a constant on the known pixels is shifted by that constant in the holes.
  shifted = baselines.seam_exact(matching + 0.1, image, known)
  np.testing.assert_allclose(shifted, matching, atol=1e-5)
  # Any mismatch: the known pixels come out exact, and it fades into the holes' interior.
  offset = np.zeros_like(image)
  offset[:, :40] = 0.2
  corrected = baselines.seam_exact(matching + offset, image, known)
  np.testing.assert_allclose(corrected[known[..., 0] > 0], image[known[..., 0] > 0], atol=1e-6)
  assert np.abs(corrected[25, 22] - matching[25, 22]).max() < 0.05  # Near the left border.


@pytest.mark.parametrize('side', [64, 65])
def test_hole_outside_every_face_takes_the_native_path(side):
  """Up to twice the canvas's side the native fill alone; beyond, halfway to the biharmonic
  fill."""
  image = astronaut(side, side)
  known = np.ones((side, side, 1), np.float32)
  known[50:60, 5:30] = 0
  calls = []
  composite, report = auto_fit.auto_fill(
      image, known, lambda _: [face_at(40, 15, 8)], TEMPLATE, SPREAD, 32,
      recording_fills(calls), native_fill)
  assert report.faces_found == 1 and report.faces_inpainted == 0
  assert calls == []  # No face canvas.
  holes = known[..., 0] == 0
  np.testing.assert_array_equal(composite[~holes], image[~holes])
  if side == 64:
    np.testing.assert_array_equal(composite[holes], 0.25)
  else:
    mean = 0.5 * (0.25 + baselines.biharmonic(image, known)[holes])
    np.testing.assert_allclose(composite[holes], mean, atol=1e-6)


@pytest.mark.parametrize('found', [[], [face_at(35, 25, 40)]])
def test_an_all_hole_photo_needs_no_biharmonic_fill(found):
  """allow_all_hole admits a photo without a known pixel: there is no biharmonic fill to put
  under a face larger than the canvas, so the native fill is the base."""
  image = astronaut(70, 70)
  known = np.zeros((70, 70, 1), np.float32)
  calls = []
  composite, report = auto_fit.auto_fill(image, known, lambda _: found, TEMPLATE, SPREAD, 32,
                                         recording_fills(calls), native_fill)
  assert report.faces_inpainted == len(found) == len(calls)
  if not found:
    np.testing.assert_array_equal(composite, 0.25)
  assert np.isfinite(composite).all()


def test_face_at_the_image_border():
  image = astronaut(96, 96)
  known = np.ones((96, 96, 1), np.float32)
  known[0:12, 0:20] = 0
  calls = []
  composite, report = auto_fit.auto_fill(image, known, lambda _: [face_at(4, 6, 30)], TEMPLATE,
                                         SPREAD, 32, recording_fills(calls), native_fill)
  assert report.faces_inpainted == 1
  face_known = calls[0][1][0, ..., 0]
  assert face_known[:, :3].max() == 0 and face_known[:3].max() == 0  # Beyond the photo: holes.
  np.testing.assert_array_equal(composite[12:, 20:], image[12:, 20:])
  assert np.isfinite(composite).all()


def template_face(x, y, size, scale=1.0, angle=0.0):
  """A face whose landmarks are the template's on a size² canvas, scaled and rotated about
  their centre, with that centre at (x, y)."""
  points = TEMPLATE * size - 0.5
  centred = points - points.mean(axis=0)
  rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  landmarks = np.array([x, y]) + scale * centred @ rotation.T
  box = np.concatenate([landmarks.min(0) - 5, landmarks.max(0) + 5])
  return types.SimpleNamespace(box=box.astype(np.float32), score=1.0,
                               landmarks=landmarks.astype(np.float32))


def window_of(face, height, width):
  matrix = align.face_matrix(face.landmarks, TEMPLATE, 64)
  return align.window_matrix(matrix, face.landmarks, TEMPLATE, 64, height, width, SPREAD)


def test_a_face_framed_like_the_training_faces_gets_a_window_of_the_photo_not_a_warp():
  centre = (TEMPLATE * 64 - 0.5).mean(axis=0)
  # In a larger photo: the whole-pixel window that puts the face on the template.
  face = template_face(100.3 + centre[0], 40.8 + centre[1], 64, scale=1.04, angle=0.03)
  matrix = window_of(face, 160, 200)
  np.testing.assert_array_equal(matrix, [[1, 0, -100], [0, 1, -41]])
  # Near the photo's edge the window stays inside it, as far as the spread allows.
  near_edge = template_face(-1 + centre[0], 40 + centre[1], 64)
  np.testing.assert_array_equal(
      window_of(near_edge, 160, 200)[:, 2], [0, -40])
  too_far = template_face(-4 + centre[0], 40 + centre[1], 64)  # 4 px > 0.0378 × 64.
  # Scaled, rotated or off the photo beyond the training faces' spread: aligned by a warp.
  for other in (too_far, template_face(100 + centre[0], 40 + centre[1], 64, scale=1.2),
                template_face(100 + centre[0], 40 + centre[1], 64, angle=0.15)):
    assert window_of(other, 160, 200) is None


def test_a_photo_at_the_canvas_size_framed_like_the_training_faces_keeps_its_native_fill():
  """UTKFace's validation faces at 128²: the face's canvas is the photo itself, so the
  network sees exactly what the native fill saw, and a warp's blur never reaches the fill."""
  image = astronaut(64, 64)
  known = np.ones((64, 64, 1), np.float32)
  known[20:40, 10:50] = 0
  centre = (TEMPLATE * 64 - 0.5).mean(axis=0)
  face = template_face(centre[0] + 0.4, centre[1] - 0.3, 64, scale=0.97, angle=-0.02)
  calls = []
  composite, report = auto_fit.auto_fill(image, known, lambda _: [face], TEMPLATE, SPREAD, 64,
                                         recording_fills(calls), native_fill)
  (canvases, canvas_known), = calls
  assert report.faces_inpainted == 1 and report.upscale == 1.0
  np.testing.assert_array_equal(canvas_known[0], known)  # No hole widened by resampling.
  np.testing.assert_array_equal(canvases[0], image * known)  # Every known pixel as it is.
  # The canvas's fill (0.5) replaces the native fill (0.25) inside the feathered border.
  np.testing.assert_allclose(composite[30, 32], 0.5, atol=1e-6)
  np.testing.assert_array_equal(composite[known[..., 0] == 1], image[known[..., 0] == 1])


@pytest.fixture(scope='module')
def inpainter(tiny_checkpoint):
  found = []
  inpainter = Inpainter.from_checkpoint(tiny_checkpoint, detector=lambda image: list(found))
  inpainter.faces = found  # The test sets the faces the stand-in detector reports.
  return inpainter


def test_no_face_goes_the_native_path(inpainter, monkeypatch):
  inpainter.faces.clear()
  canvases = []
  warp = align.warp_to_canvas
  monkeypatch.setattr(align, 'warp_to_canvas',
                      lambda *args: canvases.append(args[2]) or warp(*args))
  image = astronaut(80, 100)
  holes = np.zeros((80, 100), bool)
  holes[20:40, 30:60] = True
  result = inpainter(image, holes, polarity='hole_white')
  report, = inpainter.last_fit_reports
  assert report.faces_found == 0 and report.faces_inpainted == 0 and report.upscale == 1.0
  assert canvases == []  # No face canvas: the native ('pad') fill.
  np.testing.assert_array_equal(result, inpainter(image, holes, polarity='hole_white', fit='pad'))


@pytest.mark.parametrize('mode', ['L', 'RGBA', 'I;16'])
def test_grey_rgba_and_16_bit_photos(inpainter, mode):
  inpainter.faces[:] = [face_at(48, 30, 20)]
  rgb = (astronaut(72, 96) * 255).astype(np.uint8)
  if mode == 'I;16':
    photo = Image.fromarray((rgb[..., 0].astype(np.uint16) * 257))
  else:
    photo = Image.fromarray(rgb).convert(mode)
  holes = np.zeros((72, 96), bool)
  holes[30:40, 30:60] = True
  result = inpainter(photo, holes, polarity='hole_white')
  assert inpainter.last_fit_reports[0].faces_inpainted == 1
  assert result.size == photo.size
  before, after = np.asarray(photo.convert('RGB')), np.asarray(result.convert('RGB'))
  np.testing.assert_array_equal(after[~holes], before[~holes])


def test_faces_of_any_photo_size_share_one_canvas_compilation(inpainter):
  for height, width in ((40, 56), (72, 48)):
    inpainter.faces[:] = [face_at(width / 2, height / 3, 16)]
    holes = np.zeros((height, width), bool)
    holes[15:25, 15:35] = True
    inpainter(astronaut(height, width), holes, polarity='hole_white')
    assert inpainter.last_fit_reports[0].faces_inpainted == 1
  canvases = {shape[1:] for shape, fit, _ in inpainter.compiled_shapes if fit == 'resize'}
  assert canvases == {(64, 64, 3)}


def test_biharmonic_is_exact_under_its_hole_bound_and_close_beyond():
  y, x = np.mgrid[0:48, 0:64].astype(np.float32)
  ramp = np.stack([x / 160 + y / 120, 0.8 - y / 60, 0.2 + 0.3 * (x * y) / (48 * 64)], -1)
  known = np.ones((48, 64, 1), np.float32)
  known[10:34, 12:40] = 0
  known[40, 3:60] = 0
  holes = known[..., 0] == 0
  exact = baselines.biharmonic(ramp, known, baselines.EXACT_BIHARMONIC_HOLES)
  np.testing.assert_array_equal(exact, baselines.biharmonic(ramp, known))
  # Over the bound: solved on a 3×-block-averaged copy, yet known pixels exact and the
  # smooth ramp recovered in the holes.
  coarse = baselines.biharmonic(ramp, known, max_holes=int(holes.sum()) // 5)
  np.testing.assert_array_equal(coarse[~holes], ramp[~holes])
  np.testing.assert_allclose(coarse[holes], ramp[holes], atol=0.01)
  np.testing.assert_allclose(coarse[holes], exact[holes], atol=0.01)


@pytest.mark.parametrize('eye_distance', [10, 40])
def test_a_face_larger_than_the_canvas_puts_the_biharmonic_fill_under_its_correction(
    eye_distance):
  image = astronaut(128, 128)
  known = np.ones((128, 128, 1), np.float32)
  known[40:56, 50:80] = 0  # On the face.
  known[110:120, 5:30] = 0  # Outside its canvas: what lies under the corrections shows.
  face = face_at(64, 40, eye_distance)  # Template eyes 12.8 canvas pixels apart.
  composite, report = auto_fit.auto_fill(image, known, lambda _: [face], TEMPLATE, SPREAD,
                                         32, recording_fills([]), native_fill)
  far = np.s_[110:120, 5:30]
  if eye_distance > 25.6:  # Over twice the canvas's scale: the biharmonic fill alone.
    assert report.upscale > 2
    np.testing.assert_allclose(composite[far], baselines.biharmonic(image, known)[far], atol=1e-5)
  else:  # Smaller than the canvas: the native fill.
    assert report.faces_inpainted == 1 and report.upscale < 1
    np.testing.assert_array_equal(composite[far], 0.25)
  np.testing.assert_array_equal(composite[known[..., 0] == 1], image[known[..., 0] == 1])


@pytest.mark.parametrize('factor, height, width', [(2, 64, 64), (3, 31, 40)])
def test_box_upsample_puts_each_coarse_pixel_back_at_its_blocks_centre(factor, height, width):
  rows, cols = np.mgrid[:height, :width].astype(np.float32)
  ramp = np.stack([rows, cols, rows + 2 * cols], axis=-1) / 100  # Bilinear is exact on it.
  coarse, _ = align.box_downsample(ramp, np.ones((height, width, 1), np.float32), factor)
  back = align.box_upsample(coarse, factor, height, width)
  assert back.shape == (height, width, 3)
  inner = np.s_[factor:(height // factor - 1) * factor, factor:(width // factor - 1) * factor]
  np.testing.assert_allclose(back[inner], ramp[inner], atol=1e-5)
