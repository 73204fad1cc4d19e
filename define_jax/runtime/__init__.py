"""Layer 0, the process around the work: compilation cache, terminal conventions, data parallelism."""
