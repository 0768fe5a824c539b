"""`python -m bench`: the whole benchmark (see bench/harness.py)."""

import sys

from .harness import main

sys.exit(main())
