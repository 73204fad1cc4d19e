"""Training-recipe features: learning-rate schedule, gradient clipping, moving averages,
the harmonic pre-fill and mask channel, and the exported model file."""

import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import skimage.restoration
from flax import jax_utils

from configs import faces128
from configs import tiny
from define_jax import export
from define_jax.faces import faces
from define_jax.inference import Inpainter
from define_jax.model import checkpoints
from define_jax.model import model_file
from define_jax.model import models
from define_jax.model import network
from define_jax.model import prefill
from define_jax.training import steps

from conftest import astronaut, save_checkpoint, synthetic_batch, with_fields


def recipe_config(**overrides):
  """The tiny config with the L1 loss, each override set in the section holding its field."""
  config = tiny.get_config()
  config.loss.preset = 'l1'  # No VGG to compile.
  return with_fields(config, **overrides)


@pytest.mark.parametrize('schedule', ['constant', 'cosine', 'linear'])
def test_learning_rate_warms_up_then_follows_the_schedule(schedule):
  config = recipe_config(learning_rate=1e-3, lr_schedule=schedule, warmup_steps=10,
                         num_train_steps=110, final_learning_rate_fraction=0.1)
  rate = steps.learning_rate_schedule(config.optim)
  np.testing.assert_allclose([rate(0), rate(5), rate(10)], [0.0, 5e-4, 1e-3], rtol=1e-6)
  expected_end = {'constant': 1e-3, 'cosine': 1e-4, 'linear': 1e-4}[schedule]
  np.testing.assert_allclose(rate(110), expected_end, rtol=1e-5)
  halfway = {'constant': 1e-3, 'cosine': 1e-4 + 0.5 * 9e-4, 'linear': 1e-4 + 0.5 * 9e-4}
  np.testing.assert_allclose(rate(60), halfway[schedule], rtol=1e-5)


def test_train_step_uses_the_scheduled_rate():
  config = recipe_config(lr_schedule='linear', warmup_steps=2, learning_rate=1e-3)
  state = jax_utils.replicate(steps.create_train_state(config, jax.random.key(0)))
  p_train_step = steps.make_p_train_step(config)
  rates = []
  for i in range(3):
    state, metrics = p_train_step(state, synthetic_batch(config, seed=i), jax_utils.replicate({}))
    rates.append(float(steps.learning_rate(jax_utils.unreplicate(state))))
  np.testing.assert_allclose(rates, [0.0, 5e-4, 1e-3], atol=1e-9)


@pytest.mark.parametrize('clip', [0.0, 1.0])
def test_gradient_clipping_bounds_the_global_norm_adam_sees(clip):
  optimizer = steps.create_optimizer(recipe_config(grad_clip_norm=clip).optim)
  params = {'a': jnp.zeros(4), 'b': jnp.zeros((2, 2))}
  grads = {'a': jnp.full(4, 30.0), 'b': jnp.full((2, 2), 40.0)}  # global norm 100
  _, opt_state = optimizer.update(grads, optimizer.init(params), params)
  adam_state = [s for s in jax.tree.leaves(opt_state.inner_state,
                                           is_leaf=lambda s: hasattr(s, 'mu'))
                if hasattr(s, 'mu')][0]
  first_moment_norm = float(optax.global_norm(adam_state.mu))
  # Adam's first moment after one step is (1 - b1) * gradient = 0.1 * gradient.
  np.testing.assert_allclose(first_moment_norm, 0.1 * (clip or 100.0), rtol=1e-5)


def test_moving_average_follows_its_formula_and_is_used_for_evaluation():
  config = recipe_config(ema_decay=0.5)
  initial = steps.create_train_state(config, jax.random.key(0))
  p_train_step = steps.make_p_train_step(config)
  state = jax_utils.replicate(initial)
  state, _ = p_train_step(state, synthetic_batch(config, seed=0), jax_utils.replicate({}))
  after_one = jax_utils.unreplicate(state)
  # Step 0 averages at min(0.5, 1/10) = 0.1: mostly the new weights.
  expected = jax.tree.map(lambda old, new: 0.1 * old + 0.9 * new, initial.params,
                          after_one.params)
  jax.tree.map(lambda e, a: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-7),
               expected, after_one.ema_params)
  assert steps.inference_variables(after_one)['params'] is after_one.ema_params

  batch = synthetic_batch(config, seed=1)
  batch['image'][0, 0, 0, 0, 0] = np.nan  # A skipped step leaves the averages alone.
  state, _ = p_train_step(state, batch, jax_utils.replicate({}))
  skipped = jax_utils.unreplicate(state)
  jax.tree.map(np.testing.assert_array_equal, skipped.ema_params, after_one.ema_params)
  jax.tree.map(np.testing.assert_array_equal, skipped.ema_batch_stats,
               after_one.ema_batch_stats)


