"""``python -m braindecode_pkg STAGE ...``: the same as the ``braindecode-pkg`` console script."""

import sys

from .cli import main

sys.exit(main())
