"""`python -m pgshroud`: the `pgshroud` command."""

import sys

from pgshroud.proxy.commands.cli import main

sys.exit(main())