def test_checkpoints_keep_the_averages_and_inference_loads_them(tmp_path):
  config = recipe_config(ema_decay=0.9)
  state = steps.create_train_state(config, jax.random.key(0))
  averaged = jax.tree.map(lambda x: x + 1.0, state.params)
  state = state.replace(ema_params=averaged)
  save_checkpoint(tmp_path, config, state)
  manager = checkpoints.create_manager(str(tmp_path))
  restored = checkpoints.restore_latest(manager, steps.create_train_state(config,
                                                                          jax.random.key(1)))
  jax.tree.map(np.testing.assert_array_equal, restored.ema_params, averaged)
  jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
  variables, _, _ = checkpoints.load_model(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, variables['params'], averaged)


def test_faces128_recipe_is_valid_and_fits_the_shipping_budget():
  config = faces128.get_config()
  config.input.image_dir = '/faces'
  steps.validate(config, device_count=1)
  shapes = jax.eval_shape(lambda: network.init_variables(config.model, jax.random.key(0)))
  parameters = sum(np.prod(x.shape) for x in jax.tree.leaves(shapes['params']))
  assert parameters * 2 < 16 * 2**20  # float16 storage within the 16 MiB budget


# --- The harmonic pre-fill and why it is there. ---------------------------------------


def test_harmonic_fill_is_exact_on_a_linear_ramp_and_keeps_known_pixels():
  ramp = np.broadcast_to(np.linspace(0, 1, 32, dtype=np.float32)[None, :, None],
                         (1, 32, 32, 3)).copy()
  mask = np.ones((1, 32, 32, 1), np.float32)
  mask[:, :, 15] = 0  # a 1-pixel vertical hole
  mask[:, 4:9, 20:23] = 0  # a small blob
  filled = np.asarray(prefill.harmonic_fill(jnp.asarray(ramp), jnp.asarray(mask)))
  np.testing.assert_allclose(filled, ramp, atol=2e-3)
  known = np.broadcast_to(mask, ramp.shape) == 1
  np.testing.assert_array_equal(filled[known], ramp[known])


@pytest.mark.parametrize('fill', [prefill.harmonic_fill, prefill.biharmonic_fill])
def test_fills_of_an_all_hole_image_are_finite(fill):
  filled = fill(jnp.ones((2, 16, 16, 3)), jnp.zeros((2, 16, 16, 1)))
  np.testing.assert_array_equal(filled, 0.0)


def test_biharmonic_fill_matches_scikit_image_on_small_holes():
  face = astronaut(64, 64)
  mask = np.ones((64, 64, 1), np.float32)
  mask[:, 20] = 0  # a 1-pixel line
  mask[30:33, 5:60] = 0  # a 3-pixel stroke
  mask[45:50, 40:46] = 0  # a blob
  reference = skimage.restoration.inpaint_biharmonic(face, mask[..., 0] == 0, channel_axis=-1)
  filled = np.asarray(prefill.biharmonic_fill(jnp.asarray(face[None]), jnp.asarray(mask[None])))[0]
  harmonic = np.asarray(prefill.harmonic_fill(jnp.asarray(face[None]), jnp.asarray(mask[None])))[0]
  hole = np.broadcast_to(mask == 0, face.shape)
  assert np.abs(filled - reference)[hole].mean() < 0.01
  assert np.abs(filled - face)[hole].mean() < np.abs(harmonic - face)[hole].mean()
  np.testing.assert_array_equal(filled[~hole], face[~hole])


def first_level_features(model, variables, image, mask):
  _, state = model.apply(variables, image, mask, train=False, capture_intermediates=True,
                         mutable=['intermediates'])
  return np.asarray(state['intermediates']['enc_1']['__call__'][0][0])


