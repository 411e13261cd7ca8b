"""``python -m regcache``: the operator's command line (prefetch, ls, stats, gc, rm, verify)."""

import sys

from ._cli import main

sys.exit(main())
