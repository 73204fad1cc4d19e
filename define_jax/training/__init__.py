"""Layer 4, training: the settings check, losses, train state and step (steps, losses: jax,
flax and optax only), the training loop, its workdir lock and its curves."""
