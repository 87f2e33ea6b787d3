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
        Adagrad) partly normalise it away.
      checkpoint_every: steps between checkpoints (with a ``model_dir``); None: only at the end.
      max_to_keep: checkpoints kept.
      log_every: steps between progress records; 0 disables them.
      progress_bar: ``"auto"`` (only on a terminal), ``"on"``, ``"off"``.
      eval_shards: exactly-once evaluation splits the eval data into this many shards, one
        closure each; None means `tfps.policy.eval_shards` (5 per worker).
    """

    steps_per_closure: int | None = None
    accumulate_steps: int = 1
    staleness_aware: bool = False
    checkpoint_every: int | None = 1000
    max_to_keep: int = 3
    log_every: int = 100
    progress_bar: str = "auto"
    eval_shards: int | None = None

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
