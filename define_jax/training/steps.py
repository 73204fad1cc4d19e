"""A training run's settings check, train state, optimizer and the per-device train step.

The training loop, the loss study and the benchmarks share it; the network itself is built
by define_jax.model.network. It imports only jax/flax/optax/numpy, no TensorFlow and no clu,
so it runs on any accelerator host.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import optax
from flax import jax_utils
from flax.training import train_state

from define_jax.config import config_lib
from define_jax.model import masking
from define_jax.model import models
from define_jax.model import network
from define_jax.model import vgg_weights
from define_jax.training import losses

if TYPE_CHECKING:  # Configs are ConfigDicts; the core itself never needs ml_collections.
  import ml_collections

# The pmap axis over which gradients, metrics and BatchNorm statistics are averaged.
AXIS_NAME = 'batch'



class TrainState(train_state.TrainState):
  """Optimizer state plus BatchNorm statistics and non-finite step bookkeeping."""

  batch_stats: Any
  # Consecutive steps skipped because loss or gradients were NaN/Inf.
  nonfinite_streak: jax.Array
  # All steps skipped so far for the same reason.
  nonfinite_total: jax.Array
  # Exponential moving averages of params and batch_stats ({} when config.optim.ema_decay == 0);
  # evaluation, inference and export use them.
  ema_params: Any = flax.struct.field(default_factory=dict)
  ema_batch_stats: Any = flax.struct.field(default_factory=dict)
  # The adversarial loss's discriminator and its Adam state ({} without that loss); its
  # optimizer is discriminator_optimizer(config.loss), built by the step, not stored.
  disc_params: Any = flax.struct.field(default_factory=dict)
  disc_opt_state: Any = flax.struct.field(default_factory=dict)


def create_discriminator(loss: ml_collections.ConfigDict) -> models.PatchDiscriminator:
  return models.PatchDiscriminator(features=loss.discriminator_features)


def discriminator_optimizer(loss: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with pix2pix's beta1 = 0.5 at a constant rate: a discriminator that must keep
  pace with a changing generator gains nothing from a long momentum or a decay."""
  return optax.adam(loss.discriminator_learning_rate, b1=0.5)


LR_SCHEDULES = ('constant', 'cosine', 'linear')


def validate(config: ml_collections.ConfigDict, *, device_count: int | None = None) -> None:
  """Rejects inconsistent settings before anything is compiled, naming the field.

  device_count: devices the global batch is split over (default: all of JAX's).
  """
  unknown = sorted(set(config.keys()) - {'seed', *config_lib.SECTIONS})
  if unknown:  # An unlocked config takes any new field, e.g. one set by its pre-section name.
    raise ValueError(f'config.{unknown[0]} is no field: fields are in the sections '
                     f'{", ".join(config_lib.SECTIONS)} (configs/default.py).')
  network.validate_model(config.model)
  loss, optim = config.loss, config.optim
  losses.get_loss_weights(loss.preset)  # Raises with the known presets.
  if loss.tv_region not in losses.TV_REGIONS:
    raise ValueError(f'config.loss.tv_region={loss.tv_region!r}: expected one of '
                     f'{losses.TV_REGIONS}.')
  device_count = jax.device_count() if device_count is None else device_count
  if optim.batch_size <= 0 or optim.batch_size % device_count:
    raise ValueError(
        f'config.optim.batch_size={optim.batch_size} must be a positive multiple of the '
        f'{device_count} devices (the global batch is split evenly across them).')
  if optim.learning_rate <= 0:
    raise ValueError(f'config.optim.learning_rate={optim.learning_rate} must be positive.')
  if optim.lr_schedule not in LR_SCHEDULES:
    raise ValueError(f'config.optim.lr_schedule={optim.lr_schedule!r}: expected one of '
                     f'{LR_SCHEDULES}.')
  if not 0 <= optim.warmup_steps < max(optim.num_train_steps, 1):
    raise ValueError(f'config.optim.warmup_steps={optim.warmup_steps} must lie in '
                     f'[0, num_train_steps={optim.num_train_steps}).')
  if not 0 <= optim.final_learning_rate_fraction <= 1:
    raise ValueError('config.optim.final_learning_rate_fraction='
                     f'{optim.final_learning_rate_fraction} must lie in [0, 1].')
  if optim.grad_clip_norm < 0:
    raise ValueError(f'config.optim.grad_clip_norm={optim.grad_clip_norm} must be >= 0 '
                     '(0 = off).')
  if not 0 <= optim.ema_decay < 1:
    raise ValueError(f'config.optim.ema_decay={optim.ema_decay} must lie in [0, 1) (0 = off).')
  if losses.needs_discriminator(losses.get_loss_weights(loss.preset)):
    for field in ('discriminator_features', 'discriminator_learning_rate'):
      if loss[field] <= 0:
        raise ValueError(f'config.loss.{field}={loss[field]} must be positive.')
    if loss.r1_gamma < 0:
      raise ValueError(f'config.loss.r1_gamma={loss.r1_gamma} must be >= 0 (0 = no R1 '
                       'penalty).')
  for field in ('eval_every_steps', 'image_every_steps'):
    if config.eval[field] < 0:
      raise ValueError(f'config.eval.{field}={config.eval[field]} must be >= 0 (0 = never).')
  if optim.init_from is None:
    raise ValueError(
        'config.optim.init_from is required by this config: pass the stage-one workdir, '
        'e.g. --config.optim.init_from=runs/ffhq256.')


