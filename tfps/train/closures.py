"""Which closure a training step runs, on which input, and what it moves.

One mode per Trainer (`TrainerOptions`): per-step closures (`tfps.train.steps`), accumulation
or stale reads (`tfps.train.accumulate`), or local steps (`tfps.train.local`). This room picks
the closure, prepares it (the probe that tells embeddings from dense variables, fused buffers,
row caches), owns the per-worker input (stacked by the steps per closure once packing is
known) and counts the traffic of the closure as last traced (`tfps.train.traffic`).
"""

from __future__ import annotations

from typing import Callable

from tfps import _tf
from tfps.errors import ConfigError
from tfps.train import traffic
from tfps.train.accumulate import AccumulationStep
from tfps.train.local import LocalSteps
from tfps.train.options import TrainerOptions
from tfps.train.steps import StepFunctions

tf = _tf.require()

__all__ = ["Closures"]


class Closures:
    """The closures of one Trainer.

    Args:
      coordinator: the ClusterCoordinator.
      steps: the step functions (model, variables, optimizer, staleness).
      options: the Trainer's options.
      dataset_fn: ``dataset_fn(input_context) -> tf.data.Dataset`` of training batches.
    """

    def __init__(self, *, coordinator, steps: StepFunctions, options: TrainerOptions,
                 dataset_fn: Callable):
        self._coordinator, self._steps, self._options = coordinator, steps, options
        self._dataset_fn = dataset_fn
        self._accumulation = AccumulationStep(steps, push_each=options.read_every > 1)
        outer_lr = options.outer_learning_rate or 1.0 / _tf.num_workers(steps.strategy)
        self._local = (LocalSteps(steps, outer_lr, options.outer_momentum)
                       if options.local_steps > 1 else None)
        self._prepared = False
        self._input = None  # tfps.train.steps.Input, made at the first closure
        self._kept: list = []  # replaced inputs, never destroyed (docs/tensorflow-notes.md)
        self.steps_per_closure: int | None = None

    def retrace(self) -> None:
        """Drops every traced closure: the next ones trace anew (a hyperparameter changed)."""
        for fns in (self._steps, self._accumulation, self._local):
            if fns is not None:
                fns.retrace()

    def prepare(self) -> None:
        """Before the first closure: probe the variables, fuse the dense ones, make caches."""
        if self._prepared:
            return
        self._prepared = True
        steps, options = self._steps, self._options
        if options.fuse_dense or self._local is not None:
            steps.probe(self._dataset_fn(tf.distribute.InputContext()).element_spec)
        if options.fuse_dense:
            steps.fuse(steps.dense)
        if self._local is not None:
            self._local.prepare(options.local_steps)

    def use_packing(self, steps_per_closure: int) -> None:
        """Stacks `steps_per_closure` batches per dataset element from now on (one fetch per
        closure), when the options allow and the element shapes are static."""
        self.steps_per_closure = steps_per_closure
        stack = steps_per_closure if (self._options.stack_steps or
                                      self._options.closure_steps) else 1
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
        it, stack = self._input.iterator, self._input.stack
        if self._local is not None:
            fn, args = self._local.fn, (it, num_steps, stack)
        elif self._options.closure_steps:  # accumulation or stale reads
            fn, args = self._accumulation.fn, (it, num_steps, stack)
        else:
            fn, args = self._steps.train_fn, (it, tf.constant(num_steps, tf.int32), stack)
        return self._coordinator.schedule(fn, args=args)

    @property
    def traced_graph(self):
        """The graph of the training closure as last traced (None before the first)."""
        if self._local is not None:
            return self._local.traced_graph
        if self._options.closure_steps:
            return self._accumulation.traced_graph
        return self._steps.traced_graph

    def traffic(self) -> traffic.Traffic:
        """Per-step traffic of the closure as last traced (`tfps.train.traffic`)."""
        k, graph = self._options.closure_steps, self.traced_graph
        if graph is None:
            raise ConfigError("traffic() counts the traced training closure: call train() "
                              "first. Received: no trace yet")
        if self._local is not None:
            return traffic.count(graph, steps=k, trips=k)
        if k:
            return traffic.count(graph, steps=k, trips=k - 1)
        n = self.steps_per_closure or 1
        return traffic.count(graph, steps=n, trips=n)
