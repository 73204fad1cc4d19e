"""Loss study V1: plain L1 over the whole image.

  python -m define_jax.main --config configs/loss_l1.py --workdir runs/loss_l1
Compare all four with: python -m define_jax.study --workdir runs/study
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.loss = 'l1'  # Loss weight preset of this study variant.
  return config
