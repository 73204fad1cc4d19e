"""The training loop: data-parallel (pmap) training with evaluation, logging and checkpoints.

Follows the Flax ImageNet example: `train_and_evaluate(config, workdir)` builds the state,
resumes from the newest readable checkpoint in the workdir, streams tf.data batches of shape
[local_devices, per_device_batch, ...] and only brings metrics to the host every
`config.log.log_every_steps`.

The terminal gets short lines for people (`report`: start, progress, evaluations, checkpoint
saves, end) from process 0; per-process diagnostics go to the absl log at INFO, shown with
main's --verbosity=0.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import signal
import time
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from clu import periodic_actions
from etils import epath
from flax import jax_utils
from jax.experimental import multihost_utils

from define_jax.config import config_lib
from define_jax.data import image_sources
from define_jax.data import pipeline
from define_jax.data import skips
from define_jax.eval import evaluation_set
from define_jax.eval import grids
from define_jax.eval import scoring
from define_jax.inference import Inpainter
from define_jax.inference import memory
from define_jax.model import checkpoints
from define_jax.model import network
from define_jax.training import steps
from define_jax.training import workdir_lock


class StopSignal:
  """Turns SIGTERM (cloud preemption notice) and Ctrl-C into a request to checkpoint and stop."""

  def __init__(self):
    self.received: str | None = None

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.received = signal.Signals(signum).name

  @contextlib.contextmanager
  def installed(self):
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in handlers:
      signal.signal(sig, self._handle)
    try:
      yield self
    finally:
      for sig, handler in handlers.items():
        signal.signal(sig, handler)

  def any_process_received(self) -> bool:
    """True on every process once any process was signalled (a collective when multi-host)."""
    local = self.received is not None
    if jax.process_count() == 1:
      return local
    return bool(np.any(multihost_utils.process_allgather(np.asarray(local))))


def initial_variables(config: ml_collections.ConfigDict) -> dict | None:
  """Model variables of the run named by config.optim.init_from, checked for compatibility."""
  init_from = config.optim.init_from
  if not init_from:
    return None
  variables, source_config, step = checkpoints.load_model(init_from)
  source_model = source_config['model']
  # A model trained without the mirror input starts a mirror run: the side input's kernel
  # is added at zero (models.py), so the network computes the source's function exactly.
  grows_mirror = config.model.mirror and not source_model.get('mirror', False)
  network.check_same_architecture(
      config.model, {**source_model, 'mirror': config.model.mirror} if grows_mirror
      else source_model, f'config.optim.init_from={init_from!r}')
  if grows_mirror:
    fresh = network.init_variables(config.model, jax.random.key(config.seed))
    variables = jax.tree.map(lambda leaf: leaf, variables)  # A copy to add to.
    variables['params']['enc_1']['side_input'] = fresh['params']['enc_1']['side_input']
    report(f'Initialised from {init_from} at step {step}, with the mirror input added at zero.')
  else:
    report(f'Initialised from {init_from} at step {step}.')
  return variables


def parameter_fingerprint(variables: dict) -> str:
  """A digest of the exact values of {'params', 'batch_stats'}: equal digests mean equal
  models (across the processes of a run, or a run and a checkpoint)."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(variables):
    digest.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
  return digest.hexdigest()[:16]


def report(message: str) -> None:
  """One line on the terminal, from process 0 only."""
  if jax.process_index() == 0:
    print(message, flush=True)


def numpy_batches(dataset) -> Iterator[dict[str, np.ndarray]]:
  for batch in dataset.as_numpy_iterator():
    yield {'image': batch['image'], 'mask': batch['mask']}


def _use_state(inpainter: Inpainter, state) -> None:
  """Lets the inpainter use the (replicated) state's inference variables (EMA when kept)."""
  inpainter.set_variables(jax_utils.unreplicate(steps.inference_variables(state)))


