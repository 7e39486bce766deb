import sys

from agenda.redis_supervisor.cli import main

sys.exit(main())
