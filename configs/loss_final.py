"""Loss study V4: (DeFINe final) V3 + 2 total variation on the composite.

  python -m define_jax.main --config configs/loss_final.py --workdir runs/loss_final
Compare all four with: python -m define_jax.study --workdir runs/study
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.loss = 'final'  # Loss weight preset of this study variant.
  return config
