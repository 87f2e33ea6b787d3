"""The ``tfps-launch`` executable: signal handlers first, then everything else.

Python turns a SIGINT into a KeyboardInterrupt traceback wherever it lands, and importing the
launcher takes a moment. So the very first thing the entry point does is take over SIGINT,
SIGTERM and SIGHUP and only *record* them. The launcher looks at the record before it starts
anything (`tfps.launch.cli.main`) and the supervisor at its start: a signal that came early
ends the launcher with one line and exit code 128 + signal, before any task has started.
"""

from __future__ import annotations

import signal
import sys

_HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def main(argv=None) -> int:
    received: list[int] = []
    for sig in _HANDLED:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    from tfps.launch.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv, early_signals=received)


if __name__ == "__main__":
    sys.exit(main())
