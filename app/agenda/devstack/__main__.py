"""``python -m agenda.devstack``: the same as ``agenda-dev``."""

import sys

from agenda.devstack.cli import main

sys.exit(main())