def test_a_thin_hole_looks_like_a_dark_line_to_plain_partial_convolutions():
  """The cause of dark fills in thin holes, and what the recipe's inputs change."""
  face = astronaut(64, 64)[None]
  hole = np.ones((1, 64, 64, 1), np.float32)
  hole[:, :, 31] = 0
  dark_line = face.copy()
  dark_line[:, :, 31] = 0
  known = np.ones_like(hole)

  def channel_ratio_spread(**options):
    """Per first-level output pixel: how much hole/line feature ratios differ over channels."""
    model = models.PConvUNet(layers=4, base_features=8, max_features=32, **options)
    variables = model.init(jax.random.key(0), face, hole, train=False)
    as_hole = first_level_features(model, variables, face * hole, hole)
    as_line = first_level_features(model, variables, dark_line, known)
    active = (np.abs(as_line) > 1e-2) & (np.abs(as_hole) > 1e-2)
    ratio = np.where(active, as_hole / np.where(active, as_line, 1), np.nan)
    with warnings.catch_warnings():  # Pixels with no active channel have no ratio: spread 0.
      warnings.simplefilter('ignore', RuntimeWarning)
      return np.nan_to_num(np.nanmax(ratio, -1) - np.nanmin(ratio, -1)), np.nanmax(ratio)

  # Paper inputs: every feature of the hole is the dark line's times one scale per window
  # (at most 49/42: the line removes 7 of a 7x7 window's 49 pixels), so the network can only
  # tell them apart by a small brightness change.
  spread, largest = channel_ratio_spread()
  assert spread.max() < 1e-4 and largest <= 49 / 42 + 1e-4
  # Recipe inputs: the mask channel and the fill change the features themselves ...
  spread, _ = channel_ratio_spread(mask_channel=True, prefill='harmonic')
  assert spread.max() > 0.5
  # ... and the fill the network corrects is as good as linear interpolation across the hole.
  base = np.asarray(prefill.harmonic_fill(jnp.asarray(face * hole), jnp.asarray(hole)))
  linear = (face[:, :, 30] + face[:, :, 32]) / 2
  assert np.abs(base - face)[:, :, 31].mean() < 1.1 * np.abs(linear - face[:, :, 31]).mean()


def test_prefill_model_starts_from_the_fill_plus_a_correction():
  model = models.PConvUNet(layers=4, base_features=8, max_features=32, mask_channel=True,
                           prefill='harmonic')
  face = astronaut(64, 64)[None]
  mask = np.ones((1, 64, 64, 1), np.float32)
  mask[:, 20:30, 10:50] = 0
  variables = model.init(jax.random.key(0), face, mask, train=False)
  zeroed = jax.tree.map(jnp.zeros_like, variables)  # no correction at all
  output = model.apply(zeroed, face * mask, mask, train=False)
  np.testing.assert_allclose(output, prefill.harmonic_fill(face * mask, mask), atol=1e-6)
  with pytest.raises(ValueError, match='prefill'):
    models.PConvUNet(layers=4, prefill='mean').init(jax.random.key(0), face, mask, train=False)


# --- Export. ---------------------------------------------------------------------------


def test_export_round_trip_and_inference_from_the_file(tiny_checkpoint, tmp_path):
  out = str(tmp_path / 'model.msgpack')
  assert export.main(['--workdir', tiny_checkpoint, '--out', out]) == 0
  variables, config, step = model_file.read_model_file(out)
  original, original_config, original_step = checkpoints.load_model(tiny_checkpoint)
  # Export writes the sectioned config with the face template (the measured one: the tiny
  # run has none of its own).
  assert config['model'].pop('face_template') == faces.FACE_TEMPLATE.tolist()
  assert original_config['model'].pop('face_template') is None
  assert (config, step) == (original_config, original_step)
  np.testing.assert_array_equal(Inpainter.from_checkpoint(out).face_template,
                                faces.FACE_TEMPLATE)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4),
               variables, original)
  face = (astronaut(64, 64) * 255).astype(np.uint8)
  mask = np.zeros((64, 64), np.uint8)
  mask[10:30, 20:40] = 255
  from_file = Inpainter.from_checkpoint(out)(face, mask, polarity='hole_white')
  from_run = Inpainter.from_checkpoint(tiny_checkpoint)(face, mask, polarity='hole_white')
  assert np.abs(from_file.astype(int) - from_run.astype(int)).max() <= 2
  # Existing output: refused without --overwrite, and left as it was.
  before = os.path.getmtime(out)
  assert export.main(['--workdir', tiny_checkpoint, '--out', out]) == 2
  assert os.path.getmtime(out) == before
  assert export.main(['--workdir', tiny_checkpoint, '--out', str(tmp_path / 'x.bin')]) == 2


