"""Layer 0, files: reading photos and masks by one set of rules, writing results without losing any."""
