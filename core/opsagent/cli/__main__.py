"""``python -m opsagent.cli.main``."""

import sys

from opsagent.cli.main.main import main

sys.exit(main())
