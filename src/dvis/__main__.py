"""``python -m dvis ...``: the same as the ``dvis`` command."""

import sys

from dvis.cli import main

sys.exit(main())
