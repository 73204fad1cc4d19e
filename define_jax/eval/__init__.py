"""Evaluation: what `evaluate`, the study and training-time evaluation score and report.

  bands           hole-ratio bands (edges, labels), the hole ratio, the example images
  metrics         L1, PSNR, SSIM, LPIPS-VGG, LPIPS-Alex (per image, jit-able)
  scoring         per-image metrics of inpainting methods, band means, report rows
  baselines       classical inpainting to compare with: Telea, Navier–Stokes, biharmonic
  evaluation_set  the fixed images and band-balanced masks every method is scored on
  report          Markdown tables and JSON report files
  grids           image grids: examples per band, comparisons, training samples

None of them imports TensorFlow (TFDS only when the evaluation set reads a prepared mask set).
"""
