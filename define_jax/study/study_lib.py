"""The loss study's library, shared by its two command lines (study.py for --configs,
study_protocol.py for a protocol config): variants trained alike (reused, resumed or
refused).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import ml_collections

from define_jax.config import config_lib
from define_jax.model import checkpoints

# What changes how a run reports, not what it learns: the log and eval sections, tf.data's
# prefetch depth, and the budget (checked on its own). A run that differs only in these is
# still reused.
RESULT_NEUTRAL = ('log.', 'eval.', 'input.prefetch', 'optim.num_train_steps')
SCORE_BATCH_SIZE = 32


class StudyInterrupted(Exception):
  """A variant's training stopped early (SIGTERM, Ctrl-C); its checkpoint is kept."""


@dataclasses.dataclass
class Variant:
  name: str
  config: ml_collections.ConfigDict
  run_dir: Path


def plain_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as its checkpoint stores it (JSON types)."""
  return json.loads(json.dumps(config.to_dict()))


def config_fields(config: Any) -> dict[str, Any]:
  """{'section.field': value} in JSON types."""
  return json.loads(json.dumps(config_lib.flatten(config)))


def check_reusable(variant: Variant) -> None:
  """ValueError if the variant's run directory holds a run made with other settings or
  trained past the budget; a fresh directory or a shorter matching run is fine."""
  try:
    _, saved, step = checkpoints.load_model(str(variant.run_dir))
  except FileNotFoundError:
    return
  saved, wanted = config_fields(saved), config_fields(variant.config)
  differing = sorted(field for field in set(saved) | set(wanted)
                     if not field.startswith(RESULT_NEUTRAL)
                     and saved.get(field) != wanted.get(field))
  if differing:
    changes = ', '.join(f'{f}: {saved.get(f)!r} there, {wanted.get(f)!r} now' for f in differing)
    raise ValueError(f'{variant.run_dir} holds a run with other settings ({changes}); use '
                     'another --workdir or the same overrides.')
  if step > variant.config.optim.num_train_steps:
    raise ValueError(f'{variant.run_dir} was trained for {step} steps, more than the budget '
                     f'of {variant.config.optim.num_train_steps}; pass --steps {step} or use '
                     'another --workdir.')


def train_variants(variants: Sequence[Variant]) -> None:
  """Trains each variant up to its budget in turn (resuming, or skipping a finished one)."""
  from define_jax.training import train  # pylint: disable=g-import-not-at-top  # After main's TF import.

  for variant in variants:
    budget = variant.config.optim.num_train_steps
    print(f'Study: {variant.name} in {variant.run_dir} ({budget} steps).', flush=True)
    state = train.train_and_evaluate(variant.config, str(variant.run_dir))
    if int(state.step) != budget:
      raise StudyInterrupted(f'{variant.name} stopped at step {int(state.step)} of {budget} '
                         '(interrupted); run the same command again to resume.')

