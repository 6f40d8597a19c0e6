"""``python -m mirage_jax`` is ``mirage-jax``."""

import sys

from mirage_jax.cli import main

sys.exit(main())
