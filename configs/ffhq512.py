"""DeFINe paper setting: FFHQ 512², 8 down/up levels, final losses, batch 6, Adam 2e-4.

  python -m define_jax.main --config configs/ffhq512.py --workdir runs/ffhq512
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.image_size = 512  # The paper's resolution.
  config.model.layers = 8  # One more level so the bottleneck stays 2×2.
  config.input.ffhq_config = 'ffhq/512'  # Matching TFDS builder config.
  return config
