"""``python -m tfps.launch`` is ``tfps-launch``."""

import sys

from tfps.launch.entry import main

sys.exit(main())
