"""Training data: images, masks, tf.data batches (the evaluation set is define_jax.eval's).

  decoding      image decoding, square crops, stored-mask decoding
  skips         counts of unusable inputs that were skipped
  images        image sources and the dataset registry (config.dataset)
  mask_sources  training-mask sources and the mask registry (config.masks)
  examples      training element i as a pure function of (seed, i)
  pipeline      the tf.data training pipeline (the only module that imports TensorFlow)
"""
