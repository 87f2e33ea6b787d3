"""`TrainerOptions` (the Trainer's settings) and `TrainResult`. Pure: no TensorFlow.

The training mode is one object (`tfps.train.modes`); the other settings apply in every mode.
For brevity the mode can also be given by the keywords earlier versions took
(``local_steps=100`` is ``mode=LocalSteps(100)``); they are resolved once, here, into `mode`,
and a keyword that contradicts the mode, or means nothing in it, is an error naming both:

>>> TrainerOptions(local_steps=100).mode
LocalSteps(steps=100, outer_learning_rate=None, outer_momentum=0.0, transfer_dtype='float32')
>>> TrainerOptions(steps_per_closure=10).mode
PerStep(steps_per_closure=10)
>>> TrainerOptions(mode=LocalSteps(100), steps_per_closure=10)
Traceback (most recent call last):
...
tfps.errors.ConfigError: Arguments `steps_per_closure` and `mode` do not go together: LocalSteps(100) fixes a closure at 100 steps. Received: steps_per_closure=10, mode=LocalSteps(steps=100, outer_learning_rate=None, outer_momentum=0.0, transfer_dtype='float32')
>>> TrainerOptions(outer_learning_rate=0.5)
Traceback (most recent call last):
...
tfps.errors.ConfigError: Argument `outer_learning_rate` applies to local steps only (`local_steps` > 1 or `mode`=LocalSteps(...)). Received: outer_learning_rate=0.5, mode=PerStep(steps_per_closure=None)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfps import policy, validate
from tfps.errors import ConfigError
from tfps.train.modes import Accumulate, LocalSteps, Mode, PerStep, StaleReads

__all__ = ["TrainerOptions", "TrainResult"]

# Bounds that keep every count meaningful (a checkpoint every 10**15 steps never comes).
_MAX_STEPS = 10**12
# The shorthand keyword of each mode other than per step (1 or None: not this mode).
_SHORTHAND = {"accumulate_steps": Accumulate, "read_every": StaleReads,
              "local_steps": LocalSteps}


@dataclasses.dataclass(frozen=True, init=False)
class TrainerOptions:
    """Settings of `tfps.Trainer`; all have sensible defaults.

    Attributes:
      mode: how each closure trains (`tfps.train.modes`): `PerStep()` (the default),
        `Accumulate(k)`, `StaleReads(every)` or `LocalSteps(h, outer_learning_rate=...,
        outer_momentum=...)`.
      staleness_aware: scale each update's learning rate by 1 / max(1, τ), where τ counts the
        updates other workers applied between this update's read and its write (Zhang et al.,
        IJCAI 2016), measured with a version counter on ps (a histogram goes to TensorBoard).
        Exact for SGD and momentum; Adam and Adagrad partly normalise it away. With local
        steps, each push's difference is scaled by 1 / (1 + τ), τ the pushes of other workers
        since its pull. Default: on for local steps with several workers (their unscaled
        pushes can leave a model that converges within h steps off its optimum), off
        otherwise; see `staleness_for` (docs/performance.md, "Local steps and stale
        pushes").
      checkpoint_every: steps between checkpoints (with a ``model_dir``); None: only at the end.
      max_to_keep: checkpoints kept.
      log_every: steps between progress records; 0 disables them.
      progress_bar: ``"auto"`` (only on a terminal), ``"on"``, ``"off"``.
      eval_shards: exactly-once evaluation splits the eval data into this many shards, one
        closure each; None means `tfps.policy.eval_shards` (5 per worker).
      stack_steps: fetch a closure's batches as one stacked dataset element when their shapes
        are static (one per-worker fetch per closure instead of one per step). Exact.
      dedup_lookups: every embedding lookup gathers each distinct id once and pushes each
        distinct row's gradient once (`tfps.train.params`). Exact.
      fuse_dense: the dense variables of each ps travel as one buffer: one read and one
        update per step instead of one per variable (`tfps.train.params`). Exact; the model's
        variables are written from the buffers at checkpoints, at the end of `train` and
        before `evaluate`.

    Shorthand keywords (resolved into `mode`, never stored): ``steps_per_closure=n``
    (`PerStep(n)`), ``accumulate_steps=k`` (`Accumulate(k)`), ``read_every=s``
    (`StaleReads(s)`), ``local_steps=h`` (`LocalSteps(h)`, with ``outer_learning_rate`` and
    ``outer_momentum``). A value of 1 (or None) means "not this mode".
    """

    mode: Mode
    staleness_aware: bool | None
    checkpoint_every: int | None
    max_to_keep: int
    log_every: int
    progress_bar: str
    eval_shards: int | None
    stack_steps: bool
    dedup_lookups: bool
    fuse_dense: bool

    def __init__(self, *, mode: Mode | None = None, staleness_aware: bool | None = None,
                 checkpoint_every: int | None = 1000, max_to_keep: int = 3,
                 log_every: int = 100, progress_bar: str = "auto",
                 eval_shards: int | None = None, stack_steps: bool = True,
                 dedup_lookups: bool = True, fuse_dense: bool = True,
                 steps_per_closure: int | None = None, accumulate_steps: int | None = None,
                 read_every: int | None = None, local_steps: int | None = None,
                 outer_learning_rate: float | None = None,
                 outer_momentum: float | None = None):
        values = dict(mode=_resolve_mode(mode, steps_per_closure, accumulate_steps,
                                         read_every, local_steps, outer_learning_rate,
                                         outer_momentum),
                      staleness_aware=staleness_aware, checkpoint_every=checkpoint_every,
                      max_to_keep=max_to_keep, log_every=log_every, progress_bar=progress_bar,
                      eval_shards=eval_shards, stack_steps=stack_steps,
                      dedup_lookups=dedup_lookups, fuse_dense=fuse_dense)
        for name, value in values.items():
            object.__setattr__(self, name, value)
        if staleness_aware is not None:
            validate.boolean("staleness_aware", staleness_aware)
        validate.integer("checkpoint_every", checkpoint_every, low=1, high=_MAX_STEPS,
                         allow_none=True)
        validate.integer("max_to_keep", max_to_keep, low=1, high=10_000)
        validate.integer("log_every", log_every, low=0, high=_MAX_STEPS)
        validate.choice("progress_bar", progress_bar, ("auto", "on", "off"))
        validate.integer("eval_shards", eval_shards, low=1, high=1 << 20, allow_none=True)
        for name in ("stack_steps", "dedup_lookups", "fuse_dense"):
            validate.boolean(name, values[name])

    def staleness_for(self, num_workers: int) -> bool:
        """Whether updates are scaled by their staleness on a cluster of `num_workers`:
        `staleness_aware` when set; unset, on for local steps with several workers."""
        if self.staleness_aware is not None:
            return self.staleness_aware
        return isinstance(self.mode, LocalSteps) and num_workers > 1


def _resolve_mode(mode, steps_per_closure, accumulate_steps, read_every, local_steps,
                  outer_learning_rate, outer_momentum) -> Mode:
    """The one mode the arguments describe; `ConfigError` naming both of two that clash."""
    if mode is not None and not isinstance(mode, Mode):
        what = "a mode class, not an instance" if isinstance(mode, type) else "not a mode"
        raise ConfigError(f"Argument `mode` must be PerStep(), Accumulate(k), StaleReads(s) "
                          f"or LocalSteps(h) ({what}). Received: mode={validate.describe(mode)}")
    validate.integer("steps_per_closure", steps_per_closure, low=1,
                     high=policy.MAX_STEPS_PER_CLOSURE * 100, allow_none=True)
    given = {}
    for name, value in zip(_SHORTHAND, (accumulate_steps, read_every, local_steps)):
        validate.integer(name, value, low=1, high=1 << 20, allow_none=True)
        if value is not None and value > 1:
            given[name] = value
    if len(given) > 1:
        raise ConfigError("Arguments " + " and ".join(f"`{k}`" for k in given) + " are "
                          "different modes: set at most one above 1. Received: " +
                          ", ".join(f"{k}={v}" for k, v in given.items()))
    if given and mode is not None:
        (name, value), = given.items()
        raise ConfigError(f"Arguments `mode` and `{name}` both choose the mode: give one. "
                          f"Received: mode={mode!r}, {name}={value}")
    outer = {k: v for k, v in (("outer_learning_rate", outer_learning_rate),
                               ("outer_momentum", outer_momentum)) if v is not None}
    if given:
        (name, value), = given.items()
        kind = _SHORTHAND[name]
        mode = kind(value, **outer) if kind is LocalSteps else kind(value)
        if kind is not LocalSteps:
            outer_name = next(iter(outer), None)
            if outer_name:
                raise _outer_error(outer_name, outer[outer_name], mode)
    elif outer:
        outer_name = next(iter(outer))
        if isinstance(mode, LocalSteps):
            raise ConfigError(f"Arguments `{outer_name}` and `mode` both set the outer "
                              f"optimizer: give it to LocalSteps(...). Received: "
                              f"{outer_name}={outer[outer_name]!r}, mode={mode!r}")
        raise _outer_error(outer_name, outer[outer_name], mode or PerStep())
    mode = mode or PerStep(steps_per_closure)
    if steps_per_closure is not None and mode != PerStep(steps_per_closure):
        why = (f"{type(mode).__name__}({mode.closure_steps}) fixes a closure at "
               f"{mode.closure_steps} steps" if not isinstance(mode, PerStep) else
               "PerStep(...) sets it already")
        raise ConfigError(f"Arguments `steps_per_closure` and `mode` do not go together: "
                          f"{why}. Received: steps_per_closure={steps_per_closure}, "
                          f"mode={mode!r}")
    return mode


def _outer_error(name: str, value, mode: Mode) -> ConfigError:
    return ConfigError(f"Argument `{name}` applies to local steps only (`local_steps` > 1 or "
                       f"`mode`=LocalSteps(...)). Received: {name}={value!r}, mode={mode!r}")


@dataclasses.dataclass
class TrainResult:
    """What `Trainer.train` returns.

    Attributes:
      step: the step training ended at (exact: every finished closure counted once).
      start_step: the step it started from (a restored checkpoint's, or 0).
      loss: the mean loss of the last closure that finished.
      steps_per_sec: (step - start_step) / wall seconds of this call.
      steps_per_closure: steps per scheduled closure used.
      staleness: τ of every update measured (with staleness scaling on), a NumPy array.
    """

    step: int
    start_step: int
    loss: float
    steps_per_sec: float
    steps_per_closure: int
    staleness: Any
