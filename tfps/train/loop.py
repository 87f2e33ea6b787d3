"""The chief's loop (Orbit's Controller): schedule closures, keep losses current, report,
run side work at its cadence, checkpoint, and count steps exactly. Pure: no TensorFlow.

The loop drives one object, the `LoopTrainer` (the Trainer's closures and state), and a list
of `Action`s: side work that needs no closure in flight (`DynamicEmbedding` eviction, writing
fused buffers back into the model before a save). It never asks which mode trains.
`LoopObserver`s hear what happened (a closure finished, a record, a checkpoint): metrics and
health tracking. A `stop` check, asked at every closure boundary, ends training early with a
checkpoint (preemption: `tfps.train.preemption`).

Exact step count: TF's coordinator runs a closure *at least once*; after a worker dies, the
closures it was running run again elsewhere, so a counter advanced inside a closure can count
a closure twice (docs/tensorflow-notes.md, "At-least-once closures"). Here the chief counts:
each closure's steps are added once, when its result arrives, and the counter on ps (saved
with the checkpoint) is written from that count before every save.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from tfps import policy
from tfps.train.options import TrainerOptions, TrainResult
from tfps.train.progress import ProgressReporter

__all__ = ["Action", "LoopObserver", "LoopTrainer", "Stopped", "TrainLoop"]

log = logging.getLogger(__name__)

# τs the chief keeps for `TrainResult.staleness` (the most recent ones): a week-long run must
# not grow the chief by one number per update.
_KEPT_TAUS = 100_000


class LoopTrainer(Protocol):
    """What the loop drives.

    Attributes:
      num_workers: workers in the cluster (closures in flight per round).
      closure_steps: steps per closure the mode fixes, or None (the loop measures packing).
      measures_staleness: whether closures return the τ of their updates.
    """

    num_workers: int
    closure_steps: int | None
    measures_staleness: bool

    def schedule(self, num_steps: int) -> tuple[int, Any]:
        """Schedules one closure of at most `num_steps` steps; returns its steps (fewer where
        the input ends an epoch) and a value whose ``fetch()`` gives ``(mean loss, τs)`` once
        it finished."""

    def join(self) -> None:
        """Waits for every scheduled closure."""

    def use_packing(self, steps_per_closure: int) -> None:
        """Called once the steps per closure are chosen, before the closures that use them."""

    def save(self, step: int) -> None:
        """Writes the step counter and a checkpoint (or does nothing without a model_dir)."""

    def record_values(self, step: int, rate: float, loss: float) -> dict:
        """``{name: value}`` for a ``train |`` record besides steps/sec."""


@dataclasses.dataclass(frozen=True)
class Action:
    """Side work the loop runs with no closure in flight, as ``run(step)``.

    Attributes:
      name: what it is, for logs.
      run: the work; `step` is the exact count of finished steps.
      every: steps between runs: at the first closure boundary at or after each multiple
        (None: only `before_save`).
      before_save: also before every checkpoint, the final one included.
    """

    name: str
    run: Callable[[int], None]
    every: int | None = None
    before_save: bool = False


class LoopObserver:
    """Hears what the loop did; every method is optional (this base does nothing)."""

    def closure_done(self, step: int, steps: int, loss: float) -> None:
        """A closure of `steps` steps finished; `step` counts every finished step."""

    def recorded(self, step: int, values: dict) -> None:
        """A ``train |`` record was made with `values`."""

    def saved(self, step: int, seconds: float) -> None:
        """A checkpoint of `step` was written in `seconds`."""


class Stopped(Exception):
    """Training stopped early at a closure boundary, after a checkpoint of `step`."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"training stopped at step {step}: {reason}")
        self.step, self.reason = step, reason


