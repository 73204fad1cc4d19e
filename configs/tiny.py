"""Tiny model and data for tests and smoke runs (64², 4 levels, 8 base channels).

  python -m define_jax.main --config configs/tiny.py --workdir /tmp/tiny
"""

import ml_collections

from configs import quickstart


def get_config() -> ml_collections.ConfigDict:
  config = quickstart.get_config()
  config.model.layers = 4  # 64 / 2**4 = 4×4 bottleneck.
  config.model.base_features = 8  # Very narrow: compiles and runs in seconds on CPU.
  config.model.max_features = 32
  config.optim.batch_size = 8  # Two images per simulated device with 4 devices.
  config.optim.num_train_steps = 6
  config.eval.num_eval_images = 8
  config.log.log_every_steps = 2
  config.eval.eval_every_steps = 3
  config.eval.image_every_steps = 3
  config.log.checkpoint_every_steps = 3
  config.log.keep_checkpoints = 2
  return config