def evaluate(inpainter: Inpainter, state, eval_set: evaluation_set.EvalSet,
             batch_size: int) -> dict[str, float]:
  """The state's scores as `evaluate` reports them in its 'All' row: mean L1, PSNR, SSIM,
  LPIPS-VGG and LPIPS-Alex of the composite (the inpainter's paste-back) over the images in a hole-ratio band.

  Every process scores the whole set on its local devices (the same calls everywhere), so
  all get the same numbers without a collective.
  """
  _use_state(inpainter, state)
  per_image, _ = scoring.score_inpainters({'model': inpainter}, eval_set, batch_size)
  scores = scoring.overall(per_image['model'], eval_set.bands)
  return {f'eval_{metric}': value for metric, value in scores.items()}


def sample_grid(inpainter: Inpainter, state, images: np.ndarray,
                known: np.ndarray) -> np.ndarray:
  """masked input | mask | composite | truth of the first sample images."""
  _use_state(inpainter, state)
  return grids.inpainting_grid(images, known, inpainter.inpaint_arrays(images, known))


def write_before_after(workdir: str, inpainter: Inpainter, state, starting_variables: dict,
                       images: np.ndarray, known: np.ndarray) -> str:
  """masked input | model before training | trained model | ground truth, on the first
  sample images ("before" is the random init, or the init_from model when fine-tuning);
  returns the file's path."""
  _use_state(inpainter, state)
  after = inpainter.inpaint_arrays(images, known)
  inpainter.set_variables(starting_variables)
  before = inpainter.inpaint_arrays(images, known)
  picture = grids.grid(grids.comparison(images, known, [before, after]))
  path = os.path.join(workdir, 'before_after.png')
  grids.save_png(path, picture, titles=['input', 'before', 'after', 'truth'])
  return path


def evaluation_images(config: ml_collections.ConfigDict) -> tuple[evaluation_set.EvalSet, bool]:
  """The fixed evaluation set and whether to score it (config.eval.eval_every_steps > 0). A
  dataset without validation images (a partial FFHQ download of one file, an image folder
  with validation_fraction=0) trains without scores, its grids showing training images."""
  try:
    return evaluation_set.for_training(config), config.eval.eval_every_steps > 0
  except image_sources.EmptySplitError as error:
    report(f'warning: {error}: training without evaluation; the image grids show training '
           'images.')
    return evaluation_set.for_training(config, 'train'), False


def check_step_memory(p_train_step, *arguments) -> None:
  """Warns before the first step when the compiled train step needs more memory per device,
  by XLA's memory analysis, than JAX may use of a device (known on GPU and TPU). Compiling
  ahead costs nothing: the step's first call runs the program compiled here."""
  limit = memory.device_memory_limit()
  if limit is None:
    return
  peak = memory.step_peak_bytes(p_train_step.lower(*arguments).compile())
  logging.info('Train step: %.2f GB per device (XLA memory analysis); devices allow %.2f GB.',
               peak / memory.GB, limit / memory.GB)
  if peak > limit:
    report(f'warning: the train step needs {peak / memory.GB:.1f} GB per device by XLA\'s '
           f'memory analysis, more than the {limit / memory.GB:.1f} GB JAX may use of '
           f'{jax.local_devices()[0].device_kind}: expect an out-of-memory error. Lower '
           'config.optim.batch_size, use config.model.dtype=bfloat16 or raise '
           'XLA_PYTHON_CLIENT_MEM_FRACTION; '
           '`python -m define_jax.benchmark memory --train --config FILE` gives the largest '
           'batch per card.')


def _mean_metrics(device_metrics: list[dict[str, Any]]) -> dict[str, float]:
  stacked = jax.device_get(device_metrics)
  # Every value was pmean-ed, so device 0 holds the cross-device mean.
  return {k: float(np.mean([m[k][0] for m in stacked])) for k in stacked[0]}


def _rate(images_per_sec: float) -> str:
  """Images per second, readable also for slow steps (one 512² image takes seconds on a CPU,
  which one decimal showed as '0.0 img/s')."""
  if images_per_sec >= 1 or images_per_sec <= 0:
    return f'{images_per_sec:.1f} img/s'
  return f'{images_per_sec:.2g} img/s ({1 / images_per_sec:.1f} s/img)'


