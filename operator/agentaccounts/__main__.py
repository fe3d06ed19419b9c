"""`python -m agentaccounts` is the CLI."""

import sys

from agentaccounts.cli import main

sys.exit(main())
