"""The loss study at 128²: what each loss term does, from one common start, in one command.

  python -m define_jax.study --config configs/study_faces128.py [--workdir runs/study_faces128]

Rerunning the same command skips finished variants and resumes a half-done one from its
newest checkpoint (SIGTERM or Ctrl-C checkpoint and stop; SIGKILL loses at most
train.log.checkpoint_every_steps steps). Data: ../shared/data beside the checkout (override
--config.train.input.image_dir / --config.train.input.mask_dir).

Protocol: every variant fine-tunes the packaged model (define_jax/pretrained/faces128.msgpack,
trained with V2) with DeFINe's fine-tuning (encoder BatchNorm statistics frozen, Adam at
5e-5), the same seed and so the same images and masks in the same order, for
images_per_variant images; only the loss differs. V5's discriminator starts from random
weights (a PatchGAN, R1-stabilised; see configs/default.py and losses.py).

Selection rule, declared before any number was seen (selection_rule below): on validation
images 600-1,199, among the variants whose PSNR over all bands is at most 0.3 dB below the
packaged model's, and the packaged model itself, ship the one with the lowest LPIPS-Alex
over the images with holes from 30 %. Validation images 0-599 (the model card's table)
give the reported numbers only.

Cost, measured in the study's own run on the 2-core CPU (training wall time of each variant
from its training log, 12,000 images each at batch 16): V1 0:51, V2 1:57, V3 2:28, V4 0:50,
V5 0:57 (h:mm); V2's and V3's first sessions shared the cores with other jobs (V2 was also
killed once and resumed), V4 and V5 had them to themselves (3.2-4.3 and 3.2-3.6 img/s). Train
step on a synthetic batch of 16 at this setting, CPU time per step at load 10-12: V1 1.3 s,
V2 1.3 s, V3 6.8 s, V4 6.8 s, V5 12.4 s before and 9.0-9.7 s after the discriminator's
convolutions ran as patch-matrix matmuls on CPU (kernels.discriminator_conv_general_dilated;
XLA:CPU takes a convolution's second derivative, the R1 penalty's, by a slow route), measured
back to back at load 5-7 (`benchmark train --config configs/faces128.py
--config.loss.preset=final_adversarial --config.loss.discriminator_features=32
--config.optim.batch_size=16`). The evaluations add every 250 steps 96 images per variant,
and the final scoring of 6 models on 1,200 images.
The study reported in the README started from the step-1,000 packaged model; it chose V2,
which has been the packaged model since, so the command now starts from that one.
"""

from pathlib import Path

import ml_collections

from configs import faces128

_CHECKOUT = Path(__file__).resolve().parent.parent


def get_config() -> ml_collections.ConfigDict:
  study = ml_collections.ConfigDict()
  # Study directory: one run per variant in WORKDIR/NAME, the reports here (--workdir wins).
  study.workdir = 'runs/study_faces128'
  # Variant name -> loss preset (losses.LOSS_PRESETS), in the order of the comparison.
  study.variants = ml_collections.ConfigDict({
      'v1_l1': 'l1',
      'v2_valid_hole': 'valid_hole',
      'v3_style': 'style',
      'v4_final': 'final',
      'v5_adversarial': 'final_adversarial',
  })
  # Training images per variant (steps = this / train.optim.batch_size, rounded up).
  study.images_per_variant = 12_000
  # Validation images 0..report_images-1 give the reported table, the next
  # selection_images choose the model; image k has a mask of hole-ratio band k mod 6 (the
  # model card's `evaluate --split validation --num_images 1200` set).
  study.report_images = 600
  study.selection_images = 600
  # The rule's LPIPS-Alex is averaged over the images of the bands from this hole ratio.
  study.selection_min_hole_ratio = 0.3
  # A variant may lose at most this much PSNR over all bands against the packaged model.
  study.max_psnr_loss_db = 0.3
  # The rule as the reports state it.
  study.selection_rule = (
      'on the selection images, among the variants whose PSNR over all bands is at most '
      '0.3 dB below the packaged model\'s, and the packaged model itself, the lowest mean '
      'LPIPS-Alex over the images with holes from 30 % wins.')
  # How the variants were fine-tuned, as the reports state it.
  study.fine_tuning = ('DeFINe\'s fine-tuning: encoder BatchNorm statistics frozen, Adam at a '
                       'constant 5e-5')

  train = faces128.get_config()
  # The common start: the packaged model (V2), the model the rule compares against.
  train.optim.init_from = str(_CHECKOUT / 'define_jax' / 'pretrained' / 'faces128.msgpack')
  train.input.image_dir = str(_CHECKOUT.parent / 'shared' / 'data' / 'faces')
  train.input.mask_dir = str(
      _CHECKOUT.parent / 'shared' / 'data' / 'masks' / 'nvidia_irregular')
  # DeFINe's fine-tuning: BatchNorm statistics move in the decoder only.
  train.model.freeze_encoder_bn = True
  train.optim.learning_rate = 5e-5  # DeFINe's fine-tuning rate, constant.
  train.optim.lr_schedule = 'constant'
  train.optim.warmup_steps = 0
  train.seed = 2  # Neither of the packaged model's seeds (0, 1): crops and masks it never saw.
  # ema_decay stays faces128's 0.999: its warm-up, min(decay, (1 + step) / (10 + step)),
  # averages over roughly the last 10 % of a 750-step run, so the start's weight vanishes.
  # Half the default width (a quarter of the FLOPs): even so V5's step costs 1.8x V4's CPU.
  train.loss.discriminator_features = 32
  train.eval.eval_every_steps = 250
  train.eval.image_every_steps = 250
  train.log.checkpoint_every_steps = 50  # A few minutes of the slowest variant.
  train.log.log_every_steps = 25
  study.train = train
  return study
