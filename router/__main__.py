"""`python -m router ...`: the router's training and evaluation commands (router/training/cli.py)."""

import sys

from router.training.cli import main

sys.exit(main())
