"""Layer 2, the photo pipeline: inpainting photos of any size with a trained model.

The public API is `from define_jax.inference import Inpainter`.
"""

from define_jax.inference.inference import FITS, MAX_PASSES, PRETRAINED_MODEL, Inpainter

__all__ = [FITS, MAX_PASSES, PRETRAINED_MODEL, Inpainter]
