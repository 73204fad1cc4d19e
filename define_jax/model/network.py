"""The network a model section (config.model) describes: its checks, its construction, its
variables and the inpaint step.

Training (define_jax.training.steps), inference, evaluation and the benchmarks build networks
here. It imports only jax/flax/numpy, no optax, no TensorFlow and no clu.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp

from define_jax.config import config_fallback
from define_jax.config import config_lib
from define_jax.model import masking
from define_jax.model import models
from define_jax.model import prefill

if TYPE_CHECKING:  # Configs are ConfigDicts; the core itself never needs ml_collections.
  import ml_collections

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# Bounds of the network's size: 8192² already needs tens of GB per image, and larger values
# would only overflow (a stored image_size of 10**9 aborted the process).
MAX_IMAGE_SIZE = 8192
MAX_LAYERS = 13  # 2**13 = MAX_IMAGE_SIZE: a deeper U-Net has no pixels left.


def _check_type(section: Mapping[str, Any], field: str, kind: type, where: str) -> None:
  value = section[field]
  # bool is an int in Python; a stored True is no image size.
  if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
    raise ValueError(f'{where}{field}={value!r}: expected {kind.__name__}.')


def validate_model(model: Mapping[str, Any], where: str = 'config.model.') -> None:
  """Rejects a model section (config.model) that lacks a field its network is built from,
  or has one of the wrong type or out of range, before anything is built, naming the
  field; `where` prefixes the names (a stored config names its file)."""
  if not isinstance(model.get('name'), str) or model['name'] not in models.MODELS:
    raise ValueError(f'{where}name={model.get("name")!r}: expected one of '
                     f'{sorted(models.MODELS)}.')
  hyperparameters = model_hyperparameters(model['name'])
  missing = [field for field in ('image_size', 'dtype', *hyperparameters) if field not in model]
  if missing:
    raise ValueError(f'{where[:-1]} lacks {", ".join(missing)}.')
  _check_type(model, 'image_size', int, where)
  for field, default in hyperparameters.items():  # The Module's defaults give the types.
    if isinstance(default, (bool, int, str)):
      _check_type(model, field, type(default), where)
  for field, choices in (('dtype', sorted(DTYPES)), ('prefill', list(models.PREFILLS)),
                         ('face_prefill', [None, *prefill.FILLS])):
    if field in model and model[field] not in choices:
      raise ValueError(f'{where}{field}={model[field]!r}: expected one of {choices}.')
  if model.get('face_prefill') is not None and model.get('prefill', 'none') == 'none':
    raise ValueError(f'{where}face_prefill={model["face_prefill"]!r} needs a network trained '
                     f"with a prefill (its prefill is 'none'): the fill is one of its inputs.")
  for field in ('base_features', 'max_features'):
    if field in hyperparameters and model[field] < 1:
      raise ValueError(f'{where}{field}={model[field]}: must be positive.')
  if not 1 <= model['image_size'] <= MAX_IMAGE_SIZE:
    raise ValueError(f'{where}image_size={model["image_size"]}: must lie in [1, '
                     f'{MAX_IMAGE_SIZE}].')
  if 'layers' not in hyperparameters:
    return
  if not 2 <= model['layers'] <= MAX_LAYERS:
    raise ValueError(f'{where}layers={model["layers"]}: need 2 to {MAX_LAYERS} levels.')
  if model['image_size'] % (2 ** model['layers']):
    raise ValueError(
        f'{where}image_size={model["image_size"]} is not divisible by 2**layers='
        f'{2 ** model["layers"]}; use layers=7 for 256², 8 for 512², or a matching '
        'image_size.')


def model_hyperparameters(name: str) -> dict[str, Any]:
  """{field: default} of the fields of models.MODELS[name] that the model section sets:
  the Module's dataclass fields but those Flax (parent, name), pmap (axis_name) and the
  registry entry (a functools.partial's keywords) fix."""
  builder = models.MODELS[name]
  module = getattr(builder, 'func', builder)
  fixed = {'parent', 'name', 'axis_name', *getattr(builder, 'keywords', {})}
  return {field.name: field.default for field in dataclasses.fields(module)
          if field.name not in fixed}


def create_model(model: ml_collections.ConfigDict, *, axis_name: str | None = None,
                 prefill: str | None = None):
  """The network of a model section (config.model): models.MODELS[model.name] built from
  the section's fields of the same names (dtype by name); axis_name=None gives a model
  usable outside pmap; prefill, where given, replaces model.prefill (same weights, another
  fill of the holes as input: model.face_prefill)."""
  settings = {field: model[field] for field in model_hyperparameters(model.name)}
  settings['dtype'] = DTYPES[model.dtype]
  if prefill is not None and 'prefill' in settings:
    settings['prefill'] = prefill
  return models.MODELS[model.name](**settings, axis_name=axis_name)


def variable_shapes(model: Mapping[str, Any]) -> dict[str, Any]:
  """jax.ShapeDtypeStructs of the variables ({'params', 'batch_stats'}) of a model
  section's network: traced, not computed (do not modify the cached result)."""
  return _variable_shapes(json.dumps(dict(model.items()), sort_keys=True))


@functools.lru_cache(maxsize=8)
def _variable_shapes(model_json: str) -> dict[str, Any]:
  model = config_fallback.ConfigDict(json.loads(model_json))
  return jax.eval_shape(lambda: init_variables(model, jax.random.key(0)))


def init_variables(model: ml_collections.ConfigDict, rng: jax.Array) -> dict:
  """Random variables ({'params', 'batch_stats'}) of a model section's network."""
  network = create_model(model)
  shape = (1, model.image_size, model.image_size)
  variables = jax.jit(functools.partial(network.init, train=False))(
      rng, jnp.zeros(shape + (3,), jnp.float32), jnp.ones(shape + (1,), jnp.float32))
  return flax.core.unfreeze(variables)


def model_config(stored: Mapping[str, Any], path: str,
                 overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config of a checkpoint or model file at `path` (sectioned, see config_lib.sectioned), with
  `--config.SECTION.FIELD=VALUE` overrides (e.g. --config.model.dtype=bfloat16), as a
  ConfigDict its model can be built from; ValueError when its model section lacks a field
  the network is built from, holds a bad value, or an override names no stored field."""
  if not isinstance(stored, Mapping):
    raise ValueError(f'The checkpoint at {path} has no config (found {type(stored).__name__}).')
  config = config_lib.sectioned(stored)
  validate_model(config['model'], f'The config stored in {path}: model.')
  config = config_lib.ConfigDict(config)
  for override in overrides:
    config_fallback.apply_override(config, override, f'The config stored in {path}')
  if overrides:
    validate_model(config.model, 'config.model.')
  return config


def check_same_architecture(model: Mapping[str, Any], source: Mapping[str, Any],
                            source_name: str) -> None:
  """ValueError unless the model section `source` of the run `source_name` builds a network
  with the variables (names and shapes) of `model`'s: the dtype, image size, BatchNorm
  freezing and face template may differ."""
  validate_model(source, f'{source_name}: model.')
  shapes = lambda section: jax.tree.map(lambda leaf: leaf.shape, variable_shapes(section))
  if shapes(model) == shapes(source):
    return
  differing = [f'{field}={source.get(field)!r} (this config: {model.get(field)!r})'
               for field in sorted(set(model) | set(source))
               if source.get(field) != model.get(field)]
  raise ValueError(f'{source_name} was trained with another network: '
                   f'model.{", model.".join(differing)}.')


# Known pixels around a hole that vary less than this (standard deviation, fraction of
# white) are flat: there the network's correction to the smooth fill fades out, from none
# below 1 grey level (the rounding of 8-bit photos) to all of it at 3 grey levels, which
# 99.9 % of the hole pixels of 400 training faces exceed (128², NVIDIA masks; 0.1st
# percentile 3.0, 1st 7.7, median 30.5 grey levels, prefill.known_contrast at 32 pixels).
# The packaged model added ±12 to ±23 grey levels of texture to a flat grey photo's hole.
FLAT_CONTRAST = (1.0 / 255, 3.0 / 255)


def flat_fade(image: jax.Array, mask: jax.Array, cell: int) -> jax.Array:
  """[N, H, W, 1] share of the network's correction kept at each pixel: 0 where the known
  pixels around it are flat (FLAT_CONTRAST), 1 where they vary as faces do."""
  low, high = FLAT_CONTRAST
  return jnp.clip((prefill.known_contrast(image, mask, cell) - low) / (high - low), 0.0, 1.0)


def inpaint(apply_fn: Callable, variables: Mapping[str, Any], image: jax.Array,
            mask: jax.Array, network_mask: jax.Array | None = None, *,
            contrast_cell: int | None = None) -> jax.Array:
  """The network's fill with the known pixels restored (the composite), inference mode.

  The network's output is a correction to a smooth fill of the holes: its prefill, or the
  harmonic fill for a model without one. Where the known pixels around a hole are flat
  (flat_fade, measured over contrast_cell pixels: default a quarter of the image's shorter
  side, the model's canvas for inference) the correction fades out, so a flat region comes
  back flat instead of with the texture the network has learnt to put in holes.

  network_mask: the pixels the network is told are known (default: mask); inference's later
  passes tell it the whole previous fill is.
  """
  network_mask = mask if network_mask is None else network_mask
  output, state = apply_fn(variables, image * network_mask, network_mask, train=False,
                           mutable=['intermediates'])
  sown = state.get('intermediates', {}).get('prefill')
  base = sown[0] if sown else prefill.harmonic_fill(image, network_mask)
  cell = min(image.shape[1:3]) // 4 if contrast_cell is None else contrast_cell
  output = base + flat_fade(image, mask, cell) * (output - base)
  return masking.composite(output, image, mask)
