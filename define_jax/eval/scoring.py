"""Scores inpainting methods on an evaluation set: per-image metrics and their band means.

The one scoring path of training-time evaluation, `evaluate` and `study`. A method maps
(images [N, S, S, 3], known [N, S, S, 1]) to composites; metrics run data-parallel across
the local devices. No TensorFlow.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import numpy as np

from define_jax.data import bands as bands_lib
from define_jax.eval import landmark_error
from define_jax.eval import metrics
from define_jax.eval.evaluation_set import EvalSet
from define_jax.inference import Inpainter
from define_jax.runtime.data_parallel import DataParallel

# One jitted scorer per process, so repeated evaluations reuse its compilations.
_score_batch = jax.jit(metrics.all_metrics)

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]
# Image pixels per metric call: LPIPS-VGG holds about 1.6 KB of activations per pixel (a
# scoring batch of 32 images at 1024² asked XLA for 53 GB), so the metrics run on as many
# images of a batch at once as this allows (one at least), whatever the batch size.
METRIC_PIXELS_PER_CALL = 2**20
# A difference between two methods counts as real beyond this many standard errors of the
# paired per-image differences.
SIGNIFICANT_STANDARD_ERRORS = 2.0


def score(parallel: DataParallel, methods: dict[str, Method], eval_set: EvalSet,
          batch_size: int) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
  """Per-image metrics of every method, and the composites of the example images.

  Inpainting and scoring run data-parallel across `parallel`'s devices, batch by batch. A set
  with face-part landmarks is also scored on metrics.FACE_PART_METRICS.
  """
  lpips_params = parallel.replicate(metrics.load_all_lpips_params())
  examples = bands_lib.example_indices(eval_set.bands)
  detect = None
  if eval_set.landmarks is not None:
    from define_jax.faces import faces  # pylint: disable=g-import-not-at-top  # Face parts only.
    detect = faces.FaceDetector.pretrained()
  names = [*metrics.METRICS, *(metrics.FACE_PART_METRICS if detect else ())]
  scores = {name: {metric: [] for metric in names} for name in methods}
  example_composites = {name: [] for name in methods}
  for start in range(0, len(eval_set.images), batch_size):
    images = eval_set.images[start:start + batch_size]
    known = eval_set.known[start:start + batch_size]
    in_batch = [i - start for i in examples if start <= i < start + batch_size]
    for name, method in methods.items():
      composites = np.asarray(method(images, known), np.float32)
      batch_scores = _image_metrics(parallel, lpips_params, composites, images)
      if detect is not None:
        batch_scores['landmark_error'] = landmark_error.part_landmark_errors(
            detect, composites, eval_set.landmarks[start:start + batch_size],
            eval_set.groups[start:start + batch_size])
      for metric, values in batch_scores.items():
        scores[name][metric].append(values)
      example_composites[name].extend(composites[in_batch])
  per_image = {name: {metric: np.concatenate(values) for metric, values in by_metric.items()}
               for name, by_metric in scores.items()}
  return per_image, {name: np.stack(c) for name, c in example_composites.items() if c}


def _image_metrics(parallel: DataParallel, lpips_params, composites: np.ndarray,
                   images: np.ndarray) -> dict[str, np.ndarray]:
  """metrics.all_metrics of each composite against its image, METRIC_PIXELS_PER_CALL pixels
  at a time."""
  per_call = max(1, METRIC_PIXELS_PER_CALL // (images.shape[1] * images.shape[2]))
  parts = [parallel(_score_batch, lpips_params, composites[i:i + per_call], images[i:i + per_call])
           for i in range(0, len(images), per_call)]
  return {metric: np.concatenate([np.asarray(part[metric]) for part in parts])
          for metric in parts[0]}


def score_inpainters(inpainters: dict[str, Inpainter], eval_set: EvalSet, batch_size: int
                     ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
  """score() of the inpainters (their inpaint_arrays) by name, across the first one's devices."""
  methods = {name: inpainter.inpaint_arrays for name, inpainter in inpainters.items()}
  return score(next(iter(inpainters.values())).parallel, methods, eval_set, batch_size)


def band_means(scores: dict[str, np.ndarray], selected: np.ndarray) -> dict[str, float]:
  """Mean of every metric scored over the selected images (L1 as a fraction, not ×100)."""
  return {metric: float(np.mean(values[selected], dtype=np.float64))
          for metric, values in scores.items()}


def overall(scores: dict[str, np.ndarray], bands: np.ndarray) -> dict[str, float]:
  """band_means over the images in any band: the 'All' row. A hole-free mask (whose
  composite is the ground truth: infinite PSNR) lies in no band, so it never counts."""
  return band_means(scores, bands >= 0)


def summarize(per_image: dict[str, dict[str, np.ndarray]], bands: np.ndarray,
              labels: list[str] | None = None) -> list[dict]:
  """Rows {band, images, method, l1 (×100), psnr, ssim, lpips, lpips_alex}: each band, then overall;
  with `labels` (one per image, e.g. the face part a hole hides), each label in sorted order
  instead of the bands."""
  if labels is None:
    groups = [(bands_lib.band_label(b), bands == b) for b in range(bands_lib.NUM_BANDS)]
  else:
    labels = np.asarray(labels)
    groups = [(str(label), (labels == label) & (bands >= 0)) for label in sorted(set(labels))]
  groups.append((bands_lib.OVERALL, bands >= 0))
  rows = []
  for label, selected in groups:
    if not selected.any():
      continue
    for method, values in per_image.items():
      means = band_means(values, selected)
      means['l1'] *= 100.0
      rows.append({'band': label, 'images': int(selected.sum()), 'method': method, **means})
  return rows


def paired_change(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
  """Mean and standard error of the paired per-image differences after - before (the same
  images and masks make the pairing exact)."""
  diff = np.asarray(after, np.float64) - np.asarray(before, np.float64)
  error = float(np.std(diff, ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.inf
  return float(np.mean(diff)), error


def verdict(mean: float, error: float, higher_is_better: bool, digits: int) -> str | None:
  """'better' or 'worse' for a paired change beyond SIGNIFICANT_STANDARD_ERRORS standard
  errors that shows at `digits` decimals; None for no clear change."""
  # A change too small to show at the printed precision is no change, however consistent.
  if abs(mean) <= SIGNIFICANT_STANDARD_ERRORS * error or round(mean, digits) == 0:
    return None
  return 'better' if (mean > 0) == higher_is_better else 'worse'
