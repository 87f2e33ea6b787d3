"""Hung tasks, seen from the launcher: which of its tasks to kill and restart as if they died.

A process that hangs fails nothing, so neither TF nor the launcher's ``poll()`` sees it.
The launcher looks at each of its tasks in a way a hung one cannot fake:

* **ps and worker tasks**: one ``/tensorflow.WorkerService/GetStatus`` call a second
  (`tfps.launch.run.rpc`). A live TF server answers, however busy; a stopped process never
  does (a TCP connect would still succeed: the kernel completes it). A task silent for the
  hang timeout is hung. A task that never answered yet is starting, not hung.
* **the chief**: its reports (`tfps.launch.run.channel`), one a second from a thread of the
  chief (`tfps.train.health`). Reports that stop for the hang timeout: the chief is hung.
  A chief that never reported (not a `tfps.Trainer`, or still importing TF) is not watched.
* **workers that answer but hold a closure that never finishes** (a stuck driver, a
  partition between worker and ps): the chief finds them, and says so in its report.

`HangWatch.poll` returns each hang once (`Hang`); the supervisor kills the task and treats it
as dead (`tfps.launch.run.failures`). Under an engine (one task per launcher) a worker the
chief finds hung runs elsewhere: the chief's launcher asks the worker's launcher to restart
it (`tfps.launch.run.relay`), and that launcher does as for a hang of its own.

The timeout is ``--hang-timeout`` (the floor of the chief's derived timeout,
`tfps.train.health.derive_timeout`). Detection takes the timeout plus at most a second or two
(docs/reliability.md has the measurements).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence

from tfps.cluster import TaskId, split_address
from tfps.launch.run import channel, relay, rpc
from tfps.launch.run.plan import TaskPlan, label

__all__ = ["Hang", "HangWatch"]

_SERVERS = ("ps", "worker")
_CHIEF = TaskId("chief", 0)


@dataclasses.dataclass(frozen=True)
class Hang:
    """A hung task: `why` for the failure table (``no progress for 63 s``), `how` for the
    launcher's line (what showed it)."""

    task: TaskId
    seconds: float
    how: str
    elsewhere: str | None = None  # the address of a task of another launcher, asked to act

    @property
    def why(self) -> str:
        return f"no progress for {self.seconds:.0f} s"


