"""`python -m define_jax.benchmark`: one benchmark, one JSON line (define_jax.benchmark.benchmark)."""

from define_jax.benchmark.benchmark import main

main()
