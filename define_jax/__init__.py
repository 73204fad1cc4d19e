"""define_jax: DeFINe deep facial inpainting (partial-convolution U-Net) in JAX/Flax."""
