r"""Loss study: train config variants alike, score them on one fixed evaluation set, report.

  python -m define_jax.study --workdir runs/study --steps 2000 \
      --config.input.dataset=image_folder --config.input.image_dir=/data/faces \
      --config.model.image_size=64 --config.model.layers=5

Each variant (configs/NAME.py or NAME.py:ARG, default configs/loss_study.py:VARIANT for each
of its VARIANTS; with the same --config.SECTION.FIELD=VALUE overrides and --steps)
trains in WORKDIR/NAME/ from the same seed, so all see the same batches and masks; a run
whose checkpoint already reached the budget is reused, a shorter one is continued, and a
run made with other settings is refused rather than silently mixed in. Then every variant
inpaints the same images with the same band-balanced masks (the first variant's evaluation
set, the one its training-time evaluation scores), and WORKDIR gets:

  study.md     table of L1 (×100), PSNR, SSIM, LPIPS per hole-ratio band and overall (best
               per column in bold), a generated summary, the curves and the grid
  curves.png   training and evaluation curves read from each run's TensorBoard events
  grid.png     the same inputs inpainted by every variant side by side
  study.json   every number of the report

and keeps XLA compilations in WORKDIR/jax_cache, since the variants share most of them.

The protocol (one command, resumable: rerun it after an interruption):

  python -m define_jax.study --config configs/study_faces128.py [--workdir DIR]

A study config (see configs/study_faces128.py) names the variants (name: loss preset), one
training config they share (including init_from, their common start) and the images each
trains on. Besides curves.png, grid.png (validation faces: for local inspection only) and
study.json, it writes study.md (the per-band table on the report images, the selection
images' table and the rule's outcome), astronaut.png (scikit-image's astronaut with the
same holes filled by every model: the README figure) and readme_section.md ("What each loss
term does", its numbers read from the results).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from define_jax import checkpoints
from define_jax import config_lib
from define_jax import console
from define_jax import evaluate
from define_jax import metrics
from define_jax import scoring
from define_jax import training_curves
from define_jax import visualize
from define_jax.data import evaluation
from define_jax.inference import Inpainter

# The default variants: configs/loss_study.py's, in its order.
DEFAULT_STUDY_CONFIG = 'loss_study'
# What changes how a run reports, not what it learns: the log and eval sections, tf.data's
# prefetch depth, and the budget (checked on its own). A run that differs only in these is
# still reused.
RESULT_NEUTRAL = ('log.', 'eval.', 'input.prefetch', 'optim.num_train_steps')
# With --steps, the logging and evaluation cadence (unless overridden) gives this many
# points per curve.
CURVE_POINTS = {'log.log_every_steps': 50, 'eval.eval_every_steps': 10}
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


def default_configs() -> str:
  """'loss_study:l1,loss_study:valid_hole,…': configs/loss_study.py's VARIANTS, in order."""
  config_lib.make_importable([f'--config={config_lib.resolve(DEFAULT_STUDY_CONFIG)}'])
  variants = importlib.import_module(f'configs.{DEFAULT_STUDY_CONFIG}').VARIANTS
  return ','.join(f'{DEFAULT_STUDY_CONFIG}:{variant}' for variant in variants)


def variant_name(config_file: Path) -> str:
  """NAME for configs/NAME.py, NAME_ARG for NAME.py:ARG (loss_study_l1)."""
  stem, _, argument = config_file.name.partition(':')
  return Path(stem).stem + (f'_{argument}' if argument else '')


