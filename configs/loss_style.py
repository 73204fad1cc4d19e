"""Loss study V3: V2 + 0.05 perceptual + 120 style (output and composite).

  python -m define_jax.main --config configs/loss_style.py --workdir runs/loss_style
Compare all four with: python -m define_jax.study --workdir runs/study
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.loss = 'style'  # Loss weight preset of this study variant.
  return config
