"""Hangs, seen from the chief: which worker holds a closure that does not finish.

TF's coordinator re-runs the closures of a worker that *fails*; a worker that stops answering
(SIGSTOP, a frozen VM, a stuck driver) fails nothing, and the job waits at its next join
forever. So the chief watches progress per task:

* **workers**: which closure each worker's thread holds, since when, and how long finished
  closures took (`ClosureTracker`, fed by `tfps._tf.track_closures`);
* **ps tasks**: a GetStatus call to each every second (`tfps.launch.run.rpc.Prober`): a
  stopped process never answers, a busy one does;
* **the chief itself**: every report it writes is a heartbeat.

A worker that holds a closure with no completion for the hang timeout is *hung*, unless a ps
stopped answering meanwhile (then every worker waits on that ps, and the ps is the one to
replace). The timeout (`derive_timeout`): ``max(floor, 10 x`` the slowest recent closure of
the same function``)``, and three times that for a function's first run and a worker's first
closure after a (re)start (TF registers the function there first). The floor is
``tfps-launch --hang-timeout`` (default 30 s).

`ChiefHealth` writes what it finds to the launcher every second
(`tfps.launch.run.channel`); the launcher kills and restarts a hung worker as if it had died
(TF then re-runs its closure elsewhere; the chief's step count stays exact, since it counts
each closure once, when its result arrives) and replaces a hung ps or chief. Nothing here
runs unless the launcher asked for it (`attach`). Pure Python; TF only through `tfps._tf`.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence

from tfps.launch.run import channel, rpc
from tfps.train.loop import LoopObserver

__all__ = ["ChiefHealth", "ClosureTracker", "Progress", "attach", "derive_timeout"]

log = logging.getLogger(__name__)

# Timeout = FACTOR x the slowest recent closure of a function (a closure 10x slower than any
# seen is not a slow closure).
_FACTOR = 10.0
# A function's first run, and a worker's first closure after a (re)start, register the
# function on the worker first: this many timeouts.
_FIRST_FACTOR = 3.0
# Closure times kept per function (the most recent ones).
_KEPT = 200
# A ps that answered within this many seconds is fine; a worker is blamed only then.
_PS_FRESH_S = 3.0
# How often the chief reports (and its heartbeat beats).
_REPORT_EVERY_S = 1.0


def derive_timeout(floor: float, durations: Sequence[float]) -> float:
    """The hang timeout for closures that took `durations` seconds: ``max(floor, 10 x max)``.

    >>> derive_timeout(30.0, [0.2, 0.5]), derive_timeout(30.0, [4.0])
    (30.0, 40.0)
    """
    return max(floor, _FACTOR * max(durations, default=0.0))


class _Held:
    __slots__ = ("key", "name", "since", "wall")

    def __init__(self, key: int, name: str, since: float, wall: float):
        self.key, self.name, self.since, self.wall = key, name, since, wall


class ClosureTracker:
    """Which closure each worker holds, and the times of finished ones. Thread-safe.

    Implements the listener of `tfps._tf.track_closures`: `started` and `ended` are called
    from TF's worker threads.

    Args:
      num_workers: workers in the cluster.
      floor: the hang timeout's floor, seconds.
      clock, wall: monotonic and wall clocks (tests pass fakes).
    """

    def __init__(self, num_workers: int, floor: float = channel.DEFAULT_HANG_TIMEOUT, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.floor = floor
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()
        self._held: dict[int, _Held | None] = {w: None for w in range(num_workers)}
        self._fresh = {w: True for w in range(num_workers)}  # no closure done since (re)start
        self._times: dict[str, collections.deque] = {}
        self._put_back: set[int] = set()
        self.done = collections.Counter()
        self.failed = collections.Counter()
        self.rerun = collections.Counter()
        self.last_done: dict[int, float] = {}  # worker -> wall clock of its latest completion

    def started(self, worker: int, key: int, name: str) -> None:
        with self._lock:
            self._held[worker] = _Held(key, name, self._clock(), self._wall())
            if key in self._put_back:
                self._put_back.discard(key)
                self.rerun[worker] += 1

    def ended(self, worker: int, outcome: str) -> None:
        with self._lock:
            held, self._held[worker] = self._held.get(worker), None
            if outcome == "done":
                self.done[worker] += 1
                self.last_done[worker] = self._wall()
                self._fresh[worker] = False
                if held is not None:
                    times = self._times.setdefault(held.name, collections.deque(maxlen=_KEPT))
                    times.append(self._clock() - held.since)
            else:  # put back (the worker failed: TF waits for it) or failed for good
                self.failed[worker] += 1
                self._fresh[worker] = True
                if outcome == "put_back" and held is not None:
                    self._put_back.add(held.key)

    def timeout(self, name: str | None = None) -> float:
        """The hang timeout of closures of `name` (any function's when None)."""
        with self._lock:
            return self._timeout(name)

    def _timeout(self, name: str | None) -> float:
        if name is None:
            samples = [t for times in self._times.values() for t in times]
        else:
            samples = list(self._times.get(name, ()))
        return derive_timeout(self.floor, samples)

    def hung(self) -> list[channel.HungTask]:
        """Workers holding a closure for longer than its timeout, longest first."""
        now, found = self._clock(), []
        with self._lock:
            for worker, held in self._held.items():
                if held is None:
                    continue
                limit = self._timeout(held.name)
                if self._fresh[worker] or held.name not in self._times:
                    limit *= _FIRST_FACTOR
                if now - held.since > limit:
                    found.append(channel.HungTask(f"worker:{worker}", now - held.since,
                                                  held.wall))
        return sorted(found, key=lambda h: -h.seconds)


class Progress(LoopObserver):
    """The chief's own progress, as its loop reports it: the step, the latest loss, the
    latest record's values, checkpoint times, and the wall clock of the latest progress."""

    def __init__(self, wall: Callable[[], float] = time.time):
        self._wall = wall
        self.step = 0
        self.loss = float("nan")
        self.values: dict = {}
        self.last_progress = wall()
        self.checkpoints = 0
        self.checkpoint_seconds = float("nan")

    def closure_done(self, step: int, steps: int, loss: float) -> None:
        self.step, self.loss, self.last_progress = step, loss, self._wall()

    def recorded(self, step: int, values: dict) -> None:
        self.step, self.values, self.last_progress = step, dict(values), self._wall()

    def saved(self, step: int, seconds: float) -> None:
        self.step, self.last_progress = step, self._wall()
        self.checkpoints += 1
        self.checkpoint_seconds = seconds


class ChiefHealth:
    """The chief's reporter: a daemon thread that probes the ps tasks and, every second,
    writes a `tfps.launch.run.channel.ChiefReport` (and the metrics, when asked).

    Args:
      tracker: the `ClosureTracker` of the coordinator's closures.
      report_path: where the launcher reads reports (None: none written).
      ps: ``{"ps:0": "host:port"}`` of the cluster's ps tasks.
      progress: the chief's `Progress`.
      metrics: a `tfps.train.metrics.Metrics` to write every second, or None.
    """

    def __init__(self, *, tracker: ClosureTracker, report_path: str | None,
                 ps: Mapping[str, str], progress: Progress | None = None, metrics=None):
        self.tracker = tracker
        self.progress = progress or Progress()
        self._path, self._metrics = report_path, metrics
        self.prober = rpc.Prober(ps, timeout=max(tracker.floor, 2.0))
        self._ps = tuple(ps)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tfps-health", daemon=True)
        self._write_failed = False
        self._exiting = False

    def start(self) -> ChiefHealth:
        self._thread.start()
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stops reporting; the last report says the chief is exiting (TF's teardown may then
        block every thread: the launcher does not take that for a hang)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._exiting = True
        self._write()

    def ps_fine(self) -> bool:
        """Every ps answered within the last seconds (or has not started answering yet)."""
        return all(self.prober.silent_for(p) < _PS_FRESH_S for p in self._ps)

    def report(self) -> channel.ChiefReport:
        hung = self.tracker.hung() if self.ps_fine() else []
        return channel.ChiefReport(heartbeat=time.time(), timeout=self.tracker.timeout(),
                                   hung=tuple(hung), step=self.progress.step,
                                   exiting=self._exiting)

    def _run(self) -> None:
        next_report = 0.0
        while not self._stop.is_set():
            self.prober.poll()
            now = time.monotonic()
            if now >= next_report:
                next_report = now + _REPORT_EVERY_S
                self._write()
            self._stop.wait(0.005 if self.prober.busy else 0.1)
        self.prober.close()

    def _write(self) -> None:
        try:
            if self._path:
                report = self.report()
                for h in report.hung:
                    log.warning("tfps: %s holds a closure with no completion for %.0f s",
                                h.task, h.seconds)
                channel.write_atomic(self._path, report.to_json().encode())
            if self._metrics is not None:
                self._metrics.write(self)
        except OSError as e:  # the launcher's directory went away: it is ending the job
            if not self._write_failed:
                self._write_failed = True
                log.warning("tfps: cannot write the health report: %s", e)


def attach(*, loop, coordinator, num_workers: int, traffic: Callable | None = None,
           environ: Mapping[str, str] | None = None):
    """Starts hang tracking and metrics on the chief, as the launcher asked through the
    environment (`tfps.launch.run.channel`); returns the `ChiefHealth`, or None when it
    asked for neither. Called once by the `Trainer`, after its loop is made.

    Args:
      loop: the Trainer's `tfps.train.loop.TrainLoop` (observed: steps, records, saves).
      coordinator: its `ClusterCoordinator` (whose closures are tracked per worker).
      num_workers: workers in the cluster.
      traffic: ``traffic() -> Traffic`` (bytes per step), or None.
    """
    from tfps import _tf

    # A worker TF still reconnects to must not keep the chief from exiting (`_tf.unblock_exit`).
    atexit.register(_tf.unblock_exit, weakref.ref(coordinator))
    env = os.environ if environ is None else environ
    report_path = env.get(channel.HEALTH_FILE_ENV) or None
    metrics_path = env.get(channel.METRICS_FILE_ENV) or None
    if not report_path and not metrics_path:
        return None
    from tfps.cluster import Cluster
    from tfps.launch.run.plan import label
    from tfps.train.metrics import Metrics

    try:
        floor = float(env.get(channel.HANG_TIMEOUT_ENV) or channel.DEFAULT_HANG_TIMEOUT)
    except ValueError:
        floor = channel.DEFAULT_HANG_TIMEOUT
    tracker = ClosureTracker(num_workers, floor)
    _tf.track_closures(coordinator, tracker)
    try:
        cluster = Cluster.from_env()
        ps = {label(task): address for task, address in cluster.tasks() if task.type == "ps"}
    except ValueError:  # no TF_CONFIG: an in-process cluster; nothing to probe
        ps = {}
    progress = Progress()
    loop.observe(progress)
    metrics = None
    if metrics_path:
        metrics = Metrics(metrics_path, num_workers=num_workers, traffic=traffic)
        loop.observe(metrics)
    return ChiefHealth(tracker=tracker, report_path=report_path, ps=ps, progress=progress,
                       metrics=metrics).start()
