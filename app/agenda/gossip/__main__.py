import sys

from agenda.gossip.cli import main

sys.exit(main())
