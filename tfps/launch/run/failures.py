"""Failure semantics of the launcher: what a task's exit means, what is restarted, the table.

The rule, applied to every set of tasks found dead at once (pure, so it is unit-tested alone):

* the **chief exits 0**: the job is done; every other task is ended; exit 0.
* the **chief exits with a code** (``sys.exit(3)``, an uncaught exception): the user's program
  failed; nothing is restarted and the launcher exits with that code. Exception: when a ps task
  died at the same moment, the chief's exit is a consequence of it (see below).
* the **chief dies by a signal** (OOM killer, preemption, ``kill -9``): restarted; it resumes
  from its latest checkpoint.
* a **worker** dies (any way): restarted at the same address; the coordinator notices, waits for
  it and re-runs its unfinished closures on it (TF's `WorkerPreemptionHandler`).
* a **ps** task dies: its variables are gone and TF cannot recover in place (the coordinator
  only tolerates worker failures), so the ps *and* the chief are restarted; the chief resumes
  from its latest checkpoint.
* the **evaluator** exiting 0 is normal (it finished); any other death restarts it.
* a task **hangs** (`tfps.launch.run.hangs`: a ps or worker that stops answering GetStatus,
  a worker holding a closure with no completion, a chief whose reports stop): the launcher
  kills it, and it counts as dead, by the rules above; the table says ``hung (no progress
  for 63 s)``.
* one task per launcher (``--from-env``): a ps on another host is watched by the chief's
  launcher (`tfps.launch.run.peers`). A chief that exits with a code after a ps of its cluster
  became unreachable failed because of it: it is restarted once every ps listens again, and
  resumes from its checkpoint. The lost ps is the root cause in the table.

Each such event uses one restart of the ``--max-restarts`` budget. With the budget spent (or
``--max-restarts 0``) the launcher ends the cluster and exits `EXIT_GAVE_UP`
(`tfps.exit_codes.RETRYABLE`, 143: a fresh start can cure a lost or hung task, and schedulers
retry it); the chief's own exit code passes through as above. It prints the failure table,
root cause (the first failure) first.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Sequence

from tfps import exit_codes
from tfps.cluster import TaskId
from tfps.launch.run.plan import label

__all__ = ["EXIT_GAVE_UP", "Death", "Decision", "Failure", "decide", "describe_exit",
           "failure_table"]

# The launcher's exit code when it gives up on lost or hung tasks (the chief's own code
# passes): retryable, a fresh start can cure it.
EXIT_GAVE_UP = exit_codes.RETRYABLE


def describe_exit(returncode: int | None, hung: str | None = None) -> str:
    """``SIGKILL`` for a death by signal 9 (Popen's -9), ``exit code 3`` otherwise;
    ``unreachable`` for a task on another host that stopped accepting connections;
    ``hung (no progress for 63 s)`` for a task the launcher killed because it hung."""
    if hung:
        return f"hung ({hung})"
    if returncode is None:
        return "unreachable"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclasses.dataclass(frozen=True)
class Death:
    """A task found dead, with Popen's returncode (negative: killed by that signal); None
    for a task of another launcher found unreachable. `hung`: why the launcher killed it
    (``no progress for 63 s``), None for a death of its own."""

    task: TaskId
    returncode: int | None
    hung: str | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do about a set of deaths.

    action: ``"finish"`` (end the cluster, exit `code`), ``"restart"`` (restart `restart`,
      in order, if the budget allows) or ``"continue"`` (nothing failed).
    failures: the deaths that count as failures (for the table).
    wait_for: tasks of other launchers to wait for (listening again) before restarting.
    """

    action: str
    code: int = 0
    restart: tuple[TaskId, ...] = ()
    failures: tuple[Death, ...] = ()
    wait_for: tuple[TaskId, ...] = ()


def decide(deaths: Sequence[Death], chief_here: bool = True,
           lost: Sequence[TaskId] = ()) -> Decision:
    """Applies the module's rule to `deaths` (tasks found dead in one look).

    Args:
      deaths: the dead tasks; none of them was ended by the launcher itself.
      chief_here: whether this launcher runs the chief (so it can restart it after a ps).
      lost: tasks of other launchers seen unreachable since the chief last started
        (`tfps.launch.run.peers.PsWatch`), first loss first.

    >>> decide([Death(TaskId("chief", 0), 1)]).action
    'finish'
    >>> d = decide([Death(TaskId("chief", 0), 1)], lost=[TaskId("ps", 1)])
    >>> d.action, d.restart, d.wait_for
    ('restart', (TaskId(type='chief', index=0),), (TaskId(type='ps', index=1),))
    """
    chief = next((d for d in deaths if d.task.type == "chief"), None)
    ps_died = any(d.task.type == "ps" for d in deaths)
    lost_ps = tuple(t for t in lost if t.type == "ps")
    if chief is not None and chief.returncode == 0:
        return Decision("finish", 0)
    failures = tuple(d for d in deaths
                     if not (d.task.type == "evaluator" and d.returncode == 0))
    if chief is not None and chief.returncode > 0 and lost_ps and not ps_died:
        # The chief failed on a ps its launcher does not run: that ps's launcher restarts
        # it; the chief starts over from its checkpoint once it listens again.
        return Decision("restart", restart=(chief.task,), wait_for=lost_ps,
                        failures=tuple(Death(t, None) for t in lost_ps) + failures)
    if chief is not None and chief.returncode > 0 and not ps_died:
        return Decision("finish", chief.returncode, failures=failures)
    if not failures:
        return Decision("continue")
    # Restart servers before the chief so that the new chief finds them up; a ps death means
    # the chief (alive or not) must start over from its checkpoint too.
    order = {"dispatcher": -2, "data_worker": -1, "ps": 0, "worker": 1, "evaluator": 2, "chief": 3}
    restart = sorted({d.task for d in failures}, key=lambda t: (order[t.type], t.index))
    if ps_died and chief_here and chief is None:
        restart.append(TaskId("chief", 0))
    return Decision("restart", restart=tuple(restart), failures=failures)


@dataclasses.dataclass(frozen=True)
class Failure:
    """One row of the failure table."""

    task: TaskId
    pid: int | None  # None: a task of another launcher
    returncode: int | None  # None: found unreachable
    elapsed: float  # seconds since the launcher started the cluster
    restarted: bool = False
    hung: str | None = None  # the launcher killed it: it hung (`Death.hung`)


def failure_table(failures: Sequence[Failure]) -> str:
    """torchrun-style table, the first failure marked as the root cause.

    >>> print(failure_table([Failure(TaskId("ps", 0), 41, -9, 12.5, True)]))
    tfps-launch: failures (root cause first):
      task  role  index  pid  exit     after  action
      ps:0  ps    0      41   SIGKILL  12.5s  restarted  <- root cause
    >>> print(failure_table([Failure(TaskId("worker", 1), 7, -9, 80.0, True,
    ...                              hung="no progress for 63 s")]).splitlines()[2])
      worker:1  worker  1      7    hung (no progress for 63 s)  80.0s  restarted  <- root cause
    """
    rows = [("task", "role", "index", "pid", "exit", "after", "action")]
    for f in failures:
        rows.append((label(f.task), f.task.type, str(f.task.index),
                     "-" if f.pid is None else str(f.pid),
                     describe_exit(f.returncode, f.hung), f"{f.elapsed:.1f}s",
                     "restarted" if f.restarted else "-"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["tfps-launch: failures (root cause first):"]
    for i, row in enumerate(rows):
        text = "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
        lines.append(text + ("  <- root cause" if i == 1 else ""))
    return "\n".join(lines)
