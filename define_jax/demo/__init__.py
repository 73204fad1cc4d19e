"""Layer 3, the browser demo: `python -m define_jax.demo`."""
