"""Counting the unusable inputs (images, masks) that the data modules skipped.

Skips are counted process-wide by kind, the first few logged by name, and the
training pipeline summarises each epoch's image skips once.
"""

from __future__ import annotations

import collections
import threading

from absl import logging

# Distinct unusable inputs logged by name; later ones are only counted.
_MAX_NAMED_SKIP_WARNINGS = 10


class SkipLog:
  """Process-wide counts of skipped inputs, by kind ('images', 'masks')."""

  def __init__(self) -> None:
    self._lock = threading.Lock()
    self._totals: collections.Counter[str] = collections.Counter()
    self._named: set[str] = set()

  def record(self, kind: str, item: str, reason: str) -> None:
    with self._lock:
      self._totals[kind] += 1
      if item not in self._named and len(self._named) < _MAX_NAMED_SKIP_WARNINGS:
        self._named.add(item)
        logging.warning('Input pipeline skips unusable %s %s: %s', kind[:-1], item, reason)

  def totals(self) -> dict[str, int]:
    with self._lock:
      return {'images': self._totals['images'], 'masks': self._totals['masks']}


SKIPS = SkipLog()


def skipped_input_counts() -> dict[str, int]:
  """Inputs skipped so far in this process: {'images': n, 'masks': m}.

  Counts every time an element needed a replacement (an unreadable image
  drawn in three epochs counts three times), in training and evaluation data.
  """
  return SKIPS.totals()


class EpochSkipSummary:
  """Logs, once per training epoch, how many images that epoch skipped."""

  def __init__(self, description: str) -> None:
    self._description = description
    self._lock = threading.Lock()
    self._latest_epoch = -1
    self._per_epoch: collections.Counter[int] = collections.Counter()

  def record(self, epoch: int) -> None:
    with self._lock:
      self._per_epoch[epoch] += 1

  def observe(self, epoch: int) -> None:
    """Called per element; the first element of a later epoch closes earlier ones."""
    with self._lock:
      if epoch <= self._latest_epoch:
        return
      for finished in sorted(e for e in self._per_epoch if e < epoch):
        logging.warning(
            'Input pipeline, %s, epoch %d: skipped %d unreadable images (total so far: %s).',
            self._description,
            finished,
            self._per_epoch.pop(finished),
            skipped_input_counts(),
        )
      self._latest_epoch = epoch
