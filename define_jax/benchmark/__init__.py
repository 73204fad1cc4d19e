"""Layer 5, benchmarks and the measurements behind them (developers only: nothing at run time
imports this package)."""
