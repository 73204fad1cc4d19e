"""Layer 1, training data: images, masks, tf.data batches (files are read by
define_jax.files.image_files; the evaluation set is define_jax.eval's).

  image_folder  a folder of photos: file listing and a stable train/validation split
  quickstart    the scikit-image photographs of the CPU quickstart
  skips         counts of unusable inputs that were skipped
  image_sources image sources, the dataset registry (config.input.dataset), square crops
  mask_sources  training-mask sources and the mask registry (config.input.masks)
  examples      training element i as a pure function of (seed, i)
  pipeline      the tf.data training pipeline (the only module that imports TensorFlow)
  masks         the irregular-mask generator, mask augmentation, the TFDS mask sets
  bands         hole-ratio bands (edges, labels), the hole ratio, the example images
"""