def _progress_line(step: int, total: int, loss: float, images_per_sec: float, start: float,
                   start_step: int) -> str:
  done = step - start_step
  eta = (time.time() - start) / max(done, 1) * (total - step)
  return (f'step {step}/{total} | loss {loss:.4f} | {_rate(images_per_sec)} | '
          f'ETA {datetime.timedelta(seconds=int(eta))}')


def _eval_line(step: int, scores: dict[str, float]) -> str:
  return (f'eval at step {step} | L1 (x100) {100 * scores["eval_l1"]:.2f} | '
          f'PSNR {scores["eval_psnr"]:.2f} | SSIM {scores["eval_ssim"]:.4f} | '
          f'LPIPS-VGG {scores["eval_lpips"]:.4f} | LPIPS-Alex {scores["eval_lpips_alex"]:.4f}')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """Trains (or resumes) the configured model in `workdir`; returns the final train state.

  ValueError (before anything is built) for an invalid config, a workdir that is a file or
  is in use by another run (see workdir_lock), or checkpoints of another architecture.
  """
  steps.validate(config)
  workdir = checkpoints.resolve_workdir(workdir)
  if '://' not in workdir and os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir {workdir} is a file, not a directory.')
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  # Process 0 holds the lock for a multi-host run; buckets cannot hold one.
  if '://' in workdir or jax.process_index() != 0:
    return _train_and_evaluate(config, workdir, None)
  with workdir_lock.held(workdir) as lease:
    return _train_and_evaluate(config, workdir, lease)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        lease: workdir_lock.Lease | None) -> Any:
  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  config_dict = config.to_dict()
  optim, log = config.optim, config.log

  state = steps.create_train_state(config, jax.random.key(config.seed),
                                   initial_variables(config))
  # Kept on the host for before_after.png, so the end of the run needs no re-initialisation.
  starting_variables = jax.device_get(
      {'params': state.params, 'batch_stats': state.batch_stats})
  manager = checkpoints.create_manager(workdir, keep=config.log.keep_checkpoints)
  restored = checkpoints.restore_latest(manager, state, config.model)
  if restored is not None:
    state = steps.with_learning_rate(restored, optim.learning_rate)
    logging.info('Resuming from %s at step %d.', checkpoints.checkpoint_dir(workdir),
                 int(state.step))
  else:
    writer.write_hparams({field: value for field, value in config_lib.flatten(config_dict).items()
                          if value is not None})
  start_step = int(state.step)
  if start_step >= optim.num_train_steps:
    report(f'Nothing to do: {workdir} is at step {start_step} >= optim.num_train_steps='
           f'{optim.num_train_steps}.')
    return state

  state = steps.replicate(state)  # Placed as the step's outputs: one compile (steps.replicate).
  vgg_params = jax_utils.replicate(steps.load_vgg(config.loss)[0])
  p_train_step = steps.make_p_train_step(config)

  train_dataset = pipeline.create_train_dataset(config, start_step=start_step)
  train_iter = jax_utils.prefetch_to_device(numpy_batches(train_dataset), 2)
  eval_set, scoring = evaluation_images(config)
  # Scores on this process's devices with the current variables (see evaluate).
  inpainter = Inpainter(starting_variables, config)
  inpainter.refuse_non_finite = False  # NaN scores are logged; the non-finite guard stops.
  eval_batch_size = optim.batch_size // jax.process_count()
  # The grids show the first scoring batch: a batch shape the evaluation compiled already.
  sample_images = eval_set.images[:eval_batch_size], eval_set.known[:eval_batch_size]

  hooks = [periodic_actions.ReportProgress(num_train_steps=optim.num_train_steps,
                                           writer=writer, every_steps=log.log_every_steps)]
  if log.profile and is_chief:
    hooks.append(periodic_actions.Profile(num_profile_steps=5, logdir=workdir))

  stop = StopSignal()
  train_metrics: list[dict[str, Any]] = []
  last_log_time, last_log_step, start_time = time.time(), start_step, time.time()
  step = start_step
  report(f'{"Resuming" if start_step else "Training"} {config.model.name} '
         f'({config.model.image_size}², loss {config.loss.preset!r}) at step {start_step} of '
         f'{optim.num_train_steps} on {jax.device_count()} {jax.devices()[0].platform} '
         f'device(s), {jax.process_count()} process(es); workdir {workdir}')
  with stop.installed(), checkpoints.finished_on_exit(manager):
    while step < optim.num_train_steps:
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        batch = next(train_iter)
        if step == start_step:  # Shows that every host reads its own share of the data.
          logging.info('First local batch checksum (process %d, step %d): %.8f',
                       jax.process_index(), step,
                       np.sum(jax.device_get(batch['image']), dtype=np.float64))
          check_step_memory(p_train_step, state, batch, vgg_params)
        state, metrics = p_train_step(state, batch, vgg_params)
      train_metrics.append(metrics)
      step += 1
      if lease is not None:  # Stops before writing anything if another run took the workdir.
        lease.check()
      for hook in hooks:
        hook(step)
      last_step = step == optim.num_train_steps

      if step % log.log_every_steps == 0 or last_step:
        summary = _mean_metrics(train_metrics)
        train_metrics = []
        now = time.time()
        images_per_sec = (step - last_log_step) * optim.batch_size / (now - last_log_time)
        last_log_time, last_log_step = now, step
        streak = int(summary.pop('nonfinite_streak'))
        summary['images_per_sec'] = images_per_sec
        summary.update({f'skipped_{kind}': count
                        for kind, count in skips.skipped_input_counts().items()})
        writer.write_scalars(step, {f'train_{k}': v for k, v in summary.items()})
        report(_progress_line(step, optim.num_train_steps, summary['total'],
                              images_per_sec, start_time, start_step))
        if streak >= optim.max_consecutive_nonfinite_steps:
          raise FloatingPointError(
              f'{streak} consecutive steps up to step {step} had NaN/Inf loss or gradients '
              f'and were skipped (config.optim.max_consecutive_nonfinite_steps='
              f'{optim.max_consecutive_nonfinite_steps}). Training stopped; the last good '
              f'checkpoint in {checkpoints.checkpoint_dir(workdir)} is kept. Lower '
              'config.optim.learning_rate or try config.model.dtype=float32.')

      if scoring and (step % config.eval.eval_every_steps == 0 or last_step):
        with hooks[0].timed('eval'):
          scores = evaluate(inpainter, state, eval_set, eval_batch_size)
        writer.write_scalars(step, scores)
        report(_eval_line(step, scores))

      image_every = config.eval.image_every_steps
      if is_chief and image_every and (step % image_every == 0 or last_step):
        picture = sample_grid(inpainter, state, *sample_images)
        writer.write_images(step, {'samples': picture[None]})
        grids.save_png(os.path.join(workdir, 'images', f'step_{step:07d}.png'), picture)

      # Multi-host runs agree on stopping at log steps (a collective), so all save together.
      if jax.process_count() == 1:
        preempted = stop.received is not None
      else:
        preempted = step % log.log_every_steps == 0 and stop.any_process_received()
      if step % log.checkpoint_every_steps == 0 or last_step or preempted:
        checkpoints.save(manager, jax_utils.unreplicate(state), config_dict)
        report(f'checkpoint {step} -> {checkpoints.checkpoint_dir(workdir)}')
      if preempted:
        logging.warning('Received %s: saved a checkpoint at step %d in %s and stopped. '
                        'Run the same command again to resume.', stop.received, step,
                        checkpoints.checkpoint_dir(workdir))
        break

  if step == optim.num_train_steps and is_chief:
    path = write_before_after(workdir, inpainter, state, starting_variables, *sample_images)
    elapsed = datetime.timedelta(seconds=int(time.time() - start_time))
    report(f'Finished {step} steps in {elapsed}. Wrote {path}')
  writer.flush()
  return jax_utils.unreplicate(state)
