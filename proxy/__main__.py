import sys

from pgshroud.proxy.commands.cli import main

sys.exit(main())
