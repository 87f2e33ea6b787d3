"""Spawning and supervising task processes: lifecycle, restarts, signals, no orphans.

Every task runs in its own session (``start_new_session=True``), so its process group id is its
pid and everything it starts is ended with it (``killpg``), never by name. Each task also gets
``PR_SET_PDEATHSIG=SIGKILL``: if the launcher itself is killed with SIGKILL (the one signal it
cannot handle), the kernel kills its tasks; and the launcher runs its tasks in a PID namespace
of their own where it may (`tfps.launch.run.namespaces.PidNamespace`), so that the kernel then
kills their descendants too.

Ending tasks: SIGTERM to each process group, up to ``grace_period`` seconds, then SIGKILL. SIGINT,
SIGTERM and SIGHUP to the launcher end the whole cluster that way and the launcher exits
``128 + signal``; a second one during that shutdown sends SIGKILL at once. SIGUSR1 (a
preemption notice: Slurm's ``--signal=B:USR1@N``) is passed to the chief, which checkpoints at
the next closure boundary and exits `tfps.exit_codes.PREEMPTED` (`tfps.train.preemption`); the
launcher then ends the cluster and exits with that code (`tfps.launch.run.signals`: a SIGTERM
repeated within 2 s counts as one).

A task that hangs is killed and then treated as dead (`tfps.launch.run.hangs`); with
``metrics``, the chief's metrics are served (`tfps.launch.run.metrics_http`).

What a death means and what is restarted is decided by `tfps.launch.run.failures.decide`. With one
task per launcher under an engine, the launchers also watch each other (`tfps.launch.run.peers`):
the chief's launcher restarts the chief after a lost ps and tells the others when the chief is
done; the others end their task then.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence

from tfps import exit_codes
from tfps.cluster import TaskId
from tfps.errors import TfpsError
from tfps.launch.run import channel, failures, hangs, namespaces, peers, signals
from tfps.launch.run.logs import Output
from tfps.launch.run.metrics_http import MetricsServer
from tfps.launch.run.plan import Fault, TaskPlan, label

__all__ = ["Supervisor"]

# How often the launcher looks at its tasks (and at signals and due faults), in seconds.
_POLL_S = 0.1
# How long to look for other deaths when the chief exits with an error (`_watch`).
_SETTLE_S = 0.5
# After SIGKILL a process is gone at once unless stuck in the kernel; don't wait forever.
_KILL_WAIT_S = 5.0


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _and_join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class _Task:
    """One task's current process (replaced on restart)."""

    def __init__(self, plan: TaskPlan):
        self.plan = plan
        self.proc: subprocess.Popen | None = None
        self.running = False  # started and not yet reaped by the launcher

    @property
    def label(self) -> str:
        return self.plan.label


