"""What the chief tells its launcher while it runs: a small JSON file, rewritten every second.

The launcher names the file in the chief's environment (`HEALTH_FILE_ENV`, a new name at
every start of the chief, so a report of a previous chief is never read as this one's) and
the hang timeout's floor (`HANG_TIMEOUT_ENV`); the chief's `tfps.train.health` writes
`ChiefReport`s there: a heartbeat (the wall clock of the write: a chief whose reports stop is
frozen), the timeout it derived, the workers it found hung, and at its exit that it is
exiting. With ``--metrics-port`` the
launcher also names `METRICS_FILE_ENV`, where the chief writes its Prometheus text (the
launcher serves it, `tfps.launch.run.metrics_http`). A file, not a socket: the launcher
reads it from its loop without a thread, on any host the chief runs on. Pure.

>>> report = ChiefReport(heartbeat=100.0, timeout=30.0,
...                      hung=(HungTask("worker:1", 63.2, 40.0),))
>>> ChiefReport.from_json(report.to_json()) == report
True
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

__all__ = ["DEFAULT_HANG_TIMEOUT", "HANG_TIMEOUT_ENV", "HEALTH_FILE_ENV", "METRICS_FILE_ENV",
           "ChiefReport", "HungTask", "read_report", "write_atomic"]

HEALTH_FILE_ENV = "TFPS_HEALTH_FILE"
HANG_TIMEOUT_ENV = "TFPS_HANG_TIMEOUT"
METRICS_FILE_ENV = "TFPS_METRICS_FILE"
# The floor of the hang timeout (--hang-timeout), in seconds: TF's own first closure on a
# worker registers its functions there, seconds on a loaded machine; the chief derives a
# longer timeout from the closure times it sees (tfps.train.health.derive_timeout).
DEFAULT_HANG_TIMEOUT = 30.0
# A report bigger than this is not one the chief wrote.
_MAX_REPORT = 1 << 20


@dataclasses.dataclass(frozen=True)
class HungTask:
    """A task the chief found hung: `seconds` without progress, the episode starting at
    `since` (the chief's wall clock; a new episode of the same task has another)."""

    task: str
    seconds: float
    since: float


@dataclasses.dataclass(frozen=True)
class ChiefReport:
    """One report of the chief (the module docstring)."""

    heartbeat: float
    timeout: float
    hung: tuple[HungTask, ...] = ()
    step: int = 0
    exiting: bool = False  # the chief's last report: it is ending (TF's teardown may block)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ChiefReport:
        data = json.loads(text)
        return cls(heartbeat=float(data["heartbeat"]), timeout=float(data["timeout"]),
                   hung=tuple(HungTask(str(h["task"]), float(h["seconds"]), float(h["since"]))
                              for h in data.get("hung", ())),
                   step=int(data.get("step", 0)), exiting=bool(data.get("exiting", False)))


def write_atomic(path: str, data: bytes) -> None:
    """Replaces `path` with `data` in one step (a reader sees the old file or the new one)."""
    directory = os.path.dirname(path) or "."
    fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def read_report(path: str) -> ChiefReport | None:
    """The chief's latest report, or None (none written yet, or unreadable)."""
    try:
        with open(path, "rb") as f:
            text = f.read(_MAX_REPORT)
        return ChiefReport.from_json(text.decode("utf-8"))
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
