"""``python -m tfps.launch`` is ``tfps-launch``."""

import sys

from tfps.launch.cli import main

sys.exit(main())
