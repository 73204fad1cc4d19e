"""Training system on CPU with 4 simulated devices: pmap steps, checkpoints, resume, fine-tuning."""

import glob
import json
import os
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from flax import jax_utils
from PIL import Image

from configs import tiny
from define_jax.eval import evaluation_set
from define_jax.eval import scoring
from define_jax.inference import Inpainter
from define_jax.model import checkpoints
from define_jax.training import steps
from define_jax.training import train
from define_jax.training import workdir_lock

from conftest import REPO_ROOT, astronaut, synthetic_batch


def run_steps(config, state, num_steps):
  p_train_step = steps.make_p_train_step(config)
  vgg_params = jax_utils.replicate(steps.load_vgg(config.loss)[0])
  state = jax_utils.replicate(state)
  history = []
  for i in range(num_steps):
    state, metrics = p_train_step(state, synthetic_batch(config, seed=i), vgg_params)
    history.append(jax.device_get(metrics))
  return state, history


def test_pmap_steps_train_and_sync_batchnorm():
  assert jax.local_device_count() == 4
  config = tiny.get_config()
  initial = steps.create_train_state(config, jax.random.key(0))
  state, history = run_steps(config, initial, 3)
  for metrics in history:
    assert np.all(np.isfinite(metrics['total']))
    assert set(metrics) >= {'valid', 'hole', 'perceptual', 'style_out', 'style_comp', 'tv'}
  assert int(state.step[0]) == 3
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a[0]) - np.asarray(b)).max()),
                       state.params, initial.params)
  assert max(jax.tree.leaves(moved)) > 0
  for leaf in jax.tree.leaves(state.batch_stats):
    np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))
  for leaf in jax.tree.leaves(state.params):
    np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))


def test_eval_leaves_out_padding_and_hole_free_elements():
  """A hole-free mask's composite is the ground truth (infinite PSNR), and 6 images on 4
  devices need padding: the means must stay finite and count the other images only."""
  config = tiny.get_config()
  state = jax_utils.replicate(steps.create_train_state(config, jax.random.key(0)))
  batch = synthetic_batch(config)
  images = batch['image'].reshape((-1,) + batch['image'].shape[2:])[:6]
  known = batch['mask'].reshape((-1,) + batch['mask'].shape[2:])[:6]
  known[0] = 1.0  # An image without a hole.
  eval_set = evaluation_set.EvalSet(images, known, [''] * 6, [''] * 6)
  inpainter = Inpainter(jax_utils.unreplicate(steps.inference_variables(state)), config)
  per_image, _ = scoring.score(inpainter.parallel, {'model': inpainter.inpaint_arrays},
                               eval_set, batch_size=8)
  assert np.isinf(per_image['model']['psnr'][0])

  result = train.evaluate(inpainter, state, eval_set, batch_size=4)
  assert sorted(result) == ['eval_l1', 'eval_lpips', 'eval_lpips_alex', 'eval_psnr', 'eval_ssim']
  assert all(np.isfinite(value) for value in result.values())
  for name in ('l1', 'psnr', 'ssim', 'lpips', 'lpips_alex'):
    np.testing.assert_allclose(result[f'eval_{name}'], per_image['model'][name][1:].mean(),
                               rtol=1e-5)


def test_nonfinite_step_is_skipped():
  config = tiny.get_config()
  initial = steps.create_train_state(config, jax.random.key(0))
  p_train_step = steps.make_p_train_step(config)
  vgg_params = jax_utils.replicate(steps.load_vgg(config.loss)[0])
  state = jax_utils.replicate(initial)
  batch = synthetic_batch(config)
  batch['image'][0, 0, 0, 0, 0] = np.nan
  state, metrics = p_train_step(state, batch, vgg_params)
  state = jax_utils.unreplicate(state)
  assert int(state.step) == 1 and int(state.nonfinite_streak) == 1
  assert int(jax.device_get(metrics['nonfinite_total'])[0]) == 1
  for new, old in zip(jax.tree.leaves((state.params, state.batch_stats, state.opt_state)),
                      jax.tree.leaves((initial.params, initial.batch_stats, initial.opt_state))):
    np.testing.assert_array_equal(new, old)


