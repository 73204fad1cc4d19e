"""Layer 1, the network: its Modules and kernels, building it from config.model, the inpaint
step, VGG16, model files and checkpoints. Imports no optax, no TensorFlow and no clu."""
