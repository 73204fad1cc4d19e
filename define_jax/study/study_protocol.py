"""The loss-study protocol: `python -m define_jax.study --config configs/study_faces128.py`.

The variants of a study config fine-tune from one common start (train.optim.init_from) on the
same number of images; study_lib.train_variants trains, resumes or skips them. Then the
start (`packaged`) and every variant are scored on one fixed set of validation images with
band-balanced masks, split in two: the first `report_images` give the reported table and
the README section, the next `selection_images` choose the model to ship by the rule the
study config declares (`select`).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import shlex
from pathlib import Path
from typing import Any, Sequence

import ml_collections
import numpy as np

from define_jax.config import config_lib
from define_jax.data import bands as bands_lib
from define_jax.eval import evaluation_set
from define_jax.eval import grids
from define_jax.eval import metrics
from define_jax.eval import report as report_lib
from define_jax.eval import scoring
from define_jax.inference import Inpainter
from define_jax.study import study_lib
from define_jax.tools import model_card_figures
from define_jax.training import losses
from define_jax.training import training_curves

REFERENCE = 'packaged'
# The metrics of the protocol's table and README section, in their column order.
TABLE_METRICS = ('psnr', 'ssim', 'lpips', 'lpips_alex')


def subset(per_image: dict[str, dict[str, np.ndarray]], indices: slice
           ) -> dict[str, dict[str, np.ndarray]]:
  return {name: {metric: values[indices] for metric, values in scores.items()}
          for name, scores in per_image.items()}


def first_band_from(edge: float) -> int:
  """The first hole-ratio band whose lower edge is at least `edge` (0.3 -> '30–40%')."""
  return next(b for b in range(bands_lib.NUM_BANDS) if bands_lib.BAND_EDGES[b] >= edge - 1e-9)


def select(per_image: dict[str, dict[str, np.ndarray]], bands: np.ndarray,
           candidates: Sequence[str], min_hole_ratio: float, max_psnr_loss_db: float
           ) -> dict[str, Any]:
  """The study config's selection rule on the selection images.

  A candidate qualifies when its mean PSNR over all bands is at most max_psnr_loss_db below
  the packaged model's; among the qualifying candidates and the packaged model, the one
  with the lowest mean LPIPS-Alex over the images in the bands from min_hole_ratio wins, so
  the packaged model is kept unless a qualifying variant beats it there.
  """
  large = bands >= first_band_from(min_hole_ratio)
  in_band = bands >= 0
  names = [REFERENCE, *candidates]
  psnr = {n: float(np.mean(per_image[n]['psnr'][in_band], dtype=np.float64)) for n in names}
  lpips_large = {n: float(np.mean(per_image[n]['lpips_alex'][large], dtype=np.float64))
                 for n in names}
  qualifying = [n for n in candidates if psnr[n] >= psnr[REFERENCE] - max_psnr_loss_db]
  chosen = min([REFERENCE, *qualifying], key=lambda n: lpips_large[n])
  return {'psnr_all': psnr, 'lpips_alex_large': lpips_large, 'qualifying': qualifying,
          'chosen': chosen,
          'large_bands_from': bands_lib.band_label(first_band_from(min_hole_ratio)),
          'images': int(in_band.sum()), 'large_images': int(large.sum())}


def change_sentence(per_image: dict[str, dict[str, np.ndarray]], bands: np.ndarray,
                    before: str, after: str, min_hole_ratio: float) -> str:
  """'PSNR +0.12 ± 0.03 dB (better), …' over all bands, and LPIPS-Alex on large holes."""
  in_band = bands >= 0
  large = bands >= first_band_from(min_hole_ratio)
  parts = []
  for metric, selected, where in (('psnr', in_band, 'all holes'),
                                  ('lpips_alex', in_band, 'all holes'),
                                  ('lpips_alex', large, f'holes from {min_hole_ratio:.0%}'),
                                  ('lpips', in_band, 'all holes')):
    higher_is_better = metrics.METRICS[metric][1]
    mean, error = scoring.paired_change(per_image[before][metric][selected],
                                        per_image[after][metric][selected])
    unit = ' dB' if metric == 'psnr' else ''
    # One digit more than the tables: a change between neighbours can be a tenth of theirs.
    digits = report_lib.METRIC_DIGITS[metric] + 1
    change = scoring.verdict(mean, error, higher_is_better, digits) or 'no clear change'
    parts.append(f'{report_lib.metric_name(metric)} on {where} {mean:+.{digits}f} ± '
                 f'{error:.{digits}f}{unit} ({change})')
  return '; '.join(parts)


def readme_section(report: dict[str, Any], report_per_image: dict[str, dict[str, np.ndarray]],
                   report_bands: np.ndarray, figure: str) -> str:
  """The README section "What each loss term does", every number read from the report."""
  protocol = report['protocol']
  variants = [v['name'] for v in report['variants']]
  min_ratio = protocol['selection_min_hole_ratio']
  first = report['variants'][0]
  lines = [
      '## What each loss term does', '',
      f'Five loss variants, each fine-tuned from the packaged model (trained with V2, '
      f'valid + hole) on {first["images_seen"]:,} images ({first["steps"]:,} steps of '
      f'{first["batch_size"]}) with the same seed, so the same images and masks in the same '
      f'order; {protocol["fine_tuning"]}. Scored on validation images 0–'
      f'{protocol["report_images"] - 1:,} (never used to choose anything) with NVIDIA masks '
      f'balanced over the hole-ratio bands; metrics of the composite.', '',
      'This is not training each variant from scratch: every variant starts from a model '
      'already shaped by V2\'s L1 terms, so the study measures what each term changes '
      f'from there within {first["images_seen"]:,} images. A term whose effect needs a long '
      'training from scratch (the style term\'s texture statistics, say) can show less '
      'here, and V1 inherits V2\'s hole emphasis from its start.', '',
      report_lib.band_table(report['report_rows'], TABLE_METRICS, code_names=True), '',
  ]
  for before, after in zip([REFERENCE, *variants], variants):
    change = change_sentence(report_per_image, report_bands, before, after, min_ratio)
    lines.append(f'- `{after}` against `{before}` ({report["descriptions"][after]}): '
                 f'{change}.')
  lines.append(f'- ± is one standard error of the paired per-image differences; "clear" '
               f'means beyond {scoring.SIGNIFICANT_STANDARD_ERRORS:g} of them.')
  selection = report['selection']
  rule = protocol['selection_rule']
  if selection['chosen'] == REFERENCE:
    outcome = ('No variant met the rule, so the packaged model stays.'
               if not selection['qualifying'] else
               f'Qualifying: {", ".join(f"`{n}`" for n in selection["qualifying"])}; none '
               'beat the packaged model on LPIPS-Alex there, so the packaged model stays.')
  else:
    chosen = selection['chosen']
    outcome = (f'`{chosen}` is chosen: LPIPS-Alex {selection["lpips_alex_large"][chosen]:.4f} '
               f'against the packaged model\'s {selection["lpips_alex_large"][REFERENCE]:.4f} '
               f'on {selection["large_images"]} images with holes from {min_ratio:.0%}, PSNR '
               f'{selection["psnr_all"][chosen]:.2f} dB against '
               f'{selection["psnr_all"][REFERENCE]:.2f} dB over all bands.')
  lines += ['', f'Selection rule, declared before the numbers: {rule} {outcome}', '',
            f'![The same holes filled by every variant]({figure})', '',
            'Training images seen and wall time per variant: ' + ', '.join(
                f'`{v["name"]}` {v["images_seen"]:,} images in {v["wall_time"]}'
                for v in report['variants']) + '.', '']
  return '\n'.join(lines)


def load_protocol(options: argparse.Namespace, overrides: Sequence[str]
                  ) -> tuple[ml_collections.ConfigDict, Path, list[study_lib.Variant]]:
  """(study config, workdir, variants): each variant is the shared training config with its
  loss preset and a step budget of images_per_variant images."""
  protocol = config_lib.load(options.config, overrides)
  workdir = Path(options.workdir or protocol.workdir)
  if not protocol.train.optim.init_from:
    raise ValueError('config.train.optim.init_from must name the common starting model (the study '
                     'compares what each loss changes from it).')
  for field in ('images_per_variant', 'report_images', 'selection_images'):
    if protocol[field] < 1:
      raise ValueError(f'config.{field}={protocol[field]} must be positive.')
  variants = []
  for name, loss in protocol.variants.items():
    config = copy.deepcopy(protocol.train)
    config.loss.preset = loss
    config.optim.num_train_steps = math.ceil(protocol.images_per_variant /
                                             config.optim.batch_size)
    variants.append(study_lib.Variant(name, config, workdir / name))
  if len(variants) < 2:
    raise ValueError('config.variants needs at least two variants.')
  return protocol, workdir, variants


def describe_loss(preset: str) -> str:
  """'1 valid + 6 hole + …' from the preset's weights (style: output + composite)."""
  return ' + '.join(f'{weight:g} {term}' for term, weight in
                    losses.get_loss_weights(preset).items())


