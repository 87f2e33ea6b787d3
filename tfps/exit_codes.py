"""The exit codes of tfps's processes, and what a scheduler should do with each. Pure.

Schedulers decide whether to retry a job from its exit code. Kubeflow's training operator reads
1, 2, 126, 127, 128 and 139 as permanent, 130, 137 and 143 as retryable, and 138 as retryable by
the user's choice (``IsRetryableExitCode``); Slurm requeues a job that asks for it. tfps exits
with a permanent code where a restart would fail the same way (bad input, a full disk, the
user's program raising) and a retryable one where a fresh start can cure (a lost task after the
restart budget, a hang), so every emitted manifest's retry policy can follow the same table:

| code | name | meaning | retry |
|---|---|---|---|
| 0 | `OK` | trained to the end | no |
| 1 | `FAILED` | the program failed, or storage failed (what was kept is said) | no |
| 2 | `USAGE` | bad input: a spec, flag, environment or argument | no |
| 138 | `PREEMPTED` | checkpointed on request (SIGUSR1) to be requeued | yes |
| 143 | `RETRYABLE` | a task was lost or hung beyond the restart budget | yes |

>>> is_retryable(RETRYABLE), is_retryable(USAGE)
(True, False)
"""

from __future__ import annotations

__all__ = ["FAILED", "OK", "PERMANENT", "PREEMPTED", "RETRYABLE", "USAGE", "is_retryable"]

OK = 0
FAILED = 1
USAGE = 2
# 128 + SIGUSR1: the code Kubeflow leaves to the user as retryable, and Slurm's preemption
# signal (``--signal=B:USR1@N``).
PREEMPTED = 138
# 128 + SIGTERM: retryable for Kubeflow; what a task ended by its scheduler exits with.
RETRYABLE = 143

# Kubeflow's permanent codes (training-operator, ``IsRetryableExitCode``).
PERMANENT = (1, 2, 126, 127, 128, 139)


def is_retryable(code: int) -> bool:
    """Whether a scheduler should start the job again after it exited with `code`."""
    return code in (PREEMPTED, RETRYABLE, 130, 137)
