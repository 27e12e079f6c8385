"""`python -m router.training ...`, the same commands as `python -m router ...`."""

import sys

from router.training.cli import main

sys.exit(main())
