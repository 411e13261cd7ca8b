"""``python -m regcache.proxy``: run regcache's front ends."""

import sys

from ._main import main

sys.exit(main())
