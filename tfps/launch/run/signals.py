"""The launcher's signals: SIGINT, SIGTERM, SIGHUP end the cluster; SIGUSR1 goes to the chief.

The handlers only set flags; the supervisor's loop (`tfps.launch.run.supervisor`), which looks
every tenth of a second, acts and prints. A second ending signal during the shutdown forces
it (SIGKILL at once). A SIGTERM repeated within `REPEAT_WINDOW_S` of the first counts as one:
Slurm sends two at a time limit, back to back, and the tasks would otherwise lose their grace
period (the time to save).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence

__all__ = ["REPEAT_WINDOW_S", "Signals"]

_HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A SIGTERM this soon after the first is the same request (Slurm's pair at a time limit).
REPEAT_WINDOW_S = 2.0


class Signals:
    """What the launcher was asked by signals so far.

    Attributes:
      stop: the first ending signal (or one recorded before the launcher started: `early`).
      force: a second ending signal came while stopping (or stopping had begun).
      usr1: SIGUSR1s not yet passed on to the chief.
      repeats: SIGTERMs counted as the first one (`REPEAT_WINDOW_S`).
      stopping: set by the supervisor once it ends the cluster.
    """

    def __init__(self, early: Sequence[int] = ()):
        self.stop: int | None = early[0] if early else None
        self.force = False
        self.usr1 = 0
        self.repeats = 0
        self.stopping = False
        self._first_term: float | None = None
        self._saved: dict = {}

    def install(self) -> None:
        """Takes over the signals (main thread only; elsewhere Python cannot)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._saved = {sig: signal.signal(sig, self._on_signal) for sig in _HANDLED}
        self._saved[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._on_usr1)

    def restore(self) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved = {}

    def _on_usr1(self, signum, frame) -> None:
        self.usr1 += 1  # the loop passes it on

    def _on_signal(self, signum, frame) -> None:
        now = time.monotonic()
        if signum == signal.SIGTERM:
            if self._first_term is not None and now - self._first_term < REPEAT_WINDOW_S:
                self.repeats += 1
                return
            self._first_term = now
        if self.stop is not None or self.stopping:
            self.force = True
        else:
            self.stop = signum
