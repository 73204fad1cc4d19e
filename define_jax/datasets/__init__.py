"""Layer 1, TFDS builders of the downloaded data sets: `python -m define_jax.datasets.prepare`."""
