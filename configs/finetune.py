"""DeFINe stage two: fine-tune a stage-one run at lr 5e-5 with encoder BatchNorm frozen.

  python -m define_jax.main --config configs/finetune.py --workdir runs/ffhq256_ft \
      --config.optim.init_from=runs/ffhq256
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.optim.learning_rate = 5e-5  # DeFINe's fine-tuning rate.
  config.model.freeze_encoder_bn = True  # BatchNorm statistics update in the decoder only.
  config.optim.num_train_steps = 100_000  # Steps of this stage, counted from 0.
  # Required: the stage-one workdir whose latest checkpoint initialises the model.
  config.optim.init_from = ml_collections.config_dict.placeholder(str)
  return config
