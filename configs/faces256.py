"""Faces at a 256² canvas with the mirror input: the packaged 128² model fine-tuned to users'
sizes (issue: a 512² FFHQ face is 2-2.5x the 128² canvas, so every 128² fill is upscaled).

  python -m define_jax.main --config configs/faces256.py --workdir runs/faces256 \
      --config.input.image_dir=DIR --config.input.mask_dir=NVIDIA_MASK_DIR \
      --config.optim.init_from=define_jax/pretrained/faces128.msgpack

What it changes from configs/faces128.py, and why:
  - image_size 256 with the same 7 levels: the network is fully convolutional, so the 128²
    weights are the start (2×2 bottleneck instead of 1×1). UTKFace photos are 200², so the
    training faces are enlarged 1.28× (bicubic): sharper than the 128² canvas gives, but
    softer than a sharp 256² face; the model card says so.
  - mirror: the left-right mirror of the aligned face as input (models.py), added at zero,
    so the run starts from the 128² model's exact function.
  - a quarter of the masks hide one face part on the face template (an eye, the nose, the
    mouth): the holes where predicting the mean gives a smear, and where the mirror helps.
  - batch 8 at 1e-4 peak: fine-tuning, and 4x the pixels per image of faces128's batch 16.
"""

import ml_collections

from configs import faces128


def get_config() -> ml_collections.ConfigDict:
  config = faces128.get_config()
  config.model.image_size = 256
  config.model.layers = 7  # 256 / 2**7 = 2×2 bottleneck; the 128² weights fit unchanged.
  config.model.mirror = True  # The other half of the face as input (starts at zero).
  config.input.face_part_mask_fraction = 0.25  # Eye / nose / mouth holes on the template.
  config.optim.batch_size = 8
  config.optim.learning_rate = 1e-4  # Peak of a fine-tune; cosine decay to 2 % of it.
  config.optim.warmup_steps = 100
  config.optim.num_train_steps = 6_000  # 48k images; resumable across sessions.
  config.eval.num_eval_images = 48
  config.eval.eval_every_steps = 500
  config.eval.image_every_steps = 500
  config.log.log_every_steps = 25
  config.log.checkpoint_every_steps = 100  # Little lost when a session ends mid-run.
  return config