def load_variants(options: argparse.Namespace, overrides: Sequence[str]) -> list[Variant]:
  names = [name.strip() for name in (options.configs or default_configs()).split(',')
           if name.strip()]
  variants = []
  for name in names:
    config_file = config_lib.resolve(name)
    config = config_lib.load(str(config_file), overrides)
    if options.steps is not None:
      config.optim.num_train_steps = options.steps
      overridden = {o.split('=', 1)[0].removeprefix('--config.') for o in overrides}
      for field, points in CURVE_POINTS.items():
        if field not in overridden:
          section, name_in_section = field.split('.')
          config[section][name_in_section] = max(1, options.steps // points)
    variants.append(Variant(variant_name(config_file), config,
                            Path(options.workdir, variant_name(config_file))))
  if len({v.name for v in variants}) != len(variants) or len(variants) < 2:
    raise ValueError(f'--configs needs at least two different config names; got {names}.')
  return variants


def plain_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as its checkpoint stores it (JSON types)."""
  return json.loads(json.dumps(config.to_dict()))


def _fields(config: Any) -> dict[str, Any]:
  """{'section.field': value} in JSON types."""
  return json.loads(json.dumps(config_lib.flatten(config)))


def check_reusable(variant: Variant) -> None:
  """ValueError if the variant's run directory holds a run made with other settings or
  trained past the budget; a fresh directory or a shorter matching run is fine."""
  try:
    _, saved, step = checkpoints.load_model(str(variant.run_dir))
  except FileNotFoundError:
    return
  saved, wanted = _fields(saved), _fields(variant.config)
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


def config_differences(variants: Sequence[Variant]) -> dict[str, list[Any]]:
  """{'section.field': value per variant} for the fields in which the variants differ."""
  plain = [_fields(v.config) for v in variants]
  fields = sorted(set().union(*plain))
  return {field: [p.get(field) for p in plain] for field in fields
          if len({json.dumps(p.get(field)) for p in plain}) > 1}


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
    budget = variant.config.optim.num_train_steps
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


def band_labels() -> list[str]:
  return [metrics.band_label(b) for b in range(metrics.NUM_BANDS)] + [scoring.OVERALL]


def markdown_table(rows: list[dict], variants: Sequence[str]) -> str:
  """Metric and variant per row, one column per band and overall; best per column bold."""
  best = evaluate.best_per_group(rows)
  where = {(row['band'], row['method']): i for i, row in enumerate(rows)}
  images = {row['band']: row['images'] for row in rows}
  columns = band_labels()
  headings = ['Metric', 'Variant'] + [f'{label} (n={images.get(label, 0)})' for label in columns]
  lines = ['| ' + ' | '.join(headings) + ' |', '|---|---|' + '---:|' * len(columns)]
  for metric, (heading, _) in metrics.METRICS.items():
    for k, variant in enumerate(variants):
      cells = [heading if k == 0 else '', f'`{variant}`']
      for label in columns:
        i = where.get((label, variant))
        text = '–' if i is None else f'{rows[i][metric]:.{evaluate.METRIC_DIGITS[metric]}f}'
        cells.append(f'**{text}**' if (i, metric) in best else text)
      lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _join(items: Sequence[str]) -> str:
  """'a', 'a and b', 'a, b and c'."""
  return items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1]


def _metric_name(metric: str) -> str:
  """'L1', 'PSNR', …: the report heading without unit and arrow."""
  return metrics.METRICS[metric][0].split()[0]


def summary_lines(rows: list[dict], per_image: dict[str, dict[str, np.ndarray]],
                  variants: Sequence[str], differences: dict[str, list[Any]]) -> list[str]:
  """Which variant wins overall, per band, on the largest holes, and what each change did."""
  best = evaluate.best_per_group(rows)
  winners = {(rows[i]['band'], metric): rows[i]['method'] for i, metric in best}
  lines = []
  overall: dict[str, list[str]] = {}
  for metric in metrics.METRICS:
    overall.setdefault(winners[(scoring.OVERALL, metric)], []).append(_metric_name(metric))
  lines.append('Overall: ' + '; '.join(f'`{v}` is best on {_join(m)}'
                                       for v, m in overall.items()) + '.')
  band_cells = [(band, metric) for band, metric in winners if band != scoring.OVERALL]
  wins = {v: sum(winners[cell] == v for cell in band_cells) for v in variants}
  ranked = sorted(variants, key=lambda v: -wins[v])
  lines.append(f'Band × metric cells won (of {len(band_cells)}): ' +
               ', '.join(f'`{v}` {wins[v]}' for v in ranked) + '.')
  bands_present = [label for label in band_labels()[:-1] if (label, 'l1') in winners]
  largest = bands_present[-1]
  lines.append(f'Largest holes ({largest}): ' + ', '.join(
      f'{_metric_name(m)} `{winners[(largest, m)]}`' for m in metrics.METRICS) + '.')
  for previous, current in zip(variants, variants[1:]):
    lines.append(_pairwise_line(variants, previous, current, per_image, differences))
  return lines


def _pairwise_line(variants: Sequence[str], previous: str, current: str,
                   per_image: dict[str, dict[str, np.ndarray]],
                   differences: dict[str, list[Any]]) -> str:
  """Overall change from one variant to the next, ± one standard error of the paired
  per-image differences (the same images and masks make the pairing exact)."""
  before, after = variants.index(previous), variants.index(current)
  changed = ', '.join(f'{field} {values[before]} → {values[after]}'
                      for field, values in differences.items()) or 'same config'
  deltas, significant = [], []
  for metric, (_, higher_is_better) in metrics.METRICS.items():
    scale = 100.0 if metric == 'l1' else 1.0
    diff = (per_image[current][metric] - per_image[previous][metric]) * scale
    mean = float(np.mean(diff))
    error = float(np.std(diff, ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.inf
    digits = evaluate.METRIC_DIGITS[metric] + 1
    deltas.append(f'{_metric_name(metric)} {mean:+.{digits}f} ± {error:.{digits}f}')
    # A change too small to show at the printed precision is no change, however consistent.
    if abs(mean) > SIGNIFICANT_STANDARD_ERRORS * error and round(mean, digits) != 0:
      better = (mean > 0) == higher_is_better
      significant.append(f'{_metric_name(metric)} {"better" if better else "worse"}')
  beyond = f'beyond {SIGNIFICANT_STANDARD_ERRORS:g} standard errors'
  verdict = f'; {beyond}: ' + ', '.join(significant) if significant else f'; no change {beyond}'
  return f'`{current}` vs `{previous}` ({changed}): ' + ', '.join(deltas) + verdict + '.'


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


def _eval_source(config: ml_collections.ConfigDict) -> str:
  data = config.input
  if data.dataset == 'image_folder':
    return f'the validation split ({data.validation_fraction:.0%}) of `{data.image_dir}`'
  return f'the validation split of dataset `{data.dataset}`'


def write_markdown(path: Path, argv: Sequence[str], variants: Sequence[Variant],
                   differences: dict[str, list[Any]], eval_set: evaluation.EvalSet, table: str,
                   summary: list[str], grid_bands: list[str]) -> str:
  config = variants[0].config
  distinct_images = len(set(eval_set.image_names))
  reuse = (f' ({distinct_images} distinct, each with several masks)'
           if distinct_images < len(eval_set.image_names) else '')
  if config.input.masks == 'generated':
    masks_from = 'generated strokes and ellipses'
  elif config.input.mask_dir:
    masks_from = f'`{config.input.masks}` files from `{config.input.mask_dir}`'
  else:
    masks_from = f'the prepared `{config.input.masks}` evaluation split'
  changed = '; '.join(f'{field}: ' + ', '.join(str(v) for v in values)
                      for field, values in differences.items()) or 'nothing (identical configs)'
  lines = [
      '# Loss study', '',
      f'Command: `python -m define_jax.study {shlex.join(argv)}`', '',
      f'- Variants, in order: {", ".join(f"`{v.name}`" for v in variants)}, each trained for '
      f'{config.optim.num_train_steps} steps at {config.model.image_size}² (batch '
      f'{config.optim.batch_size}, seed {config.seed}, {config.model.layers} levels, '
      f'{config.model.base_features}–{config.model.max_features} channels) on dataset '
      f'`{config.input.dataset}`.',
      f'- They differ only in: {changed}.',
      f'- Evaluation: {len(eval_set.images)} images{reuse} from {_eval_source(config)}, '
      f'masks: {masks_from}, image k in hole-ratio band k mod 6, seed {evaluation.MASK_SEED}; '
      'the same '
      'images and masks for every variant. Metrics of the composite (known pixels pasted '
      'back); L1 ×100; best per column in bold.', '',
      table, '',
      '## Summary', '',
      *[f'- {line}' for line in summary],
      '- ± is one standard error of the paired per-image differences.', '',
      '## Curves', '',
      '![Training and evaluation curves](curves.png)', '',
      '## Examples', '',
      '![The same inputs inpainted by every variant](grid.png)', '',
      f'Columns: masked input | {" | ".join(f"`{v.name}`" for v in variants)} | ground truth; '
      f'rows: hole-ratio bands {", ".join(grid_bands)}.', '',
  ]
  markdown = '\n'.join(lines)
  path.write_text(markdown, encoding='utf-8')
  return markdown


def score_variants(variants: Sequence[Variant], eval_set: evaluation.EvalSet
                   ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
  inpainters = {v.name: Inpainter.from_checkpoint(str(v.run_dir)) for v in variants}
  methods = {name: inpainter.inpaint_arrays for name, inpainter in inpainters.items()}
  parallel = next(iter(inpainters.values())).parallel
  return scoring.score(parallel, methods, eval_set, SCORE_BATCH_SIZE)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
  parser = argparse.ArgumentParser(prog='python -m define_jax.study', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--configs',
                      help='Comma-separated config names (configs/NAME.py, NAME.py:ARG) or '
                      'paths, in the order of the comparison (default: '
                      f'{DEFAULT_STUDY_CONFIG}:VARIANT for each of its VARIANTS).')
  parser.add_argument('--config',
                      help='A study protocol config (configs/study_faces128.py): variants, '
                      'shared training config, budget and selection rule; --config.FIELD=VALUE '
                      'overrides its fields (--config.train.SECTION.FIELD for the training '
                      'config).')
  parser.add_argument('--workdir',
                      help='Study directory: one run per variant in WORKDIR/NAME, the report '
                      "here (required without --config; with it, default: the config's).")
  parser.add_argument('--steps', type=int,
                      help="Training steps per variant (default: each config's "
                      'optim.num_train_steps); also sets log/eval cadence for 50/10 curve '
                      'points unless --config.log.log_every_steps/--config.eval.eval_every_steps '
                      'are given.')
  parser.add_argument('--verbosity', type=int, default=-1,
                      help='0: also library INFO logs (Orbax, TensorFlow, absl); 1: debug logs')
  options = console.parse_with_config_overrides(parser, argv)
  overrides = options.config_overrides
  if options.steps is not None and options.steps < 1:
    parser.error('--steps must be positive.')
  if options.config and (options.steps is not None or options.configs):
    parser.error('--config (a study protocol) sets variants and budget itself: drop --configs '
                 'and --steps, or override --config.images_per_variant.')
  if not options.config and not options.workdir:
    parser.error('--workdir is required without --config.')
  return options, overrides


def run(argv: Sequence[str], *, cache: bool = False) -> dict:
  """Runs the study as the command line says; returns the report's numbers. cache: keep
  XLA compilations in WORKDIR/jax_cache (cache_compilations)."""
  options, overrides = parse_args(argv)
  if options.config:
    from define_jax import study_protocol  # pylint: disable=g-import-not-at-top  # It imports this.

    protocol, workdir, variants = study_protocol.load_protocol(options, overrides)
    if cache:
      cache_compilations(str(workdir))
    return study_protocol.run_protocol(argv, protocol, workdir, variants)
  if cache:
    cache_compilations(options.workdir)
  variants = load_variants(options, overrides)
  for variant in variants:  # Before any training, so a mistake surfaces at once.
    check_reusable(variant)
  train_variants(variants)

  eval_set = evaluation.for_training(variants[0].config)
  per_image, example_composites = score_variants(variants, eval_set)
  rows = scoring.summarize(per_image, eval_set.bands)
  names = [v.name for v in variants]
  differences = config_differences(variants)
  summary = summary_lines(rows, per_image, names, differences)
  curves = {v.name: training_curves.read(v.run_dir) for v in variants}

  out_dir = Path(options.workdir)
  training_curves.plot(out_dir / 'curves.png', curves)
  shown = write_grid(out_dir / 'grid.png', eval_set, example_composites)
  grid_bands = [metrics.band_label(int(eval_set.bands[i])) for i in shown]
  table = markdown_table(rows, names)
  markdown = write_markdown(out_dir / 'study.md', argv, variants, differences, eval_set, table,
                            summary, grid_bands)
  report = {
      'command': ['python', '-m', 'define_jax.study', *argv],
      'variants': [{'name': v.name, 'run_dir': str(v.run_dir),
                    'config': plain_config(v.config)} for v in variants],
      'differences': differences,
      'eval_set': {'images': len(eval_set.images), 'mask_seed': evaluation.MASK_SEED,
                   'bands': [metrics.band_label(int(b)) for b in eval_set.bands]},
      'l1_scale': 100, 'rows': rows, 'summary': summary, 'curves': curves,
  }
  (out_dir / 'study.json').write_text(json.dumps(report, indent=1, ensure_ascii=False),
                                      encoding='utf-8')
  return {'markdown': markdown, 'rows': rows, 'summary': summary, 'out_dir': str(out_dir)}


def cache_compilations(workdir: str) -> None:
  """Keeps XLA compilations in WORKDIR/jax_cache unless a cache is configured already: the
  variants share model, initialisation, evaluation and inpainting, so most of their
  compilations (minutes on CPU) are made once, and a rerun of the study reuses all of them."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir',
                      os.path.join(os.path.abspath(workdir), 'jax_cache'))


def main(argv: Sequence[str] | None = None) -> int:
  """The command line: run() plus the compilation cache and the --verbosity of library logs."""
  argv = sys.argv[1:] if argv is None else argv
  options, _ = parse_args(argv)
  logging.set_verbosity(options.verbosity)
  # Training imports TensorFlow: its load-time banners only with --verbosity >= 0.
  console.import_tensorflow(verbose=options.verbosity >= 0)
  return console.exit_status(lambda: run(argv, cache=True)['markdown'],
                             (FileNotFoundError, ValueError, StudyInterrupted))


if __name__ == '__main__':
  sys.exit(main())
