"""`python -m define_jax.demo`: the browser demo (define_jax.demo.demo)."""

import sys

from define_jax.demo.demo import main

sys.exit(main())
