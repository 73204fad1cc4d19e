"""Loss study V2: L1 on known pixels + 6x L1 on holes.

  python -m define_jax.main --config configs/loss_valid_hole.py --workdir runs/loss_valid_hole
Compare all four with: python -m define_jax.study --workdir runs/study
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.loss = 'valid_hole'  # Loss weight preset of this study variant.
  return config
