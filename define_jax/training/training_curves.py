"""Training curves of runs: read from their TensorBoard events, plotted side by side.

Used by `study` (one line per variant) and `tools/model_card_figures` (one run).
"""

from __future__ import annotations

import itertools
from pathlib import Path

from matplotlib import ticker
from matplotlib.figure import Figure

from define_jax.runtime import console

# Runs whose curves coincide (e.g. two loss variants early on) stay visible.
LINE_STYLES = ('-', '--', '-.', ':')


def read(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
  """(step, value) of every train_*/eval_* scalar in the run's TensorBoard events; a step
  logged twice (a run resumed from an older checkpoint) keeps its last value."""
  console.import_tensorflow()  # TensorBoard imports it: without its load-time banners.
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top

  events = event_accumulator.EventAccumulator(
      str(run_dir), size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  curves = {}
  for tag in events.Tags()[event_accumulator.TENSORS]:
    if tag.startswith(('train_', 'eval_')):
      by_step = {event.step: float(tensor_util.make_ndarray(event.tensor_proto))
                 for event in events.Tensors(tag)}
      curves[tag] = sorted(by_step.items())
  return curves


def training_seconds(run_dir: Path) -> float:
  """Wall time the run spent training, over all its sessions: each session's events file
  spans its first to its last write. Read from the log as written, so a session that was
  killed still counts up to its last write."""
  console.import_tensorflow()
  from tensorboard.backend.event_processing import event_file_loader  # pylint: disable=g-import-not-at-top

  seconds = 0.0
  for path in sorted(Path(run_dir).glob('events.out.tfevents.*')):
    times = [event.wall_time for event in event_file_loader.EventFileLoader(str(path)).Load()]
    if times:
      seconds += max(times) - min(times)
  return seconds


def raw_output_l1(curves: dict[str, list[tuple[int, float]]]) -> list[tuple[int, float]]:
  """Training L1 of the raw output: the l1 term, or valid + hole (they partition it)."""
  if 'train_l1' in curves:
    return curves['train_l1']
  hole = dict(curves.get('train_hole', []))
  return [(step, value + hole[step]) for step, value in curves.get('train_valid', [])
          if step in hole]


def plot(path: Path, curves: dict[str, dict[str, list[tuple[int, float]]]]) -> None:
  panels = [
      ('Training objective (own loss: not comparable across variants)',
       lambda c: c.get('train_total', []), 'log'),
      ('Training L1 of the raw output (l1, or valid + hole)', raw_output_l1, 'linear'),
      ('Evaluation L1 ×100 of the composite (training eval set)',
       lambda c: [(s, 100 * v) for s, v in c.get('eval_l1', [])], 'linear'),
      ('Evaluation PSNR (dB) of the composite (training eval set)',
       lambda c: c.get('eval_psnr', []), 'linear'),
      ('Evaluation LPIPS-Alex of the composite (training eval set)',
       lambda c: c.get('eval_lpips_alex', []), 'linear'),
      ('Evaluation LPIPS-VGG of the composite (training eval set)',
       lambda c: c.get('eval_lpips', []), 'linear'),
  ]
  figure = Figure(figsize=(16, 7), layout='constrained')  # No pyplot: no GUI backend, no state.
  axes = figure.subplots(2, 3)
  for axis, (title, series, scale) in zip(axes.flat, panels):
    for (variant, variant_curves), style in zip(curves.items(), itertools.cycle(LINE_STYLES)):
      points = series(variant_curves)
      if points:
        steps, values = zip(*points)
        axis.plot(steps, values, style, marker='o', markersize=2.5, linewidth=1.2, label=variant)
    axis.set_title(title, fontsize=10)
    axis.set_xlabel('step')
    axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axis.set_yscale(scale)
    axis.grid(True, alpha=0.3)
  axes.flat[0].legend(fontsize=8)
  figure.savefig(path, dpi=90)