def learning_rate_schedule(optim: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up from 0 over warmup_steps, then constant or a cosine/linear decay to
  final_learning_rate_fraction * learning_rate at num_train_steps (config.optim)."""
  peak, warmup = optim.learning_rate, optim.warmup_steps
  decay_steps = max(optim.num_train_steps - warmup, 1)
  end = peak * optim.final_learning_rate_fraction
  after_warmup = {
      'constant': optax.constant_schedule(peak),
      'cosine': optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak),
      'linear': optax.linear_schedule(peak, end, decay_steps),
  }[optim.lr_schedule]
  if not warmup:
    return after_warmup
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after_warmup],
                              [warmup])


def create_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam on the scheduled learning rate, after optional global-norm gradient clipping."""
  clip = optim.grad_clip_norm

  def adam(learning_rate):
    chain = [optax.clip_by_global_norm(clip)] if clip else []
    return optax.chain(*chain, optax.adam(learning_rate))

  # inject_hyperparams keeps the learning rate in the optimizer state, so it can be logged
  # and replaced when a run resumes with another constant rate (see with_learning_rate).
  rate = (optim.learning_rate if optim.lr_schedule == 'constant' and not optim.warmup_steps
          else learning_rate_schedule(optim))
  return optax.inject_hyperparams(adam)(learning_rate=rate)


def with_learning_rate(state: TrainState, rate: float) -> TrainState:
  """The state with its optimizer's learning rate set to `rate` (e.g. after a restore)."""
  hyperparams = dict(state.opt_state.hyperparams, learning_rate=jnp.asarray(rate, jnp.float32))
  return state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))


def create_train_state(config: ml_collections.ConfigDict, rng: jax.Array,
                       variables: Mapping[str, Any] | None = None) -> TrainState:
  """A fresh (unreplicated) train state, from random init or the given variables."""
  if variables is None:
    variables = network.init_variables(config.model, rng)
  ema = config.optim.ema_decay > 0
  disc_params, disc_opt_state = {}, {}
  if losses.needs_discriminator(losses.get_loss_weights(config.loss.preset)):
    size = config.model.image_size
    disc_params = flax.core.unfreeze(jax.jit(create_discriminator(config.loss).init)(
        jax.random.fold_in(rng, 1), jnp.zeros((1, size, size, 3), jnp.float32)))['params']
    disc_opt_state = discriminator_optimizer(config.loss).init(disc_params)
  return TrainState.create(
      apply_fn=network.create_model(config.model, axis_name=AXIS_NAME).apply,
      params=variables['params'],
      batch_stats=variables['batch_stats'],
      tx=create_optimizer(config.optim),
      nonfinite_streak=jnp.zeros((), jnp.int32),
      nonfinite_total=jnp.zeros((), jnp.int32),
      ema_params=jax.tree.map(jnp.copy, variables['params']) if ema else {},
      ema_batch_stats=jax.tree.map(jnp.copy, variables['batch_stats']) if ema else {},
      disc_params=disc_params, disc_opt_state=disc_opt_state)


