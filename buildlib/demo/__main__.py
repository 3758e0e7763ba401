"""``python -m buildlib.demo``: the demo driver (scripts/demo)."""

import sys

from .driver import main

sys.exit(main())
