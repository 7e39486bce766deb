"""`python -m agenda.vrrp` is `agenda-vrrpd`."""

import sys

from agenda.vrrp.cli import main

sys.exit(main())