def inference_variables(state: TrainState) -> dict[str, Any]:
  """The variables evaluation and inference use: the moving averages when kept."""
  if state.ema_params:
    return {'params': state.ema_params, 'batch_stats': state.ema_batch_stats}
  return {'params': state.params, 'batch_stats': state.batch_stats}


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
  """The averaging rate at `step`: min(decay, (1 + step) / (10 + step)), so that early
  averages are not dominated by the random initialisation."""
  step = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def learning_rate(state: TrainState) -> jax.Array:
  return state.opt_state.hyperparams['learning_rate']


def loss_fn_for_config(config: ml_collections.ConfigDict) -> Callable[..., tuple[jax.Array, dict]]:
  """(output, target, mask, vgg_params, discriminator=None) -> (total, terms) for the
  configured preset; discriminator maps images to patch logits (adversarial presets)."""
  weights = losses.get_loss_weights(config.loss.preset)
  needs_vgg = losses.needs_vgg(weights)
  origin = load_vgg(config.loss)[1] if needs_vgg else None

  def loss_fn(output, target, mask, vgg_params, discriminator=None):
    # VGG computes in the model's dtype too (most of a step's FLOPs); its features, like
    # the network output, are cast to float32 before any loss term.
    features = (vgg_weights.vgg_feature_fn(vgg_params, origin, network.DTYPES[config.model.dtype])
                if needs_vgg else None)
    return losses.total_loss(weights, output, target, mask, features,
                             tv_region=config.loss.tv_region, discriminator=discriminator)

  return loss_fn


@functools.lru_cache(maxsize=4)
def _load_vgg_cached(source: str):
  return vgg_weights.load_vgg16(source)


def load_vgg(loss: ml_collections.ConfigDict) -> tuple[Any, str | None]:
  """(params, origin) of the VGG16 trunk, or ({}, None) when the loss section's preset
  needs no VGG."""
  if not losses.needs_vgg(losses.get_loss_weights(loss.preset)):
    return {}, None
  return _load_vgg_cached(loss.vgg_weights)


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(state: TrainState, batch: Mapping[str, jax.Array], vgg_params: Any, *,
               loss_fn: Callable[..., tuple[jax.Array, dict]],
               ema_decay: float = 0.0,
               discriminator: models.PatchDiscriminator | None = None,
               disc_tx: optax.GradientTransformation | None = None,
               r1_gamma: float = 0.0) -> tuple[TrainState, dict]:
  """One optimizer step on one device's shard; call under pmap with axis_name=AXIS_NAME.

  Gradients, BatchNorm statistics and metrics are averaged over the device axis. A step
  whose loss or gradients are not finite leaves parameters, statistics and optimizer
  state unchanged (only `step` and the non-finite counters move).

  With a discriminator (adversarial presets) both networks step at once: the generator
  against the discriminator as it was, which learns to tell the ground truth from the
  composite (no gradient into the generator), with an R1 penalty of weight r1_gamma / 2.
  """
  judge = None
  if discriminator is not None:
    judge = lambda images: discriminator.apply({'params': state.disc_params}, images)

  def compute_loss(params):
    output, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats},
        batch['image'], batch['mask'], train=True, mutable=['batch_stats'])
    total, terms = loss_fn(output, batch['image'], batch['mask'], vgg_params, judge)
    return total, (terms, updates['batch_stats'], output)

  (total, (terms, batch_stats, output)), grads = jax.value_and_grad(
      compute_loss, has_aux=True)(state.params)
  grads = jax.lax.pmean(grads, AXIS_NAME)
  batch_stats = jax.lax.pmean(batch_stats, AXIS_NAME)
  checked = [jax.lax.pmean(total, AXIS_NAME), grads]
  if discriminator is not None:
    fake = jax.lax.stop_gradient(masking.composite(
        output.astype(jnp.float32), batch['image'], batch['mask']))
    disc_terms, disc_grads = _discriminator_gradients(
        discriminator, state.disc_params, batch['image'], fake, r1_gamma)
    terms = {**terms, **disc_terms}
    checked.append(disc_grads)
  finite = _all_finite(checked)

  updated = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  params = keep(updated.params, state.params)
  batch_stats = keep(updated.batch_stats, state.batch_stats)
  if ema_decay:  # A skipped (non-finite) step leaves the averages unchanged too.
    rate = jnp.where(finite, ema_decay_at(state.step, ema_decay), 1.0)
    average = lambda new, old: jax.tree.map(lambda n, o: rate * o + (1 - rate) * n, new, old)
    updated = updated.replace(ema_params=average(params, state.ema_params),
                              ema_batch_stats=average(batch_stats, state.ema_batch_stats))
  if discriminator is not None:
    disc_updates, disc_opt_state = disc_tx.update(disc_grads, state.disc_opt_state,
                                                  state.disc_params)
    updated = updated.replace(
        disc_params=keep(optax.apply_updates(state.disc_params, disc_updates),
                         state.disc_params),
        disc_opt_state=keep(disc_opt_state, state.disc_opt_state))
  new_state = updated.replace(
      params=params,
      batch_stats=batch_stats,
      opt_state=keep(updated.opt_state, state.opt_state),
      nonfinite_streak=jnp.where(finite, 0, state.nonfinite_streak + 1),
      nonfinite_total=state.nonfinite_total + (1 - finite.astype(jnp.int32)))
  metrics = jax.lax.pmean(terms, AXIS_NAME)
  metrics['learning_rate'] = learning_rate(state)
  metrics['nonfinite_streak'] = new_state.nonfinite_streak
  metrics['nonfinite_total'] = new_state.nonfinite_total
  return new_state, metrics


