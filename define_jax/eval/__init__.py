"""Layer 3, evaluation: what `evaluate`, the study and training-time evaluation score and report.

  metrics         L1, PSNR, SSIM, LPIPS-VGG, LPIPS-Alex (per image, jit-able)
  scoring         per-image metrics of inpainting methods, band means, report rows
  evaluation_set  the fixed images and band-balanced masks every method is scored on
  report          Markdown tables and JSON report files
  grids           image grids: examples per band, comparisons, training samples

Hole-ratio bands are define_jax.data.bands; the classical baselines define_jax.inference.baselines.
None of them imports TensorFlow (TFDS only when the evaluation set reads a prepared mask set).
"""
