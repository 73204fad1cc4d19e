"""Faces at 128² on a 2-core CPU: the recipe of the shipped model (define_jax/pretrained/).

For any folder of aligned face photos (searched recursively; 10 % held out by file name):

  python -m define_jax.main --config configs/faces128.py --workdir runs/faces128 \
      --config.input.image_dir=DIR --config.input.mask_dir=NVIDIA_MASK_DIR

The shipped weights were then fine-tuned for 1,000 steps (see pretrained/FACES128_MODEL_CARD.md): the same
command with --workdir runs/faces128_ft --config.optim.init_from=runs/faces128
--config.optim.num_train_steps=1000 --config.optim.learning_rate=2e-4
--config.optim.warmup_steps=100 --config.seed=1.

What it changes from the paper's setting, and why (all measured on a 2-core CPU):
  - a narrower U-Net (32-256 channels, 7 levels) so a CPU sees enough images;
  - the mask as an input channel and a biharmonic pre-fill the network corrects
    (mask_channel, prefill): without them thin holes come out dark (see prefill.py), and
    a harmonic pre-fill left 5 dB to scikit-image's biharmonic on small holes;
  - valid + hole L1 only: VGG16 perceptual/style terms cost ~10x the U-Net's FLOPs here;
  - warm-up, cosine decay, gradient clipping and a moving average of the weights;
  - half the masks generated (strokes down to 2 px), half NVIDIA masks augmented.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.input.dataset = 'image_folder'  # Set input.image_dir to the photo folder.
  config.model.image_size = 128
  config.model.layers = 7  # 128 / 2**7 = 1×1 bottleneck.
  config.model.base_features = 32  # Half the paper's width: 4x fewer FLOPs.
  config.model.max_features = 256
  config.model.mask_channel = True  # Thin holes are told apart from dark lines.
  config.model.prefill = 'biharmonic'  # The network corrects scikit-image-quality diffusion.
  config.loss.preset = 'valid_hole'  # L1 terms only (no VGG16 on a CPU budget).
  config.optim.batch_size = 16
  config.optim.learning_rate = 1e-3  # Peak; cosine decay to 2 % of it.
  config.optim.lr_schedule = 'cosine'
  config.optim.warmup_steps = 300
  config.optim.final_learning_rate_fraction = 0.02
  config.optim.grad_clip_norm = 1.0
  config.optim.ema_decay = 0.999
  config.optim.num_train_steps = 4_200  # 67k images: about 2 h on 2 busy cores.
  config.input.masks = 'nvidia_irregular'  # Set input.mask_dir to the NVIDIA mask PNGs.
  config.input.generated_mask_fraction = 0.5
  config.input.hole_ratio_min = 0.01
  config.input.hole_ratio_max = 0.6
  config.eval.num_eval_images = 96
  config.log.log_every_steps = 50
  config.eval.eval_every_steps = 1000
  config.eval.image_every_steps = 1000
  config.log.checkpoint_every_steps = 250  # ~2 minutes on 2 cores: little lost on preemption.
  return config
