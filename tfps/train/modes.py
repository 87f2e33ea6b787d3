"""How a Trainer trains: one mode, a frozen dataclass that validates itself. Pure: no TensorFlow.

A mode decides what one scheduled closure does on its worker and how many steps it holds;
the Trainer's loop (`tfps.train.loop`) never asks which mode is set. The closures that
implement each mode live beside it (`tfps.train.closures` picks one, once).

| mode | a closure | pulls / pushes per step | arithmetic |
|---|---|---|---|
| `PerStep` (default) | `steps_per_closure` steps (None: measured) | 1 / 1 | the optimizer's |
| `Accumulate(k)` | k micro-batches, one update of their mean gradient | 1/k / 1/k | batch × k |
| `StaleReads(every)` | `every` steps, dense reads once | 1/every / 1 | stale by < every |
| `LocalSteps(h)` | h steps on worker-local copies, one push of the difference | 1/h / 1/h | local SGD |

Options that mean something in one mode only are fields of that mode, so a combination that
makes no sense cannot be written:

>>> LocalSteps(100, outer_momentum=0.9).closure_steps
100
>>> PerStep(steps_per_closure=10).closure_steps
10
>>> Accumulate(1)
Traceback (most recent call last):
...
tfps.errors.ConfigError: Argument `Accumulate.steps` must be an integer in [2, 1048576]. Received: Accumulate.steps=1
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from tfps import policy, validate

__all__ = ["Accumulate", "LocalSteps", "Mode", "PerStep", "StaleReads"]

# Most steps one closure of a mode may hold: a closure that never reports back is useless.
_MAX_CLOSURE_STEPS = 1 << 20
# Widest push scale and momentum of the outer optimizer of local steps (DiLoCo's are <= 1).
_MAX_OUTER_LR = 10.0
_MAX_OUTER_MOMENTUM = 0.999


@dataclasses.dataclass(frozen=True)
class Mode:
    """What every mode tells the Trainer.

    Attributes (class-level):
      exact: the arithmetic is the optimizer's own, step by step, with one worker.
      reads_every_step: every step reads and updates the model's variables on their ps
        (what `DynamicEmbedding` rows need).
    """

    exact: ClassVar[bool] = True
    reads_every_step: ClassVar[bool] = True

    @property
    def closure_steps(self) -> int | None:
        """Steps per closure this mode fixes, or None (the loop's packing decides)."""
        raise NotImplementedError

    def describe(self) -> str:
        """``local_steps=100``: the mode as records and benchmark rows name it."""
        raise NotImplementedError


def _steps(owner: str, field: str, value, low: int) -> None:
    validate.integer(f"{owner}.{field}", value, low=low, high=_MAX_CLOSURE_STEPS)


@dataclasses.dataclass(frozen=True)
class PerStep(Mode):
    """Every step pulls what it reads and pushes its update (the default; exact).

    Args:
      steps_per_closure: steps per scheduled closure. None measures the scheduling overhead at
        start and picks the smallest count that keeps it under 5 % of a closure
        (`tfps.policy.packing`).
    """

    steps_per_closure: int | None = None

    def __post_init__(self):
        validate.integer("PerStep.steps_per_closure", self.steps_per_closure, low=1,
                         high=policy.MAX_STEPS_PER_CLOSURE * 100, allow_none=True)

    @property
    def closure_steps(self) -> int | None:
        return self.steps_per_closure

    def describe(self) -> str:
        return "per step" if self.steps_per_closure is None else \
            f"per step, {self.steps_per_closure} per closure"


@dataclasses.dataclass(frozen=True)
class Accumulate(Mode):
    """k micro-batches against one pull of the dense variables, one push of their mean
    gradient: one ps round trip per k micro-batches.

    The effective batch is k × the batch size, with k times fewer updates per example: scale
    the learning rate (× k for SGD) to keep the progress per example. A closure is k steps
    (the last may be shorter, so the step count stays exact).

    Args:
      steps: k, micro-batches per update (>= 2).
    """

    steps: int
    reads_every_step: ClassVar[bool] = False
    exact: ClassVar[bool] = False

    def __post_init__(self):
        _steps("Accumulate", "steps", self.steps, 2)

    @property
    def closure_steps(self) -> int:
        return self.steps

    def describe(self) -> str:
        return f"accumulate_steps={self.steps}"


@dataclasses.dataclass(frozen=True)
class StaleReads(Mode):
    """Bounded-staleness reads (Stale Synchronous Parallel, Ho et al., NIPS 2013): the dense
    variables are read once every `every` steps and every step pushes its update.

    Each update sees up to `every` - 1 of its own and every other worker's updates late; the
    staleness is measured and reported as for any update.

    Args:
      every: steps per read of the dense variables (>= 2); a closure is that many steps.
    """

    every: int
    reads_every_step: ClassVar[bool] = False
    exact: ClassVar[bool] = False

    def __post_init__(self):
        _steps("StaleReads", "every", self.every, 2)

    @property
    def closure_steps(self) -> int:
        return self.every

    def describe(self) -> str:
        return f"read_every={self.every}"


@dataclasses.dataclass(frozen=True)
class LocalSteps(Mode):
    """h steps on worker-local copies of the dense variables, their optimizer slots and the
    embedding rows the h batches touch, then one push of the difference (local SGD; DiLoCo,
    Douillard et al. 2023). One pull and one push per h steps.

    With one worker this is the optimizer's own trajectory. With several, each push moves the
    dense parameters by ``outer_learning_rate`` × its difference (through a Nesterov momentum
    with ``outer_momentum``); rows are added whole (`tfps.train.local`).

    Args:
      steps: h, local steps per closure (>= 1; 1 is per-step training through local copies).
      outer_learning_rate: η of the push, ``w += η Δ``. None: 1 / the number of workers, so
        the workers' pushes together move the parameters by the mean of their progress.
      outer_momentum: μ of a Nesterov momentum on the pushed differences (0: none).
      transfer_dtype: the type pulls and pushes travel in between worker and ps:
        ``"float32"`` (exact) or ``"bfloat16"`` (half the bytes; values rounded to 8
        significant bits on the way, the ps keeps its float32 values and adds the rounded
        differences).
    """

    steps: int
    outer_learning_rate: float | None = None
    outer_momentum: float = 0.0
    transfer_dtype: str = "float32"
    reads_every_step: ClassVar[bool] = False
    exact: ClassVar[bool] = False

    def __post_init__(self):
        _steps("LocalSteps", "steps", self.steps, 1)
        validate.number("LocalSteps.outer_learning_rate", self.outer_learning_rate, low=0,
                        low_open=True, high=_MAX_OUTER_LR, allow_none=True)
        validate.number("LocalSteps.outer_momentum", self.outer_momentum, low=0,
                        high=_MAX_OUTER_MOMENTUM)
        validate.choice("LocalSteps.transfer_dtype", self.transfer_dtype,
                        ("float32", "bfloat16"))

    @property
    def closure_steps(self) -> int:
        return self.steps

    def outer_rate(self, num_workers: int) -> float:
        """η for a cluster of `num_workers` workers (the default: 1 / workers)."""
        if self.outer_learning_rate is not None:
            return float(self.outer_learning_rate)
        return 1.0 / max(1, num_workers)

    def describe(self) -> str:
        return f"local_steps={self.steps}" + (
            f", {self.transfer_dtype} transfers" if self.transfer_dtype != "float32" else "")


MODES = (PerStep, Accumulate, StaleReads, LocalSteps)
