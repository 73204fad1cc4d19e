"""Quickstart: a few minutes of CPU training on real photographs shipped with scikit-image.

No dataset download: random crops of scikit-image's sample photographs, masks generated on
the fly, the full DeFINe loss at 64². Leaves a checkpoint, TensorBoard logs and
`before_after.png` in the workdir.

  python -m define_jax.main --config configs/quickstart.py --workdir runs/quickstart
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.dataset = 'quickstart'  # scikit-image sample photographs, random crops.
  config.image_size = 64  # Small enough for a 2-core CPU.
  config.layers = 5  # 64 / 2**5 = 2×2 bottleneck.
  config.base_features = 32  # Narrower than the paper for CPU speed.
  config.max_features = 128
  config.batch_size = 8  # Global batch (divisible by common device counts).
  config.learning_rate = 1e-3  # Faster progress in a short run.
  config.num_train_steps = 600  # About 5 minutes on 2 CPU cores.
  config.hole_ratio_min = 0.05
  config.hole_ratio_max = 0.3  # Moderate holes so a short run visibly fills them.
  config.num_eval_images = 16
  config.log_every_steps = 50
  config.eval_every_steps = 200
  config.image_every_steps = 200
  config.checkpoint_every_steps = 200
  return config
