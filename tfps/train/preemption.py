"""Preemption on the chief: SIGUSR1 asks for a checkpoint now and an exit to be requeued.

Clusters preempt jobs and give notice: Slurm signals the batch shell ``N`` seconds before the
end (``--signal=B:USR1@N``), and ``tfps-launch`` forwards SIGUSR1 to the chief. While
`Trainer.train` runs, the signal is noted (nothing else happens in the handler); at the next
closure boundary the loop waits for the closures in flight, writes a checkpoint and stops, and
`train` raises `tfps.errors.Preempted`: the chief exits with `tfps.exit_codes.PREEMPTED` (138),
which schedulers read as retryable, and the requeued job resumes from that checkpoint.
Outside `train`, and in any thread but the main one, the previous handler stays.
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["Preemption"]


class Preemption:
    """A `TrainLoop` stop check that answers once SIGUSR1 arrived (see the module)."""

    def __init__(self):
        self._reason: str | None = None

    def __call__(self) -> str | None:
        return self._reason

    def request(self, reason: str) -> None:
        """Asks for a checkpoint and a stop at the next closure boundary."""
        self._reason = reason

    @contextlib.contextmanager
    def watching(self):
        """SIGUSR1 requests a stop while inside the block (main thread only)."""
        self._reason = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGUSR1,
                                 lambda signum, frame: self.request("preempted (SIGUSR1)"))
        try:
            yield
        finally:
            signal.signal(signal.SIGUSR1, previous)