class Supervisor:
    """Starts `plans`, watches them, restarts per the failure rule, and ends them all.

    Args:
      plans: the tasks this launcher runs (from `tfps.launch.run.plan.plan_tasks`).
      output: where launcher lines and task output go (`tfps.launch.run.logs.Output`).
      max_restarts: restart events allowed in total; 0 ends the cluster at the first failure.
      grace_period: seconds between SIGTERM and SIGKILL when ending a task.
      faults: ``--inject-fault`` entries (SIGKILL a task at a time after start).
      early_signals: signals the launcher got before the supervisor existed (the entry
        point records them); the cluster is then ended before any task starts.
      watch_peers: whether launchers of the same cluster watch each other (the module
        docstring); None: when this launcher runs some but not all of the cluster's tasks
        and an engine described them (`tfps.launch.run.peers.engine_launched`).
      hang_timeout: seconds without progress after which a task is hung (``--hang-timeout``).
      metrics: a listening socket to serve the chief's metrics on (``--metrics-port``).
    """

    def __init__(self, plans: Sequence[TaskPlan], output: Output, *, max_restarts: int = 3,
                 grace_period: float = 5.0, faults: Sequence[Fault] = (),
                 early_signals: Sequence[int] | None = None,
                 watch_peers: bool | None = None,
                 hang_timeout: float = channel.DEFAULT_HANG_TIMEOUT, metrics=None):
        order = dict(dispatcher=-2, data_worker=-1, ps=0, worker=1, chief=2, evaluator=3)
        self._tasks = sorted((_Task(p) for p in plans),
                             key=lambda t: (order[t.plan.task.type], t.plan.task.index))
        self._by_id = {t.plan.task: t for t in self._tasks}
        self._out = output
        self._max_restarts = max_restarts
        self._grace = grace_period
        self._faults = sorted(faults, key=lambda f: f.at)
        self._restarts = 0
        self._failures: list[failures.Failure] = []
        self._t0 = time.monotonic()
        self._signals = signals.Signals(early_signals or ())
        self._force_reported = False
        self._child_setup = namespaces.death_signal_setup()
        self._final: int | None = None  # the chief's outcome, once decided for good
        self._waiting: tuple[list[_Task], float] | None = None  # restart after a lost ps
        engine = peers.engine_launched() if watch_peers is None else watch_peers
        self._ps_watch, self._chief_watch, self._beacon = peers.watches(plans, engine)
        self._hangs = hangs.HangWatch(plans, timeout=hang_timeout, metrics=metrics is not None,
                                      peers=engine)
        self._metrics = None if metrics is None else MetricsServer(metrics,
                                                                   self._hangs.metrics_file)

    # ------------------------------------------------------------------------------- public
    def run(self) -> int:
        """Runs the cluster to its end; returns the launcher's exit code."""
        self._signals.install()
        code = exit_codes.FAILED
        if self._hangs.relay_problem:
            self._out.log_only(f"hangs of this task found by the chief cannot reach this "
                               f"launcher ({self._hangs.relay_problem})")
        try:
            self._t0 = time.monotonic()
            for task in self._tasks:
                if self._signals.stop is not None:
                    break
                self._start(task)
            code = self._loop()
        finally:
            self._signals.stopping = True
            self._end(self._tasks)
            self._announce()
            self._hangs.close()
            if self._metrics is not None:
                self._metrics.close()
            self._signals.restore()
            self._out.drain()  # task output first, then the summary
            if self._failures:
                self._out.event(failures.failure_table(self._failures))
            if self._restarts and code == 0:
                self._out.event(f"done after {self._restarts} restart"
                                f"{'s' if self._restarts != 1 else ''}")
            self._out.close()
        return code

    # ------------------------------------------------------------------------------ signals
    def _pass_usr1(self) -> None:
        """Passes a SIGUSR1 the launcher got to the chief (a preemption notice)."""
        self._signals.usr1, chief = 0, self._by_id.get(TaskId("chief", 0))
        if chief is None or not chief.running:
            return self._out.event("got SIGUSR1: no chief runs here; ignored")
        self._out.event(f"got SIGUSR1: passing it to {chief.label} (checkpoint, then exit "
                        f"{exit_codes.PREEMPTED} to be requeued)")
        with contextlib.suppress(ProcessLookupError):
            os.kill(chief.proc.pid, signal.SIGUSR1)

    def _announce(self) -> None:
        """Tells the other launchers that the chief is done (`tfps.launch.run.peers`)."""
        if self._signals.repeats:
            self._out.log_only(f"SIGTERM repeated {self._signals.repeats}x within "
                               f"{signals.REPEAT_WINDOW_S:g}s of the first: counted as one")
        if self._beacon is None or self._final is None or self._signals.force:
            return
        port, others = self._beacon
        try:
            acked = peers.announce(port, self._final, others,
                                   stop=lambda: (self._signals.stop is not None
                                                 or self._signals.force))
        except OSError as e:
            self._out.event(f"cannot tell the other tasks that the chief is done (port {port}: "
                            f"{e.strerror or e}); they run until the engine ends them")
            return
        missing = [t for t in others if t not in acked]
        self._out.log_only(f"told the other tasks on port {port} that the chief is done"
                           + (f"; no answer from {', '.join(missing)}" if missing else ""))

    # -------------------------------------------------------------------------- processes
    def _elapsed(self) -> float:
        return time.monotonic() - self._t0

    def _start(self, task: _Task) -> None:
        if task.plan.task.type == "chief" and self._ps_watch is not None:
            self._ps_watch.reset()
        restart = task.proc is not None
        header = f"restart {self._restarts}/{self._max_restarts}" if restart else None
        log = self._out.open_task_log(task.label, header)
        try:
            env = {**os.environ, **task.plan.env, **self._hangs.env_for(task.plan.task)}
            task.proc = subprocess.Popen(
                task.plan.command, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=self._child_setup)
        except OSError as e:
            log.close()
            raise TfpsError(f"cannot start {task.label} ({' '.join(task.plan.command)}): "
                            f"{e.strerror or e}") from None
        task.running = True
        self._hangs.started(task.plan.task)
        self._out.pump(task.proc.stdout, task.label, log)
        note = f" ({header})" if restart else ""
        self._out.event(f"started {task.label} pid={task.proc.pid} "
                        f"addr={task.plan.address}{note}")

    def _end(self, tasks: Sequence[_Task]) -> None:
        """Ends `tasks`: SIGTERM to each group, wait up to the grace period, then SIGKILL."""
        live = [t for t in tasks if t.running]
        for t in live:
            _killpg(t.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        while not self._signals.force and time.monotonic() < deadline:
            if all(t.proc.poll() is not None for t in live):
                break
            self._out.poll(_POLL_S)
        if self._signals.force and not self._force_reported:
            self._force_reported = True
            self._out.event("second signal: killing every task now (SIGKILL)")
        for t in live:
            # Also the leader's stragglers: anything left in its process group.
            _killpg(t.proc.pid, signal.SIGKILL)
        for t in live:
            try:
                t.proc.wait(_KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                self._out.event(f"{t.label} pid={t.proc.pid} did not die after SIGKILL")
            t.running = False

    def _reap(self, task: _Task) -> None:
        task.running = False
        _killpg(task.proc.pid, signal.SIGKILL)  # its group may outlive the leader

    # ------------------------------------------------------------------------------- loop
    def _loop(self) -> int:
        code = self._watch()
        self._final = code if self._signals.stop is None else None
        return code

    def _watch(self) -> int:
        while True:
            if self._signals.stop is not None:
                name = signal.Signals(self._signals.stop).name
                self._out.event(f"got {name}; ending the cluster")
                return 128 + self._signals.stop
            self._fire_faults()
            if self._signals.usr1:
                self._pass_usr1()
            code = self._watch_peers()
            if code is not None:
                return code
            if self._metrics is not None:
                self._metrics.serve()
            deaths = self._collect_deaths() + self._kill_hung()
            if any(d.task.type == "chief" and d.returncode > 0 for d in deaths):
                # A chief failing because a ps died may exit just before the launcher sees
                # that ps dead; look again so the ps, not the chief, is the root cause.
                self._out.wait(_SETTLE_S)
                deaths += self._collect_deaths()
                if self._ps_watch is not None:
                    self._ps_watch.check_now()
                    for task in self._hangs.replaced_now(self._running):
                        self._ps_watch.mark_lost(task, "restarted: a new process answers")
            if deaths:
                code = self._handle(deaths)
                if code is not None:
                    return code
            if not any(t.running for t in self._tasks) and self._waiting is None:
                return 0  # e.g. only an evaluator, which finished
            self._out.poll(_POLL_S)

    def _watch_peers(self) -> int | None:
        """Polls the other launchers; returns the exit code when this launcher is done."""
        if self._chief_watch is not None:
            chief_code = self._chief_watch.poll()
            if chief_code is not None:
                names = _and_join([t.label for t in self._tasks if t.running] or ["nothing"])
                self._out.event(f"chief finished (exit code {chief_code}, said its launcher at "
                                f"{self._chief_watch.address}); ending {names}")
                return 0
        if self._ps_watch is None:
            return None
        self._ps_watch.poll()
        if self._waiting is None:
            return None
        tasks, deadline = self._waiting
        down = self._ps_watch.down()
        if not down:
            self._waiting = None
            for task in tasks:
                self._start(task)
        elif time.monotonic() > deadline:
            self._out.event(f"{_and_join([label(t) for t in down])} did not come back within "
                            f"{peers.PS_RETURN_S:g}s; ending the cluster")
            return failures.EXIT_GAVE_UP
        return None

    def _running(self, task: TaskId) -> bool:  # here and now
        return task in self._by_id and self._by_id[task].running

    def _collect_deaths(self) -> list[failures.Death]:
        deaths = []
        for task in self._tasks:
            if task.running and task.proc.poll() is not None:
                self._reap(task)
                deaths.append(failures.Death(task.plan.task, task.proc.returncode))
        return deaths

    def _kill_hung(self) -> list[failures.Death]:
        """Kills the tasks here found hung; returns them as deaths (`tfps.launch.run.hangs`)."""
        deaths, running = [], self._running
        for task in self._hangs.replaced_elsewhere(running):
            if self._ps_watch is not None:
                self._ps_watch.mark_lost(task, "restarted: a new process answers")
        for hang in self._hangs.poll(running):
            task = self._by_id.get(hang.task)
            if hang.elsewhere:
                self._out.event(f"{label(hang.task)} hung ({hang.how}); asked its launcher at "
                                f"{hang.elsewhere} to restart it")
            if task is None or not task.running:
                continue
            self._out.log_only(f"{task.label} pid={task.proc.pid} hung: {hang.how}; killing it")
            chief = self._by_id.get(TaskId("chief", 0))
            # A hung ps: the chief restarts with it (failures.decide); killed first, it does
            # not print the traceback of the ps's death.
            gone = [chief, task] if task.plan.task.type == "ps" and chief and chief.running \
                else [task]
            for t in gone:
                _killpg(t.proc.pid, signal.SIGKILL)  # a stopped process dies of it too
                with contextlib.suppress(subprocess.TimeoutExpired):
                    t.proc.wait(_KILL_WAIT_S)
                self._reap(t)
            deaths.append(failures.Death(hang.task, task.proc.returncode, hung=hang.why))
        return deaths

    def _fire_faults(self) -> None:
        while self._faults and self._faults[0].at <= self._elapsed():
            fault = self._faults.pop(0)
            task = self._by_id[fault.task]
            if not task.running:
                self._out.event(f"fault {fault}: {task.label} is not running; skipped")
                continue
            self._out.event(f"injecting fault {fault}: SIGKILL to {task.label} "
                            f"pid={task.proc.pid}")
            _killpg(task.proc.pid, signal.SIGKILL)

    def _handle(self, deaths: list[failures.Death]) -> int | None:
        """Acts on tasks found dead; returns the exit code when the launcher is done."""
        lost = self._ps_watch.lost() if self._ps_watch is not None else ()
        decision = failures.decide(deaths, chief_here=TaskId("chief", 0) in self._by_id, lost=lost)
        elapsed = self._elapsed()
        restarting = decision.action == "restart" and self._restarts < self._max_restarts
        for d in decision.failures:
            here = self._by_id.get(d.task)
            self._failures.append(failures.Failure(d.task, here.proc.pid if here else None,
                                          d.returncode, elapsed, restarted=restarting,
                                          hung=d.hung))
        if decision.action == "continue":
            for d in deaths:
                how = failures.describe_exit(d.returncode)
                self._out.event(f"{label(d.task)} finished ({how})")
            return None
        if decision.action == "finish":
            self._out.event(f"chief exited with code {decision.code}; ending the cluster")
            return decision.code
        died = ", ".join(f"{label(d.task)} became unreachable ({self._ps_watch.why(d.task)})"
                         if d.returncode is None and not d.hung else
                         f"{label(d.task)} {'hung' if d.hung else 'died'} "
                         f"({d.hung or failures.describe_exit(d.returncode)})"
                         for d in decision.failures)
        if not restarting:
            why = ("restarts are disabled (--max-restarts 0)" if self._max_restarts == 0
                   else f"restart budget spent ({self._restarts}/{self._max_restarts})")
            self._out.event(f"{died}; {why}; ending the cluster")
            return failures.EXIT_GAVE_UP
        self._restarts += 1
        names = _and_join([label(t) for t in decision.restart])
        tasks = [self._by_id[t] for t in decision.restart]
        if decision.wait_for:
            # The lost ps's own launcher restarts it; the chief needs it listening first.
            verb = "listens" if len(decision.wait_for) == 1 else "listen"
            self._out.event(f"{died}; restarting {names} once "
                            f"{_and_join([label(t) for t in decision.wait_for])} {verb} "
                            f"again (restart {self._restarts}/{self._max_restarts})")
            self._waiting = (tasks, time.monotonic() + peers.PS_RETURN_S)
            return None
        self._out.event(f"{died}; restarting {names} "
                        f"(restart {self._restarts}/{self._max_restarts})")
        self._end([t for t in tasks if t.running])  # the chief, after a ps died
        for task in tasks:
            if self._signals.stop is not None:  # asked to stop meanwhile: the loop ends all
                break
            self._start(task)
        return None
