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
  config.input.dataset = 'quickstart'  # scikit-image sample photographs, random crops.
  config.model.image_size = 64  # Small enough for a 2-core CPU.
  config.model.layers = 5  # 64 / 2**5 = 2×2 bottleneck.
  config.model.base_features = 32  # Narrower than the paper for CPU speed.
  config.model.max_features = 128
  config.optim.batch_size = 8  # Global batch (divisible by common device counts).
  config.optim.learning_rate = 1e-3  # Faster progress in a short run.
  config.optim.num_train_steps = 600  # About 5 minutes on 2 CPU cores.
  config.input.hole_ratio_min = 0.05
  config.input.hole_ratio_max = 0.3  # Moderate holes so a short run visibly fills them.
  config.eval.num_eval_images = 16
  config.log.log_every_steps = 50
  config.eval.eval_every_steps = 200
  config.eval.image_every_steps = 200
  config.log.checkpoint_every_steps = 200
  return config
