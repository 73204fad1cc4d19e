"""The loss study's variants: configs/default.py with one loss weight preset each.

  python -m define_jax.main --config configs/loss_study.py:valid_hole --workdir runs/valid_hole
Compare them with: python -m define_jax.study --workdir runs/study (its default variants are
VARIANTS, in this order).

  l1          V1: plain L1 over the whole image.
  valid_hole  V2: L1 on known pixels + 6x L1 on holes.
  style       V3: V2 + 0.05 perceptual + 120 style (output and composite).
  final       V4 (DeFINe): V3 + 2 total variation on the composite.
"""

import ml_collections

from configs import default

# The variants, in the order of the comparison; each is a loss preset (losses.LOSS_PRESETS).
VARIANTS = ('l1', 'valid_hole', 'style', 'final')


def get_config(variant: str = 'final') -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f'configs/loss_study.py:{variant}: expected one of {VARIANTS}.')
  config = default.get_config()
  config.loss.preset = variant  # The only difference between the variants.
  return config
