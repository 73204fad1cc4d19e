"""Layer 1, the compute core: the networks, their kernels, losses, VGG, the train and inpaint
steps, model files and checkpoints. Imports no TensorFlow and no clu."""
