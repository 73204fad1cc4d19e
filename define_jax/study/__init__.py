"""Layer 5, the loss study: train config variants alike, score them, report."""
