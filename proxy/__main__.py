"""`python -m pgshroud.proxy`: the `pgshroud` command, as `python -m pgshroud` runs it."""

import sys

from pgshroud.proxy.commands.cli import main

sys.exit(main())