class HangWatch:
    """Watches the tasks of `plans` for hangs (the module docstring).

    Args:
      plans: the tasks this launcher runs.
      timeout: the hang timeout (its floor, for the chief's closures), seconds.
      metrics: whether the chief writes Prometheus metrics (``--metrics-port``).
      peers: whether launchers of other hosts run the cluster's other tasks (under an
        engine): hangs of tasks elsewhere are relayed to their launchers.
      clock, wall: monotonic and wall clocks (tests pass fakes).
    """

    def __init__(self, plans: Sequence[TaskPlan], *, timeout: float = channel.DEFAULT_HANG_TIMEOUT,
                 metrics: bool = False, peers: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.timeout = timeout
        self._clock, self._wall = clock, wall
        here = {p.task for p in plans}
        cluster = plans[0].tf_config.get("cluster", {}) if plans else {}
        self._addresses = self._cluster_addresses(plans)
        self._relay = None
        self.relay_problem: str | None = None  # why hangs cannot be relayed, if they cannot
        if peers and plans and set(self._addresses) - here:
            mine = [p for p in plans if p.task != _CHIEF]
            port = split_address(mine[0].address)[1] if mine else None
            try:
                self._relay = relay.Relay(relay.cluster_key(cluster), port)
            except OSError as e:
                self.relay_problem = f"UDP port {port}: {e.strerror or e}"
        # With the chief here, every server of the cluster is probed (only those here can be
        # found hung): the chief may block, the GIL held, while TF reconnects to a server
        # that restarts (`update_server_def`), so its reports are judged only while every
        # server answers.
        servers = {p.task: p.address for p in plans if p.task.type in _SERVERS}
        if _CHIEF in here:
            servers.update({t: a for t, a in self._addresses.items() if t.type in _SERVERS})
        self._prober = rpc.Prober(servers, timeout=timeout, clock=clock)
        self._dir = tempfile.mkdtemp(prefix="tfps-health-") if _CHIEF in here else None
        self.metrics_file = (os.path.join(self._dir, "metrics.prom")
                             if self._dir and metrics else None)
        self._report: str | None = None
        self._starts = 0
        self._acted: dict[TaskId, float] = {}  # the hung episode acted on, per worker

    @staticmethod
    def _cluster_addresses(plans: Sequence[TaskPlan]) -> dict:
        cluster = plans[0].tf_config.get("cluster", {}) if plans else {}
        return {TaskId(role, i): a for role, addresses in cluster.items()
                for i, a in enumerate(addresses)}

    def env_for(self, task: TaskId) -> dict:
        """Variables `task` gets at its next start (the chief: where to report)."""
        if task != _CHIEF or self._dir is None:
            return {}
        self._starts += 1
        self._report = os.path.join(self._dir, f"chief-{self._starts}.json")
        env = {channel.HEALTH_FILE_ENV: self._report,
               channel.HANG_TIMEOUT_ENV: f"{self.timeout:g}"}
        if self.metrics_file:
            env[channel.METRICS_FILE_ENV] = self.metrics_file
        return env

    def started(self, task: TaskId) -> None:
        """`task` was (re)started: it is starting again, not hung."""
        if task.type in _SERVERS:
            self._prober.restarted(task)

    def poll(self, running: Callable[[TaskId], bool]) -> list[Hang]:
        """Hangs found now among tasks that are `running`, each once."""
        self._prober.poll()
        hangs = []
        for task in self._prober.answered_at:
            silent = self._prober.silent_for(task)
            if silent > self.timeout and running(task):
                hangs.append(Hang(task, silent, f"no answer to GetStatus for {silent:.0f} s"))
        if self._relay is not None:
            for task_label, seconds in self._relay.poll():
                try:
                    task = TaskId.parse(task_label)
                except ValueError:
                    continue
                if running(task):
                    hangs.append(Hang(task, seconds, f"holds a closure with no completion for "
                                                     f"{seconds:.0f} s, said the chief's launcher"))
        report = channel.read_report(self._report) if self._report else None
        if report is None or not running(_CHIEF):
            return hangs
        settled = self._prober.settled_since()
        if settled is not None and not report.exiting:
            age = self._wall() - max(report.heartbeat, self._wall() - (self._clock() - settled))
            if age > self.timeout:
                hangs.append(Hang(_CHIEF, age, f"no report from its health thread for "
                                               f"{age:.0f} s, every server answering"))
        for hung in report.hung:
            try:
                task = TaskId.parse(hung.task)
            except ValueError:
                continue
            if self._acted.get(task) == hung.since:
                continue
            self._acted[task] = hung.since
            how = f"holds a closure with no completion for {hung.seconds:.0f} s, said the chief"
            elsewhere = None if running(task) else self._addresses.get(task)
            if elsewhere and self._relay is not None:
                self._relay.ask(elsewhere, label(task), hung.seconds)
            hangs.append(Hang(task, hung.seconds, how, elsewhere))
        return hangs

    def replaced_elsewhere(self, running: Callable[[TaskId], bool]) -> list[TaskId]:
        """Tasks of other launchers that a new process now serves (their incarnation changed),
        each once: a ps restarted between two TCP looks still shows here."""
        replaced, self._prober.replaced = self._prober.replaced, []
        return [task for task in replaced if not running(task)]

    def replaced_now(self, running: Callable[[TaskId], bool]) -> list[TaskId]:
        """`replaced_elsewhere`, after asking every ps of other launchers at once: a chief
        that failed because a ps was restarted may exit before the next look, and a ps that
        starts in a second may be back before any TCP look saw it gone."""
        self._prober.check_now([t for t in self._addresses if t.type == "ps"
                                and t in self._prober.incarnation and not running(t)])
        return self.replaced_elsewhere(running)

    def close(self) -> None:
        self._prober.close()
        if self._relay is not None:
            self._relay.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