def run_protocol(argv: Sequence[str], protocol: ml_collections.ConfigDict, workdir: Path,
                 variants: list[study_lib.Variant]) -> dict:
  """Trains the protocol's variants, scores them and the common start, applies the rule."""
  for variant in variants:
    study_lib.check_reusable(variant)
  study_lib.train_variants(variants)

  start = variants[0].config.optim.init_from
  eval_config = copy.deepcopy(variants[0].config)
  eval_config.eval.num_eval_images = protocol.report_images + protocol.selection_images
  eval_set = evaluation_set.for_training(eval_config)
  inpainters = {REFERENCE: Inpainter.from_checkpoint(start)}
  inpainters.update({v.name: Inpainter.from_checkpoint(str(v.run_dir)) for v in variants})
  per_image, example_composites = scoring.score_inpainters(inpainters, eval_set,
                                                           study_lib.SCORE_BATCH_SIZE)
  split = protocol.report_images
  bands = eval_set.bands
  report_scores = subset(per_image, slice(0, split))
  selection_scores = subset(per_image, slice(split, None))
  names = [v.name for v in variants]
  selection = select(selection_scores, bands[split:], names,
                     protocol.selection_min_hole_ratio, protocol.max_psnr_loss_db)

  workdir.mkdir(parents=True, exist_ok=True)
  curves = {v.name: training_curves.read(v.run_dir) for v in variants}
  training_curves.plot(workdir / 'curves.png', curves)
  grids.write_spread_grid(workdir / 'grid.png', eval_set, example_composites)
  picture, titles = model_card_figures.astronaut_comparison(
      {name: inpainter.inpaint_arrays for name, inpainter in inpainters.items()},
      eval_config.model.image_size)
  grids.save_png(str(workdir / 'astronaut.png'), picture, titles=titles)
  report = {
      'command': ['python', '-m', 'define_jax.study', *argv],
      'protocol': {
          'start': start, 'report_images': protocol.report_images,
          'selection_images': protocol.selection_images,
          'selection_min_hole_ratio': protocol.selection_min_hole_ratio,
          'max_psnr_loss_db': protocol.max_psnr_loss_db,
          'selection_rule': protocol.selection_rule, 'fine_tuning': protocol.fine_tuning},
      'variants': [{'name': v.name, 'run_dir': str(v.run_dir), 'loss': v.config.loss.preset,
                    'steps': v.config.optim.num_train_steps,
                    'batch_size': v.config.optim.batch_size,
                    'images_seen': v.config.optim.num_train_steps * v.config.optim.batch_size,
                    'wall_time': str(datetime.timedelta(
                        seconds=int(training_curves.training_seconds(v.run_dir)))),
                    'config': study_lib.plain_config(v.config)} for v in variants],
      'descriptions': {v.name: describe_loss(v.config.loss.preset) for v in variants},
      'eval_set': {'images': len(eval_set.images), 'mask_seed': evaluation_set.MASK_SEED,
                   'bands': report_lib.band_names(eval_set)},
      'l1_scale': 100,
      'report_rows': scoring.summarize(report_scores, bands[:split]),
      'selection_rows': scoring.summarize(selection_scores, bands[split:]),
      'selection': selection, 'curves': curves,
  }
  report_lib.write_json(workdir / 'study.json', report)
  section = readme_section(report, report_scores, bands[:split], 'astronaut.png')
  (workdir / 'readme_section.md').write_text(section, encoding='utf-8')
  markdown = '\n'.join([
      '# Loss study (protocol)', '', f'Command: `python -m define_jax.study {shlex.join(argv)}`',
      '', section, '',
      f'## Selection images ({split}–{split + protocol.selection_images - 1})', '',
      report_lib.band_table(report['selection_rows'], TABLE_METRICS, code_names=True), '',
      '## Curves', '', '![Training and evaluation curves](curves.png)', '',
      '## Validation faces (local inspection only: not for the repository)', '',
      '![Validation faces inpainted by every model](grid.png)', ''])
  (workdir / 'study.md').write_text(markdown, encoding='utf-8')
  return {'markdown': markdown, 'rows': report['report_rows'], 'selection': selection,
          'out_dir': str(workdir)}
