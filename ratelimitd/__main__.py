"""`python -m ratelimitd` is the `ratelimitd` command."""

import sys

from ratelimitd.cli import main

sys.exit(main())
