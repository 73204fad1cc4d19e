"""Tiny model and data for tests and smoke runs (64², 4 levels, 8 base channels).

  python -m define_jax.main --config configs/tiny.py --workdir /tmp/tiny
"""

import ml_collections

from configs import quickstart


def get_config() -> ml_collections.ConfigDict:
  config = quickstart.get_config()
  config.layers = 4  # 64 / 2**4 = 4×4 bottleneck.
  config.base_features = 8  # Very narrow: compiles and runs in seconds on CPU.
  config.max_features = 32
  config.batch_size = 8  # Two images per simulated device with 4 devices.
  config.num_train_steps = 6
  config.num_eval_images = 8
  config.log_every_steps = 2
  config.eval_every_steps = 3
  config.image_every_steps = 3
  config.checkpoint_every_steps = 3
  config.keep_checkpoints = 2
  return config
