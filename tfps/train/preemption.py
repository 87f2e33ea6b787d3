"""Preemption on the chief: SIGUSR1 asks for a checkpoint now and an exit to be requeued.

Clusters preempt jobs and give notice: Slurm signals the batch shell ``N`` seconds before the
end (``--signal=B:USR1@N``), and ``tfps-launch`` passes SIGUSR1 to the chief. The notice is
recorded (nothing else happens in the handler); at the next closure boundary of
`Trainer.train` the loop waits for the closures in flight, writes a checkpoint and stops, and
`train` raises `tfps.errors.Preempted`: the chief exits with `tfps.exit_codes.PREEMPTED` (138),
which schedulers read as retryable, and the requeued job resumes from that checkpoint. A notice
that arrives before training starts is kept for the first closure boundary.

The recorder is installed when a Trainer is made, and earlier, at ``import tfps``, in a chief
that ``tfps-launch`` started (`install_for_launched_chief`): SIGUSR1's default action ends a
process, which would lose the notice. It is installed only in the main thread and only over
the default action (a handler of the program's own is left alone).

>>> state = Preemption()
>>> state(), state.request("preempted (SIGUSR1)") or state()
(None, 'preempted (SIGUSR1)')
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Mapping

__all__ = ["PREEMPTION", "Preemption", "install_for_launched_chief"]


class Preemption:
    """A `TrainLoop` stop check that answers once a notice arrived (see the module)."""

    def __init__(self):
        self._reason: str | None = None

    def __call__(self) -> str | None:
        return self._reason

    def request(self, reason: str) -> None:
        """Asks for a checkpoint and a stop at the next closure boundary."""
        self._reason = reason

    def clear(self) -> None:
        """Forgets a notice (after the stop it asked for)."""
        self._reason = None

    def install(self) -> bool:
        """Records SIGUSR1 from now on, where the process still has its default action and
        this is the main thread; returns whether the recorder is in place."""
        if threading.current_thread() is not threading.main_thread():
            return False
        current = signal.getsignal(signal.SIGUSR1)
        if current is _record:
            return True
        if current not in (signal.SIG_DFL, None):
            return False  # the program's own handler
        signal.signal(signal.SIGUSR1, _record)
        return True


# One per process: every Trainer of the process stops on the notice.
PREEMPTION = Preemption()


def _record(signum, frame) -> None:
    PREEMPTION.request("preempted (SIGUSR1)")


def install_for_launched_chief(environ: Mapping[str, str] | None = None) -> bool:
    """Installs the recorder in a chief started by ``tfps-launch`` (its environment names the
    tasks on the host and the chief's TF_CONFIG); anywhere else does nothing."""
    environ = os.environ if environ is None else environ
    if "TFPS_TASKS_ON_HOST" not in environ:
        return False
    try:
        task = json.loads(environ.get("TF_CONFIG", "{}")).get("task", {})
    except (ValueError, AttributeError):
        return False
    if not isinstance(task, dict) or task.get("type") != "chief":
        return False
    return PREEMPTION.install()
