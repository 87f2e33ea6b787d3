"""The chief's loop (Orbit's Controller): schedule closures, keep losses current, report,
checkpoint on a cadence, and count steps exactly.

Exact step count: TF's coordinator runs a closure *at least once*; after a worker dies, the
closures it was running run again elsewhere, so a counter advanced inside a closure can count
a closure twice (seen: 4001 steps for 4000). Here the chief counts: each closure's steps are
added once, when its result arrives, and the counter on ps (saved with the checkpoint) is
written from that count before every save.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from typing import Any, Callable

import numpy as np

from tfps import policy
from tfps.progress import ProgressReporter
from tfps.train.options import TrainerOptions, TrainResult

__all__ = ["TrainLoop"]

log = logging.getLogger(__name__)


class TrainLoop:
    """Drives training from the chief.

    Args:
      schedule: ``schedule(num_steps) -> RemoteValue`` of ``(mean loss, τs)``: schedules one
        closure of `num_steps` steps.
      join: waits for every scheduled closure.
      num_workers: workers in the cluster (closures in flight per round).
      options: `TrainerOptions`.
      save: ``save(step)``: writes the step counter and a checkpoint (or does nothing).
      record_values: ``record_values(step, loss, taus) -> {name: value}`` for a record.
      model_dir: where TensorBoard summaries go (None: none).
      on_packing: ``on_packing(steps_per_closure)``, called once the count is chosen.
      maintain: ``(every, fn)``: every `every` steps (at the first closure boundary at or
        after each multiple, the last step included) the loop waits for every closure in
        flight and calls ``fn(step)`` (`DynamicEmbedding` eviction); None for nothing.
    """

    def __init__(self, *, schedule: Callable, join: Callable, num_workers: int,
                 options: TrainerOptions, save: Callable[[int], Any],
                 record_values: Callable, model_dir: str | None,
                 on_packing: Callable[[int], None] = lambda n: None,
                 maintain: tuple[int, Callable[[int], None]] | None = None):
        self._schedule, self._join, self._save = schedule, join, save
        self._maintain = maintain
        self._workers = num_workers
        self._options = options
        self._record_values = record_values
        self._model_dir = model_dir
        self._on_packing = on_packing
        self.measured_packing: int | None = None

    # ------------------------------------------------------------------------ packing
    def measure_packing(self, budget_steps: int) -> tuple[int, int]:
        """Times closures of 1 and 8 steps; returns (steps per closure, steps trained).

        One closure per worker runs at once, so a round's wall time is one closure's latency.
        The measured steps are real training steps (they count); at most `budget_steps`.
        """
        workers = self._workers
        if not policy.calibration_fits(budget_steps, workers):  # too short to measure
            return min(max(1, budget_steps // workers), policy.MAX_STEPS_PER_CLOSURE), 0

        def timed(n):
            start = time.perf_counter()
            remotes = [self._schedule(n) for _ in range(workers)]
            for r in remotes:
                r.fetch()
            return time.perf_counter() - start, n * len(remotes)

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
        opts = self._options
        if opts.closure_steps:
            return opts.closure_steps, 0
        if opts.steps_per_closure:
            return opts.steps_per_closure, 0
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
        opts = self._options
        reporter = ProgressReporter(train_steps, self._model_dir, opts.progress_bar)
        reporter.start(start)
        t0 = time.perf_counter()
        per_closure, used = self._steps_per_closure(start, train_steps)
        self._on_packing(per_closure)
        done = scheduled = start + used  # finished steps; steps scheduled so far
        pending: collections.deque = collections.deque()  # (steps, RemoteValue)
        taus: list[np.ndarray] = []
        last_loss = math.nan
        every_log, every_ckpt = opts.log_every, opts.checkpoint_every
        next_log = (scheduled // every_log + 1) * every_log if every_log else None
        next_ckpt = (scheduled // every_ckpt + 1) * every_ckpt if every_ckpt else None
        every_maint, maintain = self._maintain or (None, None)
        next_maint = (scheduled // every_maint + 1) * every_maint if every_maint else None

        def drain(keep: int):
            nonlocal last_loss, done
            while len(pending) > keep:
                n, remote = pending.popleft()
                loss, tau = remote.fetch()
                done += n
                last_loss = float(loss)
                if opts.staleness_aware:
                    taus.append(np.asarray(tau))

        while scheduled < train_steps:
            n = min(per_closure, train_steps - scheduled)
            scheduled += n
            pending.append((n, self._schedule(n)))
            drain(keep=2 * self._workers)  # bounded look-ahead, losses stay current
            if next_maint is not None and scheduled >= next_maint:  # before records, saves
                drain(keep=0)
                maintain(done)
                next_maint = (done // every_maint + 1) * every_maint
            if next_log is not None and scheduled >= next_log:
                drain(keep=0)
                self._record(reporter, done, last_loss, taus)
                next_log = (done // every_log + 1) * every_log
            if next_ckpt is not None and scheduled >= next_ckpt and scheduled < train_steps:
                drain(keep=0)
                self._save(done)
                next_ckpt = (done // every_ckpt + 1) * every_ckpt
        drain(keep=0)
        self._join()
        elapsed = time.perf_counter() - t0
        if every_log and done > start and done % every_log:
            self._record(reporter, done, last_loss, taus)
        self._save(done)
        reporter.close()
        staleness = np.concatenate(taus) if taus else np.zeros([0], np.int64)
        return TrainResult(step=done, start_step=start, loss=last_loss,
                           steps_per_sec=(done - start) / max(elapsed, 1e-9),
                           steps_per_closure=per_closure, staleness=staleness)

    def _record(self, reporter: ProgressReporter, step: int, loss: float, taus: list) -> None:
        values = {"steps/sec": reporter.rate(step)}
        histograms = {}
        values.update(self._record_values(step, values["steps/sec"], loss))
        if self._options.staleness_aware and taus:
            values["staleness"] = float(np.concatenate(taus[-50:]).mean())
            histograms["staleness"] = np.concatenate(taus)
        reporter.record("train", step, values, histograms)