def test_export_stores_the_face_prefill_its_readers_use(tmp_path, capsys):
  """--face_prefill is stored as the model's way to run; a network without a prefill input
  is refused before anything is written, and readers can still switch it off."""
  config = with_fields(tiny.get_config(), prefill='biharmonic')
  workdir = tmp_path / 'run'
  save_checkpoint(workdir, config, steps.create_train_state(config, jax.random.key(0)))
  out = tmp_path / 'model.msgpack'
  assert export.main(['--workdir', str(workdir), '--out', str(out), '--face_prefill', 'mirror']) == 0
  assert model_file.read_model_file(str(out))[1]['model']['face_prefill'] == 'mirror'
  assert Inpainter.from_checkpoint(str(out)).config.model.face_prefill == 'mirror'
  off = Inpainter.from_checkpoint(str(out), overrides=['--config.model.face_prefill=biharmonic'])
  assert not off._faces_differ  # pylint: disable=protected-access
  config = with_fields(tiny.get_config(), prefill='none')
  plain = tmp_path / 'plain'
  save_checkpoint(plain, config, steps.create_train_state(config, jax.random.key(0)))
  capsys.readouterr()
  refused = tmp_path / 'refused.msgpack'
  assert export.main(['--workdir', str(plain), '--out', str(refused),
                      '--face_prefill', 'mirror']) == 2
  assert "--face_prefill: model.face_prefill='mirror' needs a network trained with a prefill" \
      in capsys.readouterr().err
  assert not refused.exists()


def test_damaged_or_foreign_model_files_are_clear_errors(tmp_path):
  damaged = tmp_path / 'damaged.msgpack'
  damaged.write_bytes(b'\x85\xa6format')
  with pytest.raises(ValueError, match='damaged.msgpack'):
    model_file.read_model_file(str(damaged))
  foreign = tmp_path / 'foreign.msgpack'
  foreign.write_bytes(model_file.serialization.msgpack_serialize({'weights': np.zeros(3)}))
  with pytest.raises(ValueError, match='not a define_jax model file'):
    Inpainter.from_checkpoint(str(foreign))


def test_mirror_fill_draws_deep_face_holes_from_their_mirror_and_leaves_the_rest_smooth():
  """Deep inside a hole on the inner face, whose mirror is known, the fill is the mirror's
  content shifted by the (smooth) difference between the two sides, so a brighter side stays
  brighter; a thin stroke, a hole off the inner face and a hole across the axis keep the
  biharmonic fill."""
  rng = np.random.default_rng(0)
  half = rng.uniform(0.2, 0.6, size=(1, 64, 32, 3)).astype(np.float32)
  face = np.concatenate([half + 0.1, half[:, :, ::-1]], axis=2)  # Left side 0.1 brighter.
  mask = np.ones((1, 64, 64, 1), np.float32)
  mask[:, 12:28, 10:26] = 0  # An eye-sized hole on the left: its mirror (38-53) is known.
  mask[:, 40, 8:24] = 0  # A thin stroke.
  mask[:, 0:6, 0:6] = 0  # The corner: hair or background.
  mask[:, 48:54, 29:35] = 0  # Across the axis: its mirror is a hole too.
  filled = np.asarray(prefill.mirror_fill(jnp.asarray(face), jnp.asarray(mask)))
  smooth = np.asarray(prefill.biharmonic_fill(jnp.asarray(face), jnp.asarray(mask)))
  deep = (slice(None), slice(16, 24), slice(14, 22))  # 4 px (6 %) or more from the border.
  np.testing.assert_allclose(filled[deep], face[deep], atol=1e-4)
  for region in ((slice(None), 40, slice(8, 24)), (slice(None), slice(0, 6), slice(0, 6)),
                 (slice(None), slice(48, 54), slice(29, 35))):
    np.testing.assert_allclose(filled[region], smooth[region], atol=1e-6)
  np.testing.assert_array_equal(filled[mask[..., 0] == 1], face[mask[..., 0] == 1])
  # The plain biharmonic fill cannot invent the texture the mirror carries.
  assert np.abs(smooth[deep] - face[deep]).mean() > 0.05