def _discriminator_gradients(discriminator: models.PatchDiscriminator, disc_params: Any,
                             real: jax.Array, fake: jax.Array, r1_gamma: float
                             ) -> tuple[dict[str, jax.Array], Any]:
  """({'discriminator', 'r1'}, device-averaged gradients) of the discriminator's loss."""

  def loss(params):
    judge = lambda images: discriminator.apply({'params': params}, images)
    logits = judge(jnp.concatenate([real, fake]))
    gan = losses.discriminator_loss(logits[:real.shape[0]], logits[real.shape[0]:])
    r1 = losses.r1_penalty(judge, real)
    return gan + 0.5 * r1_gamma * r1, {'discriminator': gan, 'r1': r1}

  (_, terms), grads = jax.value_and_grad(loss, has_aux=True)(disc_params)
  return terms, jax.lax.pmean(grads, AXIS_NAME)


# An identity under pmap: what it returns is placed exactly as the pmapped steps place theirs.
_place_as_step_outputs = jax.pmap(lambda tree: tree, axis_name=AXIS_NAME, donate_argnums=0)


def replicate(tree: Any) -> Any:
  """`tree` copied to every local device, placed as the pmapped train step places the state
  it returns, so that its first call and every later one run the same compiled program.

  A pmapped function compiles once per placement of its inputs. With JAX's pmap built on jit
  (JAX >= 0.7), flax.jax_utils.replicate's placement (a device mesh with an axis of its
  own name) is not the one of the step's outputs (a mesh with axis AXIS_NAME): the train
  step compiled before step 1 and again before step 2, after every resume too (about 70 s
  each at 512² on a 2-core CPU). An identity pmap gives the tree the step's output
  placement on any JAX version.
  """
  return _place_as_step_outputs(jax_utils.replicate(tree))


def make_p_train_step(config: ml_collections.ConfigDict) -> Callable:
  """The pmapped train step; the input state is donated (updated in place). Place the first
  state with `replicate`, so that the step compiles once."""
  adversarial = losses.needs_discriminator(losses.get_loss_weights(config.loss.preset))
  return jax.pmap(
      functools.partial(
          train_step, loss_fn=loss_fn_for_config(config), ema_decay=config.optim.ema_decay,
          discriminator=create_discriminator(config.loss) if adversarial else None,
          disc_tx=discriminator_optimizer(config.loss) if adversarial else None,
          r1_gamma=config.loss.r1_gamma),
      axis_name=AXIS_NAME, donate_argnums=(0,))
