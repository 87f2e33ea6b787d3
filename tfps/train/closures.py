"""The closures of one Trainer: the mode's closure, chosen once, and the per-worker input.

Each mode of `tfps.train.modes` has one implementation of `ModeClosure` (the per-step closure
of `tfps.train.steps`, accumulation and stale reads of `tfps.train.accumulate`, local steps of
`tfps.train.local`); `Closures` picks it from the mode's type when the Trainer is made and
never branches on the mode again. It prepares the closure (the probe that tells embeddings
from dense variables, fused buffers), asks the input (`tfps.data.feed.ClosureInput`) for each
closure's feed, tells it when the closure's result arrived, and counts the traffic of the
closure as last traced (`tfps.train.traffic`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tfps import _tf
from tfps.data.feed import ClosureInput, Feed
from tfps.errors import ConfigError
from tfps.train import traffic
from tfps.train.accumulate import AccumulationClosure, StaleReadsClosure
from tfps.train.local import LocalStepsClosure
from tfps.train.modes import Accumulate, LocalSteps, Mode, PerStep, StaleReads
from tfps.train.options import TrainerOptions
from tfps.train.steps import PerStepClosure, StepFunctions

tf = _tf.require()

__all__ = ["Closures", "ModeClosure"]


class ModeClosure(Protocol):
    """What every mode's closure implements.

    Attributes:
      fn: the `tf.function` scheduled on a worker; ``fn(*args(feed.args, n))`` trains `n`
        steps on the batches of `feed` and returns ``(mean loss, τs)``.
      traced_graph: the FuncGraph of its last trace (None before the first).
      needs_probe: whether it must know, before its first trace, which variables are dense
        and how many ids a batch looks up (`StepFunctions.probe`).
    """

    fn: Callable
    traced_graph: object
    needs_probe: bool

    def prepare(self) -> None:
        """Creates what the closure needs on the cluster (after the probe, before a trace)."""

    def retrace(self) -> None:
        """Drops the traced function: the next closure traces anew."""

    def args(self, feed_args: tuple, num_steps: int) -> tuple:
        """The arguments of `fn` for a closure of `num_steps` steps on `feed_args`."""

    def shape(self, num_steps: int) -> tuple[int, int]:
        """``(steps, loop trips)`` of a closure of `num_steps` steps (`traffic.count`)."""


# The one place a mode's type meets its implementation.
_IMPLEMENTATIONS: dict[type, Callable[..., ModeClosure]] = {
    PerStep: lambda steps, data, mode, workers: PerStepClosure(steps, data),
    Accumulate: lambda steps, data, mode, workers: AccumulationClosure(steps, data),
    StaleReads: lambda steps, data, mode, workers: StaleReadsClosure(steps, data),
    LocalSteps: lambda steps, data, mode, workers: LocalStepsClosure(
        steps, data, mode.steps, mode.outer_rate(workers), mode.outer_momentum,
        mode.transfer_dtype),
}


def closure_for(mode: Mode, steps: StepFunctions, data: ClosureInput,
                num_workers: int) -> ModeClosure:
    """The implementation of `mode` over `steps`, reading `data`."""
    return _IMPLEMENTATIONS[type(mode)](steps, data, mode, num_workers)


class Closures:
    """The closures of one Trainer.

    Args:
      coordinator: the ClusterCoordinator.
      steps: the step functions (model, variables, optimizer, staleness).
      options: the Trainer's options.
      data: the closures' input (`tfps.data.feed.ClosureInput`).
      num_workers: workers in the cluster.
    """

    def __init__(self, *, coordinator, steps: StepFunctions, options: TrainerOptions,
                 data: ClosureInput, num_workers: int):
        self._coordinator, self._steps, self._options = coordinator, steps, options
        self.data = data
        self.mode_closure = closure_for(options.mode, steps, data, num_workers)
        self._prepared = False
        self._started = False
        self.steps_per_closure: int | None = None

    def retrace(self) -> None:
        """Drops every traced closure: the next ones trace anew (a hyperparameter changed)."""
        self.mode_closure.retrace()

    def prepare(self) -> None:
        """Before the first closure: probe the variables, fuse the dense ones, make caches."""
        if self._prepared:
            return
        self._prepared = True
        steps, options = self._steps, self._options
        if options.fuse_dense or self.mode_closure.needs_probe:
            steps.probe(self.data.element_spec)
        if options.fuse_dense:
            steps.fuse(steps.dense)
        self.mode_closure.prepare()

    def use_packing(self, steps_per_closure: int) -> None:
        """Closures hold `steps_per_closure` steps from now on (the input may stack their
        batches into one element)."""
        self.steps_per_closure = steps_per_closure
        self._started = True
        self.data.start(self._coordinator, self._steps.strategy, steps_per_closure)

    def schedule(self, num_steps: int) -> tuple[int, Scheduled]:
        """Schedules one closure of at most `num_steps` steps (fewer where the input ends an
        epoch); returns its steps and its `Scheduled` result."""
        if not self._started:  # the packing measurement: one batch per element
            self.data.start(self._coordinator, self._steps.strategy, 1)
            self._started = True
        feed = self.data.feed(num_steps)
        remote = self._coordinator.schedule(
            self.mode_closure.fn, args=self.mode_closure.args(feed.args, feed.steps))
        return feed.steps, Scheduled(remote, feed, self.data)

    @property
    def traced_graph(self):
        """The graph of the training closure as last traced (None before the first)."""
        return self.mode_closure.traced_graph

    def traffic(self) -> traffic.Traffic:
        """Per-step traffic of the closure as last traced (`tfps.train.traffic`)."""
        graph = self.traced_graph
        if graph is None:
            raise ConfigError("traffic() counts the traced training closure: call train() "
                              "first. Received: no trace yet")
        steps, trips = self.mode_closure.shape(self.steps_per_closure or 1)
        return traffic.count(graph, steps=steps, trips=trips)


class Scheduled:
    """A scheduled closure: ``fetch()`` waits for its ``(mean loss, τs)``; the first fetch that
    succeeds tells the input the closure finished (its ledger counts it once)."""

    def __init__(self, remote, feed: Feed, data: ClosureInput):
        self._remote, self._feed, self._data = remote, feed, data
        self._told = False

    def fetch(self):
        result = self._remote.fetch()
        if not self._told:
            self._told = True
            self._data.finished(self._feed)
        return result