def _next_multiple(step: int, every: int | None) -> int | None:
    return None if not every else (step // every + 1) * every


class TrainLoop:
    """Drives training from the chief.

    Args:
      trainer: the `LoopTrainer`.
      options: `TrainerOptions` (cadences, progress bar).
      model_dir: where TensorBoard summaries go (None: none).
      actions: side work at its cadence and before saves, in order.
      observers: `LoopObserver`s, told of every finished closure, record and checkpoint.
      stop: ``stop() -> reason or None``, asked at every closure boundary: a reason ends
        training there with a checkpoint, and `run` raises `Stopped`.
    """

    def __init__(self, *, trainer: LoopTrainer, options: TrainerOptions,
                 model_dir: str | None, actions: Sequence[Action] = (),
                 observers: Sequence[LoopObserver] = (),
                 stop: Callable[[], str | None] = lambda: None):
        self._trainer = trainer
        self._options = options
        self._model_dir = model_dir
        self._actions = tuple(actions)
        self._observers = list(observers)
        self._stop = stop
        self.measured_packing: int | None = None

    def observe(self, observer: LoopObserver) -> None:
        """Adds an observer (told of what happens from now on)."""
        self._observers.append(observer)

    # ------------------------------------------------------------------------ packing
    def measure_packing(self, budget_steps: int) -> tuple[int, int]:
        """Times closures of 1 and 8 steps; returns (steps per closure, steps trained).

        One closure per worker runs at once, so a round's wall time is one closure's latency.
        The measured steps are real training steps (they count); at most `budget_steps`.
        """
        workers = self._trainer.num_workers
        if not policy.calibration_fits(budget_steps, workers):  # too short to measure
            return min(max(1, budget_steps // workers), policy.MAX_STEPS_PER_CLOSURE), 0

        def timed(n):
            start = time.perf_counter()
            scheduled = [self._trainer.schedule(n) for _ in range(workers)]
            for _, remote in scheduled:
                remote.fetch()
            return time.perf_counter() - start, sum(steps for steps, _ in scheduled)

        small, large = policy.CALIBRATION_STEPS
        used = timed(small)[1]  # the first round traces the closure: not timed
        best = {small: math.inf, large: math.inf}
        for _ in range(policy.CALIBRATION_ROUNDS):
            if used + (small + large) * workers > budget_steps:
                break
            for n in (small, large):
                seconds, done = timed(n)
                best[n], used = min(best[n], seconds), used + done
        per_closure = policy.packing_from_timings(best[small], best[large])
        log.info("tfps: packing: %.2f ms per 1-step closure, %.2f ms per %d-step closure -> "
                 "%d steps/closure", best[small] * 1e3, best[large] * 1e3, large, per_closure)
        return per_closure, used

    def _steps_per_closure(self, step: int, train_steps: int) -> tuple[int, int]:
        fixed = self._trainer.closure_steps
        if fixed:
            return fixed, 0
        if self.measured_packing:
            return self.measured_packing, 0
        if step >= train_steps:
            return 1, 0  # nothing to train: no measurement either
        per_closure, used = self.measure_packing(train_steps - step)
        if used:  # a real measurement: keep it for later calls
            self.measured_packing = per_closure
        return per_closure, used

    # ------------------------------------------------------------------------ the loop
    def run(self, start: int, train_steps: int) -> TrainResult:
        """Trains from step `start` until `train_steps`; checkpoints on the cadence and at
        the end. Returns the `TrainResult` (its `step` counts every finished closure once)."""
        trainer, opts = self._trainer, self._options
        reporter = ProgressReporter(train_steps, self._model_dir, opts.progress_bar)
        reporter.start(start)
        t0 = time.perf_counter()
        per_closure, used = self._steps_per_closure(start, train_steps)
        trainer.use_packing(per_closure)
        done = scheduled = start + used  # finished steps; steps scheduled so far
        pending: collections.deque = collections.deque()  # (steps, remote value)
        taus = _Taus()
        last_loss = math.nan
        next_log = _next_multiple(scheduled, opts.log_every)
        next_ckpt = _next_multiple(scheduled, opts.checkpoint_every)
        next_action = [_next_multiple(scheduled, a.every) for a in self._actions]

        def drain(keep: int):
            nonlocal last_loss, done
            while len(pending) > keep:
                n, remote = pending.popleft()
                loss, tau = remote.fetch()
                done += n
                last_loss = float(loss)
                if trainer.measures_staleness:
                    taus.add(np.asarray(tau))
                for observer in self._observers:
                    observer.closure_done(done, n, last_loss)

        while scheduled < train_steps:
            n, remote = trainer.schedule(min(per_closure, train_steps - scheduled))
            scheduled += n
            pending.append((n, remote))
            drain(keep=2 * trainer.num_workers)  # bounded look-ahead, losses stay current
            for i, action in enumerate(self._actions):  # before records and saves
                if next_action[i] is not None and scheduled >= next_action[i]:
                    drain(keep=0)
                    action.run(done)
                    next_action[i] = _next_multiple(done, action.every)
            if next_log is not None and scheduled >= next_log:
                drain(keep=0)
                self._record(reporter, done, last_loss, taus)
                next_log = _next_multiple(done, opts.log_every)
            if next_ckpt is not None and scheduled >= next_ckpt and scheduled < train_steps:
                drain(keep=0)
                self._save(done)
                next_ckpt = _next_multiple(done, opts.checkpoint_every)
            reason = self._stop()
            if reason:
                drain(keep=0)
                trainer.join()
                self._save(done)
                reporter.close()
                raise Stopped(done, reason)
        drain(keep=0)
        trainer.join()
        elapsed = time.perf_counter() - t0
        if opts.log_every and done > start and done % opts.log_every:
            self._record(reporter, done, last_loss, taus)
        self._save(done)
        reporter.close()
        return TrainResult(step=done, start_step=start, loss=last_loss,
                           steps_per_sec=(done - start) / max(elapsed, 1e-9),
                           steps_per_closure=per_closure, staleness=taus.kept())

    def _save(self, step: int) -> None:
        for action in self._actions:
            if action.before_save:
                action.run(step)
        start = time.perf_counter()
        self._trainer.save(step)
        for observer in self._observers:
            observer.saved(step, time.perf_counter() - start)

    def _record(self, reporter: ProgressReporter, step: int, loss: float,
                taus: _Taus) -> None:
        values = {"steps/sec": reporter.rate(step)}
        histograms = {}
        values.update(self._trainer.record_values(step, values["steps/sec"], loss))
        recent = taus.since_record()
        if recent.size:
            values["staleness"] = float(recent.mean())
            histograms["staleness"] = recent
        reporter.record("train", step, values, histograms)
        for observer in self._observers:
            observer.recorded(step, values)


class _Taus:
    """The τs closures returned: those since the last record (its mean and histogram) and
    the most recent `_KEPT_TAUS` (`TrainResult.staleness`)."""

    def __init__(self):
        self._recent: list[np.ndarray] = []
        self._kept: collections.deque = collections.deque()
        self._kept_size = 0

    def add(self, taus: np.ndarray) -> None:
        taus = taus.reshape(-1)
        self._recent.append(taus)
        self._kept.append(taus)
        self._kept_size += taus.size
        while self._kept_size - self._kept[0].size >= _KEPT_TAUS:
            self._kept_size -= self._kept.popleft().size

    def since_record(self) -> np.ndarray:
        recent = np.concatenate(self._recent) if self._recent else np.zeros([0], np.int64)
        self._recent = []
        return recent

    def kept(self) -> np.ndarray:
        kept = np.concatenate(self._kept) if self._kept else np.zeros([0], np.int64)
        return kept[-_KEPT_TAUS:]
