"""The closures of one Trainer: the mode's closure, chosen once, and the per-worker input.

Each mode of `tfps.train.modes` has one implementation of `ModeClosure` (the per-step closure
of `tfps.train.steps`, accumulation and stale reads of `tfps.train.accumulate`, local steps of
`tfps.train.local`); `Closures` picks it from the mode's type when the Trainer is made and
never branches on the mode again. It prepares the closure (the probe that tells embeddings
from dense variables, fused buffers), owns the per-worker input (stacked by the steps per
closure once packing is known) and counts the traffic of the closure as last traced
(`tfps.train.traffic`).
"""

from __future__ import annotations

from typing import Callable, Protocol

from tfps import _tf
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
      fn: the `tf.function` scheduled on a worker; ``fn(*args(iterator, n, stack))`` trains
        `n` steps and returns ``(mean loss, τs)``.
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

    def args(self, iterator, num_steps: int, stack: int) -> tuple:
        """The arguments of `fn` for a closure of `num_steps` steps."""

    def shape(self, num_steps: int) -> tuple[int, int]:
        """``(steps, loop trips)`` of a closure of `num_steps` steps (`traffic.count`)."""


# The one place a mode's type meets its implementation.
_IMPLEMENTATIONS: dict[type, Callable[..., ModeClosure]] = {
    PerStep: lambda steps, mode, workers: PerStepClosure(steps),
    Accumulate: lambda steps, mode, workers: AccumulationClosure(steps),
    StaleReads: lambda steps, mode, workers: StaleReadsClosure(steps),
    LocalSteps: lambda steps, mode, workers: LocalStepsClosure(
        steps, mode.steps, mode.outer_rate(workers), mode.outer_momentum),
}


def closure_for(mode: Mode, steps: StepFunctions, num_workers: int) -> ModeClosure:
    """The implementation of `mode` over `steps`."""
    return _IMPLEMENTATIONS[type(mode)](steps, mode, num_workers)


class Closures:
    """The closures of one Trainer.

    Args:
      coordinator: the ClusterCoordinator.
      steps: the step functions (model, variables, optimizer, staleness).
      options: the Trainer's options.
      dataset_fn: ``dataset_fn(input_context) -> tf.data.Dataset`` of training batches.
      num_workers: workers in the cluster.
    """

    def __init__(self, *, coordinator, steps: StepFunctions, options: TrainerOptions,
                 dataset_fn: Callable, num_workers: int):
        self._coordinator, self._steps, self._options = coordinator, steps, options
        self._dataset_fn = dataset_fn
        self.mode_closure = closure_for(options.mode, steps, num_workers)
        self._prepared = False
        self._input = None  # tfps.train.steps.Input, made at the first closure
        self._kept: list = []  # replaced inputs, never destroyed (docs/tensorflow-notes.md)
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
            steps.probe(self._dataset_fn(tf.distribute.InputContext()).element_spec)
        if options.fuse_dense:
            steps.fuse(steps.dense)
        self.mode_closure.prepare()

    def use_packing(self, steps_per_closure: int) -> None:
        """Stacks `steps_per_closure` batches per dataset element from now on (one fetch per
        closure), when the options allow and the element shapes are static."""
        self.steps_per_closure = steps_per_closure
        stack = steps_per_closure if self._options.stack_steps else 1
        if self._input is not None and self._input.requested == stack:
            return
        if self._input is not None:
            self._kept.append(self._input)
        self._input = self._steps.per_worker_input(self._coordinator, self._dataset_fn, stack)
        self._input.requested = stack

    def schedule(self, num_steps: int):
        """Schedules one closure of `num_steps` steps; returns its RemoteValue."""
        if self._input is None:  # the packing measurement: one batch per element
            self.use_packing(1)
            self.steps_per_closure = None
        args = self.mode_closure.args(self._input.iterator, num_steps, self._input.stack)
        return self._coordinator.schedule(self.mode_closure.fn, args=args)

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
