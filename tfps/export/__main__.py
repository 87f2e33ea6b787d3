"""``python -m tfps.export``: a SavedModel from a training run's checkpoint (`tfps.export.cli`)."""

import sys

from tfps.export.cli import main

sys.exit(main())
