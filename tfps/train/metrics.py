"""Live health as Prometheus metrics (``tfps-launch --metrics-port PORT``). No TensorFlow.

The chief renders its metrics with ``prometheus_client`` into the file the launcher named
(`tfps.launch.run.channel.METRICS_FILE_ENV`) every second; the launcher serves that file at
``http://127.0.0.1:PORT/metrics`` on its own host, also when the tasks run in a private
network namespace (`tfps.launch.run.metrics_http`). What is exported:

=============================================  =================================================
``tfps_steps_total``                            finished steps (the exact count, restored included)
``tfps_steps_per_second``                       at the latest ``train |`` record
``tfps_examples_per_second``                    idem, with the Trainer's ``batch_size``
``tfps_loss``, ``tfps_learning_rate``           the latest loss and base learning rate
``tfps_worker_closures_done_total{worker}``     closures a worker finished
``tfps_worker_closures_failed_total{worker}``   closures a worker let go (it failed or hung)
``tfps_worker_closures_rerun_total{worker}``    closures a worker ran again after another failed
``tfps_last_progress_timestamp_seconds{task}``  chief: a closure's result or a record; worker: a
                                                closure done; ps: a GetStatus answer
``tfps_ps_round_trip_seconds{task}``            the latest GetStatus round trip to a ps
``tfps_hang_timeout_seconds``                   the hang timeout now (`tfps.train.health`)
``tfps_bytes_per_step``                         parameter bytes to and from ps per step
``tfps_checkpoint_seconds``, ``..._total``      the latest save's duration; saves so far
``tfps_dynamic_embedding_rows``                 DynamicEmbedding rows, all tables
``tfps_dynamic_embedding_admitted_total``       rows admitted since the chief started
``tfps_dynamic_embedding_evicted_total``        rows evicted since the chief started
=============================================  =================================================

TensorBoard summaries are written as before; these are for a scraper (and ``curl``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from tfps.launch.run import channel
from tfps.train.loop import LoopObserver

__all__ = ["Metrics"]

log = logging.getLogger(__name__)

_GAUGES = (("steps/sec", "tfps_steps_per_second", "Steps per second at the latest record."),
           ("examples/sec", "tfps_examples_per_second",
            "Examples per second at the latest record."),
           ("lr", "tfps_learning_rate", "The optimizer's base learning rate."))


class Metrics(LoopObserver):
    """Collects what the loop reports and renders everything as Prometheus text.

    Args:
      path: the file the chief writes the text to (the launcher serves it).
      num_workers: workers in the cluster (each gets its closure counters, zeros included).
      traffic: ``traffic() -> Traffic`` for bytes per step (asked once, after the first
        record, on the loop's thread), or None.
    """

    def __init__(self, path: str, *, num_workers: int, traffic: Callable | None = None):
        self.path = path
        self._workers = num_workers
        self._traffic = traffic
        self.bytes_per_step: float | None = None
        self.admitted = 0
        self.evicted = 0
        self.rows: int | None = None
        self._health = None

    def recorded(self, step: int, values: dict) -> None:
        if self._traffic is not None and self.bytes_per_step is None:
            try:
                self.bytes_per_step = float(self._traffic().bytes)
            except Exception as e:  # noqa: BLE001 - counting a graph must not stop training
                log.info("tfps: no bytes per step for the metrics: %s", e)
                self.bytes_per_step = math.nan
        if "rows" in values:
            self.rows = int(values["rows"])
            self.admitted += int(values.get("admitted", 0))
            self.evicted += int(values.get("evicted", 0))

    # ------------------------------------------------------------------ rendering
    def render(self, health) -> bytes:
        """The Prometheus text of everything `health` (a `tfps.train.health.ChiefHealth`)
        and this observer know."""
        self._health = health
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry)

    def write(self, health) -> None:
        channel.write_atomic(self.path, self.render(health))

    def collect(self):
        """The metric families (prometheus_client's collector protocol)."""
        health = self._health
        progress, tracker = health.progress, health.tracker
        steps = CounterMetricFamily("tfps_steps", "Finished training steps (exact).")
        steps.add_metric([], progress.step)
        yield steps
        for key, name, doc in _GAUGES:
            if key in progress.values:
                yield GaugeMetricFamily(name, doc, value=float(progress.values[key]))
        yield GaugeMetricFamily("tfps_loss", "The latest training loss.", value=progress.loss)
        for attribute, what in (("done", "finished"), ("failed", "let go (failed or hung)"),
                                ("rerun", "ran again after another worker failed")):
            family = CounterMetricFamily(f"tfps_worker_closures_{attribute}",
                                         f"Closures a worker {what}.", labels=["worker"])
            counts = getattr(tracker, attribute)
            for worker in range(self._workers):
                family.add_metric([str(worker)], counts[worker])
            yield family
        yield self._last_progress(health)
        trips = GaugeMetricFamily("tfps_ps_round_trip_seconds",
                                  "The latest GetStatus round trip to a ps task.",
                                  labels=["task"])
        for task, seconds in sorted(health.prober.round_trip.items()):
            trips.add_metric([task], seconds)
        yield trips
        yield GaugeMetricFamily("tfps_hang_timeout_seconds", "The hang timeout now.",
                                value=tracker.timeout())
        if self.bytes_per_step is not None:
            yield GaugeMetricFamily("tfps_bytes_per_step",
                                    "Parameter bytes between workers and ps per step.",
                                    value=self.bytes_per_step)
        yield GaugeMetricFamily("tfps_checkpoint_seconds", "The latest checkpoint's save time.",
                                value=progress.checkpoint_seconds)
        saves = CounterMetricFamily("tfps_checkpoints", "Checkpoints written.")
        saves.add_metric([], progress.checkpoints)
        yield saves
        if self.rows is not None:
            yield GaugeMetricFamily("tfps_dynamic_embedding_rows",
                                    "DynamicEmbedding rows, all tables.", value=self.rows)
            for name, value in (("admitted", self.admitted), ("evicted", self.evicted)):
                family = CounterMetricFamily(f"tfps_dynamic_embedding_{name}",
                                             f"DynamicEmbedding rows {name}.")
                family.add_metric([], value)
                yield family

    def _last_progress(self, health) -> GaugeMetricFamily:
        family = GaugeMetricFamily("tfps_last_progress_timestamp_seconds",
                                   "Wall clock of each task's latest progress.",
                                   labels=["task"])
        family.add_metric(["chief"], health.progress.last_progress)
        for worker, wall in sorted(health.tracker.last_done.items()):
            family.add_metric([f"worker:{worker}"], wall)
        # The prober's clock is monotonic: its answers, moved to the wall clock.
        offset = time.time() - time.monotonic()
        for task, answered in sorted(health.prober.answered_at.items()):
            family.add_metric([task], answered + offset)
        return family
