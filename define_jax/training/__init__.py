"""Layer 4, training: the training loop, its workdir lock and its curves."""
