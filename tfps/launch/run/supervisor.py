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
launcher then ends the cluster and exits with that code. A SIGTERM repeated
within `_REPEAT_WINDOW_S` counts as one: Slurm sends two at a time limit, back to back, and
the tasks would otherwise lose their grace period (the time to save).

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
import threading
import time
from typing import Sequence

from tfps import exit_codes
from tfps.cluster import TaskId
from tfps.errors import TfpsError
from tfps.launch.run.failures import (EXIT_FAILED, Death, Failure, decide, describe_exit,
                                  failure_table)
from tfps.launch.run import namespaces, peers
from tfps.launch.run.logs import Output
from tfps.launch.run.plan import Fault, TaskPlan, label

__all__ = ["Supervisor"]

# How often the launcher looks at its tasks (and at signals and due faults), in seconds.
_POLL_S = 0.1
# How long to look for other deaths when the chief exits with an error (see _loop).
_SETTLE_S = 0.5
# After SIGKILL a process is gone at once unless stuck in the kernel; don't wait forever.
_KILL_WAIT_S = 5.0
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A SIGTERM this soon after the first is the same request (Slurm's pair at a time limit).
_REPEAT_WINDOW_S = 2.0


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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
    """

    def __init__(self, plans: Sequence[TaskPlan], output: Output, *, max_restarts: int = 3,
                 grace_period: float = 5.0, faults: Sequence[Fault] = (),
                 early_signals: Sequence[int] | None = None,
                 watch_peers: bool | None = None):
        order = {"ps": 0, "worker": 1, "chief": 2, "evaluator": 3}
        self._tasks = sorted((_Task(p) for p in plans),
                             key=lambda t: (order[t.plan.task.type], t.plan.task.index))
        self._by_id = {t.plan.task: t for t in self._tasks}
        self._out = output
        self._max_restarts = max_restarts
        self._grace = grace_period
        self._faults = sorted(faults, key=lambda f: f.at)
        self._restarts = 0
        self._failures: list[Failure] = []
        self._t0 = time.monotonic()
        self._stop_signal: int | None = None
        self._usr1 = 0  # SIGUSR1s not yet passed to the chief
        self._stopping = False
        self._force = False
        self._force_reported = False
        self._early = early_signals if early_signals is not None else []
        self._child_setup = namespaces.death_signal_setup()
        self._first_term: float | None = None
        self._repeats = 0
        self._final: int | None = None  # the chief's outcome, once decided for good
        self._waiting: tuple[list[_Task], float] | None = None  # restart after a lost ps
        self._ps_watch, self._chief_watch, self._beacon = peers.watches(
            plans, peers.engine_launched() if watch_peers is None else watch_peers)

    # ------------------------------------------------------------------------------- public
    def run(self) -> int:
        """Runs the cluster to its end; returns the launcher's exit code."""
        saved = self._install_signal_handlers()
        if self._early and self._stop_signal is None:
            self._stop_signal = self._early[0]
        code = EXIT_FAILED
        try:
            self._t0 = time.monotonic()
            for task in self._tasks:
                if self._stop_signal is not None:
                    break
                self._start(task)
            code = self._loop()
        finally:
            self._stopping = True
            self._end(self._tasks)
            self._announce()
            self._restore_signal_handlers(saved)
            self._out.drain()  # task output first, then the summary
            if self._failures:
                self._out.event(failure_table(self._failures))
            if self._restarts and code == 0:
                self._out.event(f"done after {self._restarts} restart"
                                f"{'s' if self._restarts != 1 else ''}")
            self._out.close()
        return code

    # ------------------------------------------------------------------------------ signals
    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        saved = {sig: signal.signal(sig, self._on_signal) for sig in _HANDLED_SIGNALS}
        saved[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._on_usr1)
        return saved

    def _on_usr1(self, signum, frame) -> None:
        self._usr1 += 1  # the main loop passes it on

    def _pass_usr1(self) -> None:
        """Passes a SIGUSR1 the launcher got to the chief (a preemption notice)."""
        self._usr1, chief = 0, self._by_id.get(TaskId("chief", 0))
        if chief is None or not chief.running:
            return self._out.event("got SIGUSR1: no chief runs here; ignored")
        self._out.event(f"got SIGUSR1: passing it to {chief.label} (checkpoint, then exit "
                        f"{exit_codes.PREEMPTED} to be requeued)")
        with contextlib.suppress(ProcessLookupError):
            os.kill(chief.proc.pid, signal.SIGUSR1)

    @staticmethod
    def _restore_signal_handlers(saved: dict) -> None:
        for sig, handler in saved.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:
        # Only flags here: the main loop (which polls every _POLL_S) acts and prints.
        now = time.monotonic()
        if signum == signal.SIGTERM:
            if self._first_term is not None and now - self._first_term < _REPEAT_WINDOW_S:
                self._repeats += 1
                return
            self._first_term = now
        if self._stop_signal is not None or self._stopping:
            self._force = True
        else:
            self._stop_signal = signum

    def _announce(self) -> None:
        """Tells the other launchers that the chief is done (`tfps.launch.run.peers`)."""
        if self._repeats:
            self._out.log_only(f"SIGTERM repeated {self._repeats}x within "
                               f"{_REPEAT_WINDOW_S:g}s of the first: counted as one")
        if self._beacon is None or self._final is None or self._force:
            return
        port, others = self._beacon
        try:
            acked = peers.announce(port, self._final, others,
                                   stop=lambda: self._stop_signal is not None or self._force)
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
            task.proc = subprocess.Popen(
                task.plan.command, env={**os.environ, **task.plan.env},
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=self._child_setup)
        except OSError as e:
            log.close()
            raise TfpsError(f"cannot start {task.label} ({' '.join(task.plan.command)}): "
                            f"{e.strerror or e}") from None
        task.running = True
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
        while not self._force and time.monotonic() < deadline:
            if all(t.proc.poll() is not None for t in live):
                break
            self._out.poll(_POLL_S)
        if self._force and not self._force_reported:
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
        self._final = code if self._stop_signal is None else None
        return code

    def _watch(self) -> int:
        while True:
            if self._stop_signal is not None:
                name = signal.Signals(self._stop_signal).name
                self._out.event(f"got {name}; ending the cluster")
                return 128 + self._stop_signal
            self._fire_faults()
            if self._usr1:
                self._pass_usr1()
            code = self._watch_peers()
            if code is not None:
                return code
            deaths = self._collect_deaths()
            if any(d.task.type == "chief" and d.returncode > 0 for d in deaths):
                # A chief failing because a ps died may exit just before the launcher sees
                # that ps dead; look again so the ps, not the chief, is the root cause.
                self._out.wait(_SETTLE_S)
                deaths += self._collect_deaths()
                if self._ps_watch is not None:
                    self._ps_watch.check_now()
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
            return EXIT_FAILED
        return None

    def _collect_deaths(self) -> list[Death]:
        deaths = []
        for task in self._tasks:
            if task.running and task.proc.poll() is not None:
                self._reap(task)
                deaths.append(Death(task.plan.task, task.proc.returncode))
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

    def _handle(self, deaths: list[Death]) -> int | None:
        """Acts on tasks found dead; returns the exit code when the launcher is done."""
        lost = self._ps_watch.lost() if self._ps_watch is not None else ()
        decision = decide(deaths, chief_here=TaskId("chief", 0) in self._by_id, lost=lost)
        elapsed = self._elapsed()
        restarting = decision.action == "restart" and self._restarts < self._max_restarts
        for d in decision.failures:
            here = self._by_id.get(d.task)
            self._failures.append(Failure(d.task, here.proc.pid if here else None,
                                          d.returncode, elapsed, restarted=restarting))
        if decision.action == "continue":
            for d in deaths:
                self._out.event(f"{label(d.task)} finished ({describe_exit(d.returncode)})")
            return None
        if decision.action == "finish":
            self._out.event(f"chief exited with code {decision.code}; ending the cluster")
            return decision.code
        died = ", ".join(f"{label(d.task)} became unreachable ({self._ps_watch.why(d.task)})"
                         if d.returncode is None else
                         f"{label(d.task)} died ({describe_exit(d.returncode)})"
                         for d in decision.failures)
        if not restarting:
            why = ("restarts are disabled (--max-restarts 0)" if self._max_restarts == 0
                   else f"restart budget spent ({self._restarts}/{self._max_restarts})")
            self._out.event(f"{died}; {why}; ending the cluster")
            return EXIT_FAILED
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
            if self._stop_signal is not None:  # asked to stop meanwhile: the loop ends all
                break
            self._start(task)
        return None
