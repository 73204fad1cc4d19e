"""`python -m define_jax.study`: the loss study (define_jax.study.study)."""

import sys

from define_jax.study.study import main

sys.exit(main())
