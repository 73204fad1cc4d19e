"""Report writing: Markdown tables of scoring.summarize's rows, and JSON report files.

`evaluate`'s report (report.md, report.json), the study's tables and study.json are written
here. Rows are {band, images, method, l1 (×100), psnr, ssim, lpips, lpips_alex}, and
landmark_error for face-part holes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from define_jax.data import bands as bands_lib
from define_jax.eval import grids
from define_jax.eval import metrics
from define_jax.eval.evaluation_set import EvalSet

# Decimals shown per metric in the tables.
METRIC_DIGITS = {'l1': 2, 'psnr': 2, 'ssim': 4, 'lpips': 4, 'lpips_alex': 4,
                 'landmark_error': 3}
# The files of an evaluation report: these, and the example grids its JSON lists.
REPORT_FILES = ('report.md', 'report.json')


def metric_name(metric: str) -> str:
  """'L1', 'PSNR', …: the report heading without unit and arrow."""
  return metrics.ALL_METRICS[metric][0].split()[0]


def best_per_group(rows: list[dict]) -> set[tuple[int, str]]:
  """(row index, metric) of the best method of each band and metric, for bold type."""
  best = set()
  for band in {row['band'] for row in rows}:
    indices = [i for i, row in enumerate(rows) if row['band'] == band]
    if len(indices) < 2:
      continue
    for metric, (_, higher_is_better) in metrics.ALL_METRICS.items():
      if metric in rows[indices[0]]:
        pick = max if higher_is_better else min
        best.add((pick(indices, key=lambda i: rows[i][metric]), metric))
  return best


def band_table(rows: list[dict], columns: Sequence[str] | None = None,
               code_names: bool = False, group_heading: str = 'Hole ratio') -> str:
  """Hole ratio (or group_heading) | Images | Method | one column per metric of `columns`
  (default: every metric the rows hold); best per band in bold; method names as code with
  code_names."""
  best = best_per_group(rows)
  if columns is None:
    columns = [metric for metric in metrics.ALL_METRICS if rows and metric in rows[0]]
  headings = [group_heading, 'Images', 'Method'] + [metrics.ALL_METRICS[m][0] for m in columns]
  lines = ['| ' + ' | '.join(headings) + ' |', '|' + '---|' * 3 + '---:|' * len(columns)]
  previous_band = None
  for i, row in enumerate(rows):
    first = row['band'] != previous_band
    previous_band = row['band']
    cells = [row['band'] if first else '', str(row['images']) if first else '',
             f'`{row["method"]}`' if code_names else row['method']]
    for metric in columns:
      text = f'{row[metric]:.{METRIC_DIGITS[metric]}f}'
      cells.append(f'**{text}**' if (i, metric) in best else text)
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def variant_table(rows: list[dict], variants: Sequence[str]) -> str:
  """Metric and variant per row, one column per band and overall; best per column bold."""
  best = best_per_group(rows)
  where = {(row['band'], row['method']): i for i, row in enumerate(rows)}
  images = {row['band']: row['images'] for row in rows}
  columns = bands_lib.band_labels()
  headings = ['Metric', 'Variant'] + [f'{label} (n={images.get(label, 0)})' for label in columns]
  lines = ['| ' + ' | '.join(headings) + ' |', '|---|---|' + '---:|' * len(columns)]
  for metric, (heading, _) in metrics.METRICS.items():
    for k, variant in enumerate(variants):
      cells = [heading if k == 0 else '', f'`{variant}`']
      for label in columns:
        i = where.get((label, variant))
        text = '–' if i is None else f'{rows[i][metric]:.{METRIC_DIGITS[metric]}f}'
        cells.append(f'**{text}**' if (i, metric) in best else text)
      lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def write_json(path: Path, report: dict[str, Any]) -> None:
  path.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding='utf-8')


def band_names(eval_set: EvalSet) -> list[str]:
  """The band label of every image of the set, as the JSON reports list them."""
  return [bands_lib.band_label(int(b)) for b in eval_set.bands]


def per_image_records(eval_set: EvalSet,
                      per_image: dict[str, dict[str, np.ndarray]]) -> list[dict]:
  """{image, mask, hole_ratio, band, scores: {method: {metric: value}}} of every image."""
  hole_ratios = bands_lib.hole_ratio(eval_set.known)
  return [{'image': eval_set.image_names[k], 'mask': eval_set.mask_names[k],
           'hole_ratio': float(hole_ratios[k]),
           'band': bands_lib.band_label(int(eval_set.bands[k])),
           'scores': {method: {m: float(values[k]) for m, values in v.items()}
                      for method, v in per_image.items()}}
          for k in range(len(eval_set.images))]


def write_evaluation_report(out_dir: Path, header: list[str], rows: list[dict],
                            eval_set: EvalSet, per_image: dict[str, dict[str, np.ndarray]],
                            grid_files: list[str], options: dict[str, Any]) -> str:
  """OUT/report.md (header, table, grids) and OUT/report.json (also every image's scores);
  returns the Markdown."""
  markdown = '\n'.join(['# DeFINe evaluation', ''] + [f'- {line}' for line in header] +
                       ['', band_table(rows, group_heading='Hole ratio' if eval_set.groups is None
                                       else 'Face part'), '']
                       + [f'![{g}]({g})' for g in grid_files]) + '\n'
  (out_dir / 'report.md').write_text(markdown, encoding='utf-8')
  write_json(out_dir / 'report.json',
             {'options': options, 'header': header, 'l1_scale': 100, 'rows': rows,
              'grids': grid_files, 'per_image': per_image_records(eval_set, per_image)})
  return markdown


def report_file_names() -> list[str]:
  """Every file name an evaluation report may hold."""
  return [*REPORT_FILES] + [grids.band_grid_name(band) for band in range(bands_lib.NUM_BANDS)]


def previous_report_files(out_dir: Path) -> set[str]:
  """The files of a previous evaluation report in out_dir, as its report.json lists them."""
  try:
    report = json.loads((out_dir / 'report.json').read_text(encoding='utf-8'))
    return {*REPORT_FILES, *report['grids']} if 'per_image' in report else set()
  except (OSError, ValueError, KeyError, TypeError):
    return set()