def test_checkpoint_save_restore_is_identical(tmp_path):
  config = tiny.get_config()
  state, _ = run_steps(config, steps.create_train_state(config, jax.random.key(1)), 2)
  state = jax_utils.unreplicate(state)
  manager = checkpoints.create_manager(str(tmp_path))
  checkpoints.save(manager, state, config.to_dict())
  manager.wait_until_finished()
  template = steps.create_train_state(config, jax.random.key(2))
  restored = checkpoints.restore_latest(checkpoints.create_manager(str(tmp_path)), template)
  assert int(restored.step) == 2
  for a, b in zip(jax.tree.leaves((state.params, state.batch_stats, state.opt_state)),
                  jax.tree.leaves((restored.params, restored.batch_stats, restored.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  variables, saved_config, step = checkpoints.load_model(str(tmp_path))
  assert step == 2 and saved_config['model']['layers'] == config.model.layers
  np.testing.assert_array_equal(jax.tree.leaves(variables['params'])[0],
                                jax.tree.leaves(state.params)[0])


def test_load_model_without_checkpoint_lists_directory(tmp_path):
  (tmp_path / 'notes.txt').write_text('x')
  with pytest.raises(FileNotFoundError, match='notes.txt'):
    checkpoints.load_model(str(tmp_path))


def test_train_resume_and_finetune(tmp_path):
  stage_one = str(tmp_path / 'stage_one')
  config = tiny.get_config()
  config.optim.num_train_steps = 3
  train.train_and_evaluate(config, stage_one)
  assert sorted(checkpoints.create_manager(stage_one).all_steps()) == [3]

  # Same command with a longer budget resumes at the saved step instead of restarting.
  config.optim.num_train_steps = 5
  state = train.train_and_evaluate(config, stage_one)
  assert int(state.step) == 5
  assert 5 in checkpoints.create_manager(stage_one).all_steps()
  assert glob.glob(os.path.join(stage_one, 'events.out.tfevents.*'))
  assert os.path.exists(os.path.join(stage_one, 'before_after.png'))
  assert glob.glob(os.path.join(stage_one, 'images', 'step_*.png'))

  # Fine-tuning: encoder statistics exactly as loaded, decoder statistics move.
  loaded, _, _ = checkpoints.load_model(stage_one)
  finetune = tiny.get_config()
  finetune.optim.init_from = stage_one
  finetune.model.freeze_encoder_bn = True
  finetune.optim.learning_rate = 5e-5
  finetune.optim.num_train_steps = 2
  tuned = train.train_and_evaluate(finetune, str(tmp_path / 'stage_two'))
  loaded_stats = loaded['batch_stats']
  tuned_stats = jax.device_get(tuned.batch_stats)
  encoder = [k for k in loaded_stats if k.startswith('enc_')]
  decoder = [k for k in loaded_stats if k.startswith('dec_')]
  assert encoder and decoder
  for key in encoder:
    for a, b in zip(jax.tree.leaves(loaded_stats[key]), jax.tree.leaves(tuned_stats[key])):
      np.testing.assert_array_equal(a, b)
  assert any(np.abs(a - b).max() > 0
             for key in decoder
             for a, b in zip(jax.tree.leaves(loaded_stats[key]), jax.tree.leaves(tuned_stats[key])))


def test_finetune_rejects_other_architecture(tmp_path):
  config = tiny.get_config()
  config.optim.num_train_steps = 1
  train.train_and_evaluate(config, str(tmp_path / 'a'))
  other = tiny.get_config()
  other.model.base_features = 16
  other.optim.init_from = str(tmp_path / 'a')
  with pytest.raises(ValueError, match='base_features'):
    train.train_and_evaluate(other, str(tmp_path / 'b'))

  # The mirror input is the one addition a run may make to its start: its kernel at zero.
  mirrored = tiny.get_config()
  mirrored.model.mirror = True
  mirrored.optim.init_from = str(tmp_path / 'a')
  grown = train.initial_variables(mirrored)
  loaded, _, _ = checkpoints.load_model(str(tmp_path / 'a'))
  side = grown['params']['enc_1'].pop('side_input')
  assert not np.any(side['kernel'])
  jax.tree.map(np.testing.assert_array_equal, grown, loaded)


def read_scalars(workdir, tag):
  """Values of one scalar summary from the TensorBoard event files in workdir."""
  import tensorflow as tf
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(workdir, size_guidance={'tensors': 0})
  events.Reload()
  return [float(tf.make_ndarray(event.tensor_proto)) for event in events.Tensors(tag)]


@pytest.mark.slow
def test_quickstart_command_end_to_end(tmp_path):
  """The README's quickstart command with a reduced budget: runs and the loss goes down."""
  workdir = str(tmp_path / 'quickstart')
  command = [sys.executable, '-m', 'define_jax.main', '--config', 'configs/quickstart.py',
             '--workdir', workdir, '--config.optim.num_train_steps=60',
             '--config.log.log_every_steps=10', '--config.eval.eval_every_steps=60',
             '--config.eval.image_every_steps=60', '--config.log.checkpoint_every_steps=60']
  result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  losses = read_scalars(workdir, 'train_total')
  assert len(losses) == 6
  assert np.mean(losses[-2:]) < losses[0], losses
  assert os.path.exists(os.path.join(workdir, 'before_after.png'))
  assert checkpoints.create_manager(workdir).all_steps() == [60]


@pytest.mark.parametrize('override, field', [
    ('--config.no_such_field=3', 'no_such_field'),
    ('--config.optim.batch_size=abc', 'batch_size'),
    ('--config.optim.learning_rate=fast', 'learning_rate'),
])
def test_config_mistakes_are_rejected_naming_the_field(tmp_path, override, field):
  # Run from another directory: the config file still finds its base (configs/quickstart.py).
  workdir = tmp_path / 'never'
  command = [sys.executable, '-m', 'define_jax.main', '--config',
             os.path.join(REPO_ROOT, 'configs', 'tiny.py'), '--workdir', str(workdir), override]
  result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert field in result.stderr
  assert not workdir.exists()


def test_adversarial_run_resumes_exactly_with_its_discriminator(tmp_path):
  """V5's discriminator and its Adam state live in the same checkpoint as the generator:
  a run stopped at step 2 and resumed to 4 equals a run that went to 4 at once."""
  config = tiny.get_config()
  config.loss.preset = 'final_adversarial'
  config.loss.discriminator_features = 4
  config.log.checkpoint_every_steps = 2
  config.eval.eval_every_steps = config.eval.image_every_steps = 100
  config.optim.num_train_steps = 2
  stopped = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert jax.tree.leaves(stopped.disc_opt_state)
  config.optim.num_train_steps = 4
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  uninterrupted = train.train_and_evaluate(config, str(tmp_path / 'uninterrupted'))
  parts = lambda s: (s.params, s.batch_stats, s.opt_state, s.disc_params, s.disc_opt_state)
  assert jax.tree.structure(parts(resumed)) == jax.tree.structure(parts(uninterrupted))
  for a, b in zip(jax.tree.leaves(parts(resumed)), jax.tree.leaves(parts(uninterrupted))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  # The discriminator trained: it moved from its initialisation.
  initial = steps.create_train_state(config, jax.random.key(config.seed)).disc_params
  assert any(np.abs(np.asarray(a) - np.asarray(b)).max() > 0
             for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(resumed.disc_params)))


class CompileCounter:
  """XLA compilations (jax.monitoring's backend-compile events, also on a persistent-cache
  hit) during each call of the pmapped train steps that steps.make_p_train_step makes, and
  ahead of them (check_step_memory's lowering)."""

  EVENT = '/jax/core/compile/backend_compile_duration'

  def __init__(self, monkeypatch):
    self.events, self.per_call, self.ahead = [], [], 0
    make = steps.make_p_train_step

    def counting_make(config):
      p_train_step = make(config)

      def call(*arguments):
        before = len(self.events)
        result = p_train_step(*arguments)
        self.per_call.append(len(self.events) - before)
        return result

      def lower(*arguments):
        counter = self

        class Lowered:  # Counts the compile of train.check_step_memory's lowering.
          def __init__(self):
            self.lowered = p_train_step.lower(*arguments)

          def compile(self):
            before = len(counter.events)
            compiled = self.lowered.compile()
            counter.ahead += len(counter.events) - before
            return compiled

        return Lowered()

      call.lower = lower
      return call

    monkeypatch.setattr(steps, 'make_p_train_step', counting_make)
    jax.monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event, duration, **kwargs):  # pylint: disable=unused-argument
    if event == self.EVENT:
      self.events.append(event)

  def close(self):
    jax.monitoring.unregister_event_duration_listener(self._listen)


def quiet_tiny_config(num_train_steps):
  """The tiny config (L1 loss) without evaluation or grids: only the train step compiles."""
  config = tiny.get_config()
  config.loss.preset = 'l1'
  config.optim.num_train_steps = num_train_steps
  config.eval.eval_every_steps = config.eval.image_every_steps = 0
  config.log.checkpoint_every_steps = 100
  return config


def test_train_step_compiles_once_per_run_and_per_resume(tmp_path, monkeypatch, capsys):
  counter = CompileCounter(monkeypatch)
  try:
    train.train_and_evaluate(quiet_tiny_config(4), str(tmp_path))
    first_run, counter.per_call = counter.per_call, []
    # The resume, where a device's memory is known (as on a GPU) and too small for the step:
    # the memory check compiles the step ahead, and the steps reuse that program.
    monkeypatch.setattr(train.memory, 'device_memory_limit', lambda: 1000)
    train.train_and_evaluate(quiet_tiny_config(7), str(tmp_path))
  finally:
    counter.close()
  assert first_run[0] >= 1 and first_run[1:] == [0, 0, 0], first_run
  assert counter.ahead >= 1 and counter.per_call == [0, 0, 0], (counter.ahead, counter.per_call)
  out = capsys.readouterr().out
  assert "warning: the train step needs" in out and 'more than the 0.0 GB JAX may use' in out


def test_training_stops_when_another_run_takes_its_workdir_over(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, 'RENEW_S', 0.05)
  make = steps.make_p_train_step
  renew = workdir_lock.Lease.renew
  found_lost = threading.Event()

  def renew_and_tell(lease):
    renewed = renew(lease)
    if not renewed:
      found_lost.set()
    return renewed

  monkeypatch.setattr(workdir_lock.Lease, 'renew', renew_and_tell)

  def taken_over_after_the_first_step(config):
    p_train_step = make(config)
    calls = []

    def call(*arguments):
      calls.append(1)
      if len(calls) == 2:  # Another run has taken the lock over meanwhile.
        # Replaced atomically, as runs write the lock, until a renewal finds it however busy
        # the machine (one that had just read its own record may write it back once).
        deadline = time.monotonic() + 60
        while not found_lost.is_set() and time.monotonic() < deadline:
          theirs = tmp_path / 'theirs.tmp'
          theirs.write_text(json.dumps(
              {'pid': 4242, 'host': 'node-17', 'started': 'now', 'token': 'theirs'}))
          os.replace(theirs, tmp_path / workdir_lock.LOCK_NAME)
          found_lost.wait(0.2)
      return p_train_step(*arguments)

    call.lower = p_train_step.lower
    return call

  monkeypatch.setattr(steps, 'make_p_train_step', taken_over_after_the_first_step)
  config = quiet_tiny_config(6)
  config.log.checkpoint_every_steps = 1
  with pytest.raises(workdir_lock.WorkdirInUseError, match='taken over by PID 4242 on node-17'):
    train.train_and_evaluate(config, str(tmp_path))
  # The save begun while the run held the lock was completed and sealed before it stopped
  # (no save left writing behind it); none began after.
  assert checkpoints.create_manager(str(tmp_path)).all_steps() == [1]
  step_dir = tmp_path / 'checkpoints' / '1'
  assert (step_dir / checkpoints.CHECKSUMS).exists()
  checkpoints.verify_checksums(step_dir)
  assert json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())['token'] == 'theirs'


def test_training_without_validation_images_runs_unscored(tmp_path, capsys):
  faces = tmp_path / 'faces'
  faces.mkdir()
  for index in range(3):
    Image.fromarray((astronaut(80, 64) * 255).astype(np.uint8)[:, ::(-1) ** index]).save(
        faces / f'{index}.png')
  config = quiet_tiny_config(2)
  config.input.dataset, config.input.image_dir = 'image_folder', str(faces)
  config.input.validation_fraction = 0.0
  config.eval.eval_every_steps = 1
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  out = capsys.readouterr().out
  assert 'warning: the validation split of' in out and 'training without evaluation' in out
  assert 'eval at step' not in out
  assert os.path.exists(tmp_path / 'run' / 'before_after.png')  # Grids of training images.


@pytest.mark.parametrize('images_per_sec, shown', [
    (35.24, '35.2 img/s'), (0.05, '0.05 img/s (20.0 s/img)'), (0.0123, '0.012 img/s (81.3 s/img)')])
def test_progress_line_shows_slow_rates(images_per_sec, shown):
  line = train._progress_line(4, 10, 0.5, images_per_sec, time.time(), 0)
  assert f'| {shown} |' in line
