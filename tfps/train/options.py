"""`TrainerOptions` (the Trainer's settings) and `TrainResult`. Pure: no TensorFlow.

>>> TrainerOptions(steps_per_closure=10).steps_per_closure
10
>>> TrainerOptions(staleness_aware="no")
Traceback (most recent call last):
...
tfps.errors.ConfigError: Argument `staleness_aware` must be True or False. Received: staleness_aware='no'
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfps import policy, validate
from tfps.errors import ConfigError

__all__ = ["TrainerOptions", "TrainResult"]

# Bounds that keep every count meaningful (a closure of 10**9 steps never reports back).
_MAX_STEPS = 10**12


@dataclasses.dataclass(frozen=True)
class TrainerOptions:
    """Settings of `tfps.Trainer`; all have sensible defaults.

    Attributes:
      steps_per_closure: training steps per scheduled closure (packing). None measures the
        scheduling overhead at start and picks the smallest count that keeps it under 5 %
        of a closure (closures capped at about one second; `tfps.policy.packing`).
      accumulate_steps: K > 1 turns on local gradient accumulation: each closure runs K
        micro-batches against one pull of the dense variables and pushes **one** update (the
        mean gradient): one ps round trip instead of K. The effective batch becomes
        K × batch size, and there are K times fewer updates per example: scale the learning
        rate up (linear scaling: × K for SGD) to keep the progress per example.
        Overrides `steps_per_closure` (a closure is K steps; the last one may be shorter,
        so the step count stays exact). The K-1 micro-batches after the first run in a
        `tf.while_loop` (trace time does not grow with K); when the dataset's element shapes
        are static (``batch(..., drop_remainder=True)``), each closure fetches its K
        micro-batches as one stacked element (PSS fetches each element for ~0.35 ms).
      staleness_aware: scale each update's learning rate by 1 / max(1, τ), where τ counts the
        updates other workers applied between this update's read and its write (Zhang et al.,
        IJCAI 2016). τ is measured with a version counter on ps; a histogram goes to
        TensorBoard. The scaling is exact for SGD and momentum; adaptive optimizers (Adam,
        Adagrad) partly normalise it away. With local steps, each push's parameter difference
        is scaled by 1 / (1 + τ), τ the pushes of other workers since its pull: workers
        that raced share the progress (their differences are averaged) instead of adding
        it up; with one worker τ = 0 and nothing changes.
      checkpoint_every: steps between checkpoints (with a ``model_dir``); None: only at the end.
      max_to_keep: checkpoints kept.
      log_every: steps between progress records; 0 disables them.
      progress_bar: ``"auto"`` (only on a terminal), ``"on"``, ``"off"``.
      eval_shards: exactly-once evaluation splits the eval data into this many shards, one
        closure each; None means `tfps.policy.eval_shards` (5 per worker).
      stack_steps: fetch a closure's batches as one stacked dataset element when their shapes
        are static (one ~0.35 ms per-worker fetch per closure instead of per step). Exact.
      dedup_lookups: every embedding lookup gathers each distinct id once and pushes each
        distinct row's gradient once (`tfps.train.params`). Exact.
      fuse_dense: the dense variables of each ps travel as one buffer: one read and one
        update per step instead of one per variable (`tfps.train.params`). Exact; the
        model's variables are written from the buffers at checkpoints, at the end of
        `train` and before `evaluate`.
      read_every: S > 1: bounded-staleness reads (Stale Synchronous Parallel): the dense
        variables are read once every S steps and every step pushes its update; a closure is
        S steps. Changes the arithmetic (each update sees up to S-1 of its own and every other
        worker's updates late); the staleness is measured and reported as for any update.
      local_steps: H > 1: each closure trains H steps on worker-local copies of the dense
        variables, their optimizer slots and the embedding rows the H batches touch, then
        pushes the difference once (local SGD / DiLoCo; `tfps.train.local`). One pull and
        one push per H steps. SGD, Adagrad and Adam. Changes the arithmetic with several
        workers; with one it is the optimizer's own trajectory.
      outer_learning_rate: η, the push's scale for the dense parameters (``w += η Δ``;
        embedding rows are added whole, `tfps.train.local`). None (the default): 1 / the
        number of workers, so that the workers' pushes average their progress as DiLoCo's
        synchronous average does (with one worker: 1, the local progress as is). With η = 1
        and several workers, pushes that start from one pull add the same progress twice: a
        model that converges within H steps overshoots (tests/integration/test_trainer.py).
      outer_momentum: μ of a Nesterov momentum on the pushed differences (DiLoCo); 0: none.
    """

    steps_per_closure: int | None = None
    accumulate_steps: int = 1
    staleness_aware: bool = False
    checkpoint_every: int | None = 1000
    max_to_keep: int = 3
    log_every: int = 100
    progress_bar: str = "auto"
    eval_shards: int | None = None
    stack_steps: bool = True
    dedup_lookups: bool = True
    fuse_dense: bool = True
    read_every: int = 1
    local_steps: int = 1
    outer_learning_rate: float | None = None
    outer_momentum: float = 0.0

    def __post_init__(self):
        validate.integer("steps_per_closure", self.steps_per_closure, low=1,
                         high=policy.MAX_STEPS_PER_CLOSURE * 100, allow_none=True)
        validate.integer("accumulate_steps", self.accumulate_steps, low=1, high=1 << 20)
        validate.boolean("staleness_aware", self.staleness_aware)
        validate.integer("checkpoint_every", self.checkpoint_every, low=1, high=_MAX_STEPS,
                         allow_none=True)
        validate.integer("max_to_keep", self.max_to_keep, low=1, high=10_000)
        validate.integer("log_every", self.log_every, low=0, high=_MAX_STEPS)
        validate.choice("progress_bar", self.progress_bar, ("auto", "on", "off"))
        validate.integer("eval_shards", self.eval_shards, low=1, high=1 << 20, allow_none=True)
        for name in ("stack_steps", "dedup_lookups", "fuse_dense"):
            validate.boolean(name, getattr(self, name))
        validate.integer("read_every", self.read_every, low=1, high=10_000)
        validate.integer("local_steps", self.local_steps, low=1, high=1 << 20)
        validate.number("outer_learning_rate", self.outer_learning_rate, low=0, low_open=True,
                        high=10, allow_none=True)
        validate.number("outer_momentum", self.outer_momentum, low=0, high=0.999)
        modes = {name: getattr(self, name) for name in ("accumulate_steps", "read_every",
                                                         "local_steps") if getattr(self, name) > 1}
        if len(modes) > 1:
            raise ConfigError("Arguments `accumulate_steps`, `read_every` and `local_steps` are "
                              "different modes: set at most one above 1. Received: " +
                              ", ".join(f"{k}={v}" for k, v in modes.items()))

    @property
    def closure_steps(self) -> int | None:
        """Steps per closure a mode fixes (accumulation, stale reads, local steps), or None."""
        k = max(self.accumulate_steps, self.read_every, self.local_steps)
        return k if k > 1 else None


@dataclasses.dataclass
class TrainResult:
    """What `Trainer.train` returns.

    Attributes:
      step: the step training ended at (exact: every finished closure counted once).
      start_step: the step it started from (a restored checkpoint's, or 0).
      loss: the mean loss of the last closure that finished.
      steps_per_sec: (step - start_step) / wall seconds of this call.
      steps_per_closure: steps per scheduled closure used.
      staleness: τ of every update measured (``staleness_aware`` only), a NumPy array.
    """

    step: int
    start_step: int
    loss: float
    steps_per_sec: float
    steps_per_closure: int
    staleness: Any
