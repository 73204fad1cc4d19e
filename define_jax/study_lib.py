"""The loss study's library, shared by its two command lines (study.py for --configs,
study_protocol.py for a protocol config): variants trained alike (reused, resumed or
refused), and the report pieces both write.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import ml_collections
import numpy as np

from define_jax import checkpoints
from define_jax import scoring
from define_jax import visualize
from define_jax.data import evaluation

# Fields that change how often a run reports, not what it learns (how long it trains is
# checked on its own): a run that differs only in these is still reused.
RESULT_NEUTRAL_FIELDS = frozenset({
    'num_train_steps', 'log_every_steps', 'eval_every_steps', 'image_every_steps',
    'checkpoint_every_steps', 'keep_checkpoints', 'prefetch', 'profile'})
SCORE_BATCH_SIZE = 32
GRID_ROWS = 4
# A difference between two variants counts as real beyond this many standard errors of
# the paired per-image differences.
SIGNIFICANT_STANDARD_ERRORS = 2.0


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


def check_reusable(variant: Variant) -> None:
  """ValueError if the variant's run directory holds a run made with other settings or
  trained past the budget; a fresh directory or a shorter matching run is fine."""
  try:
    _, saved, step = checkpoints.load_model(str(variant.run_dir))
  except FileNotFoundError:
    return
  wanted = plain_config(variant.config)
  differing = sorted(field for field in set(saved) | set(wanted)
                     if field not in RESULT_NEUTRAL_FIELDS
                     and saved.get(field) != wanted.get(field))
  if differing:
    changes = ', '.join(f'{f}: {saved.get(f)!r} there, {wanted.get(f)!r} now' for f in differing)
    raise ValueError(f'{variant.run_dir} holds a run with other settings ({changes}); use '
                     'another --workdir or the same overrides.')
  if step > variant.config.num_train_steps:
    raise ValueError(f'{variant.run_dir} was trained for {step} steps, more than the budget '
                     f'of {variant.config.num_train_steps}; pass --steps {step} or use another '
                     '--workdir.')


WALL_TIME_FILE = 'wall_time.json'


def wall_seconds(run_dir: Path) -> float:
  """Seconds the study spent training this run, over all its sessions."""
  path = run_dir / WALL_TIME_FILE
  return json.loads(path.read_text())['seconds'] if path.is_file() else 0.0


def train_variants(variants: Sequence[Variant]) -> None:
  """Trains each variant up to its budget in turn (resuming, or skipping a finished one),
  adding the time of every session that trained to RUN_DIR/wall_time.json."""
  from define_jax import train  # pylint: disable=g-import-not-at-top  # After main's TF import.

  for variant in variants:
    budget = variant.config.num_train_steps
    print(f'Study: {variant.name} in {variant.run_dir} ({budget} steps).', flush=True)
    before = _latest_step(variant.run_dir)
    start = time.time()
    state = train.train_and_evaluate(variant.config, str(variant.run_dir))
    if int(state.step) > before:
      seconds = wall_seconds(variant.run_dir) + time.time() - start
      (variant.run_dir / WALL_TIME_FILE).write_text(json.dumps({'seconds': seconds}))
    if int(state.step) != budget:
      raise StudyInterrupted(f'{variant.name} stopped at step {int(state.step)} of {budget} '
                         '(interrupted); run the same command again to resume.')


def _latest_step(run_dir: Path) -> int:
  if not Path(checkpoints.checkpoint_dir(str(run_dir))).is_dir():
    return 0
  return checkpoints.create_manager(str(run_dir), read_only=True).latest_step() or 0


def _short_titles(names: Sequence[str]) -> list[str]:
  """Names without their common prefix up to an underscore (loss_l1 -> l1), for grid titles."""
  common = os.path.commonprefix(list(names))
  cut = common.rfind('_') + 1
  return [name[cut:] for name in names]


def write_grid(path: Path, eval_set: evaluation.EvalSet,
               example_composites: dict[str, np.ndarray]) -> list[int]:
  """masked input | every variant | truth, one row per band spread over the populated bands;
  returns the evaluation-set indices shown."""
  # The composites that scoring.score kept: the first few images of each band.
  examples = np.asarray(scoring.example_indices(eval_set.bands))
  example_bands = eval_set.bands[examples]
  populated = sorted(set(example_bands.tolist()))
  spread = np.linspace(0, len(populated) - 1, min(GRID_ROWS, len(populated))).round().astype(int)
  rows = [int(np.flatnonzero(example_bands == populated[k])[0]) for k in spread]
  shown = examples[rows]
  columns = [visualize.masked_input(eval_set.images[shown], eval_set.known[shown])]
  columns += [composites[rows] for composites in example_composites.values()]
  columns.append(eval_set.images[shown])
  titles = ['input'] + _short_titles(list(example_composites)) + ['truth']
  visualize.save_png(str(path), visualize.grid(columns, max_rows=GRID_ROWS), titles=titles)
  return [int(i) for i in shown]
