"""Layer 2, the photo pipeline: inpainting photos of any size with a trained model.

The public API is `from define_jax.inference import Inpainter`.
"""

from define_jax.inference.inference import DEFAULT_MODEL
from define_jax.inference.inference import FITS
from define_jax.inference.inference import Inpainter
from define_jax.inference.inference import MAX_PASSES
from define_jax.inference.inference import PRETRAINED_MODEL
from define_jax.inference.inference import PRETRAINED_MODELS

__all__ = [DEFAULT_MODEL, FITS, Inpainter, MAX_PASSES, PRETRAINED_MODEL, PRETRAINED_MODELS]
