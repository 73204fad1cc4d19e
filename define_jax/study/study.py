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
import importlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from define_jax.config import config_lib
from define_jax.data import bands
from define_jax.eval import evaluation_set
from define_jax.eval import grids
from define_jax.eval import metrics
from define_jax.eval import report as report_lib
from define_jax.eval import scoring
from define_jax.inference import Inpainter
from define_jax.runtime import console
from define_jax.study import study_protocol
from define_jax.training import training_curves
from define_jax.study.study_lib import (SCORE_BATCH_SIZE, StudyInterrupted, Variant, check_reusable,
                                  config_fields, plain_config, train_variants)

# The default variants: configs/loss_study.py's, in its order.
DEFAULT_STUDY_CONFIG = 'loss_study'
# With --steps, the logging and evaluation cadence (unless overridden) gives this many
# points per curve.
CURVE_POINTS = {'log.log_every_steps': 50, 'eval.eval_every_steps': 10}


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


def config_differences(variants: Sequence[Variant]) -> dict[str, list[Any]]:
  """{'section.field': value per variant} for the fields in which the variants differ."""
  plain = [config_fields(v.config) for v in variants]
  fields = sorted(set().union(*plain))
  return {field: [p.get(field) for p in plain] for field in fields
          if len({json.dumps(p.get(field)) for p in plain}) > 1}


def _join(items: Sequence[str]) -> str:
  """'a', 'a and b', 'a, b and c'."""
  return items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1]


def summary_lines(rows: list[dict], per_image: dict[str, dict[str, np.ndarray]],
                  variants: Sequence[str], differences: dict[str, list[Any]]) -> list[str]:
  """Which variant wins overall, per band, on the largest holes, and what each change did."""
  best = report_lib.best_per_group(rows)
  winners = {(rows[i]['band'], metric): rows[i]['method'] for i, metric in best}
  lines = []
  overall: dict[str, list[str]] = {}
  for metric in metrics.METRICS:
    overall.setdefault(winners[(bands.OVERALL, metric)], []).append(report_lib.metric_name(metric))
  lines.append('Overall: ' + '; '.join(f'`{v}` is best on {_join(m)}'
                                       for v, m in overall.items()) + '.')
  band_cells = [(band, metric) for band, metric in winners if band != bands.OVERALL]
  wins = {v: sum(winners[cell] == v for cell in band_cells) for v in variants}
  ranked = sorted(variants, key=lambda v: -wins[v])
  lines.append(f'Band × metric cells won (of {len(band_cells)}): ' +
               ', '.join(f'`{v}` {wins[v]}' for v in ranked) + '.')
  bands_present = [label for label in bands.band_labels()[:-1] if (label, 'l1') in winners]
  largest = bands_present[-1]
  lines.append(f'Largest holes ({largest}): ' + ', '.join(
      f'{report_lib.metric_name(m)} `{winners[(largest, m)]}`' for m in metrics.METRICS) + '.')
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
    mean, error = scoring.paired_change(per_image[previous][metric], per_image[current][metric])
    mean, error = mean * scale, error * scale
    digits = report_lib.METRIC_DIGITS[metric] + 1
    deltas.append(f'{report_lib.metric_name(metric)} {mean:+.{digits}f} ± {error:.{digits}f}')
    change = scoring.verdict(mean, error, higher_is_better, digits)
    if change:
      significant.append(f'{report_lib.metric_name(metric)} {change}')
  beyond = f'beyond {scoring.SIGNIFICANT_STANDARD_ERRORS:g} standard errors'
  verdict = f'; {beyond}: ' + ', '.join(significant) if significant else f'; no change {beyond}'
  return f'`{current}` vs `{previous}` ({changed}): ' + ', '.join(deltas) + verdict + '.'


def _eval_source(config: ml_collections.ConfigDict) -> str:
  data = config.input
  if data.dataset == 'image_folder':
    return f'the validation split ({data.validation_fraction:.0%}) of `{data.image_dir}`'
  return f'the validation split of dataset `{data.dataset}`'


def write_markdown(path: Path, argv: Sequence[str], variants: Sequence[Variant],
                   differences: dict[str, list[Any]], eval_set: evaluation_set.EvalSet, table: str,
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
      f'masks: {masks_from}, image k in hole-ratio band k mod 6, seed {evaluation_set.MASK_SEED}; '
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


def score_variants(variants: Sequence[Variant], eval_set: evaluation_set.EvalSet
                   ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
  inpainters = {v.name: Inpainter.from_checkpoint(str(v.run_dir)) for v in variants}
  return scoring.score_inpainters(inpainters, eval_set, SCORE_BATCH_SIZE)


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

  eval_set = evaluation_set.for_training(variants[0].config)
  per_image, example_composites = score_variants(variants, eval_set)
  rows = scoring.summarize(per_image, eval_set.bands)
  names = [v.name for v in variants]
  differences = config_differences(variants)
  summary = summary_lines(rows, per_image, names, differences)
  curves = {v.name: training_curves.read(v.run_dir) for v in variants}

  out_dir = Path(options.workdir)
  training_curves.plot(out_dir / 'curves.png', curves)
  shown = grids.write_spread_grid(out_dir / 'grid.png', eval_set, example_composites)
  grid_bands = [bands.band_label(int(eval_set.bands[i])) for i in shown]
  table = report_lib.variant_table(rows, names)
  markdown = write_markdown(out_dir / 'study.md', argv, variants, differences, eval_set, table,
                            summary, grid_bands)
  report = {
      'command': ['python', '-m', 'define_jax.study', *argv],
      'variants': [{'name': v.name, 'run_dir': str(v.run_dir),
                    'config': plain_config(v.config)} for v in variants],
      'differences': differences,
      'eval_set': {'images': len(eval_set.images), 'mask_seed': evaluation_set.MASK_SEED,
                   'bands': report_lib.band_names(eval_set)},
      'l1_scale': 100, 'rows': rows, 'summary': summary, 'curves': curves,
  }
  report_lib.write_json(out_dir / 'study.json', report)
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
