"""Training data and the evaluation set: images, masks, tf.data batches.

  decoding      image decoding, square crops, stored-mask decoding
  skips         counts of unusable inputs that were skipped
  images        image sources and the dataset registry (config.input.dataset)
  mask_sources  training-mask sources and the mask registry (config.input.masks)
  examples      training element i as a pure function of (seed, i)
  pipeline      the tf.data training pipeline (the only module that imports TensorFlow)
  evaluation    the fixed evaluation set of training-time eval, evaluate and study
"""
