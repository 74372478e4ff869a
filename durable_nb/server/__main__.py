import sys

from durable_nb.server.app import main

sys.exit(main())
