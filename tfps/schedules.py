"""Learning-rate schedules by name, with linear warm-up and the linear scaling rule.

`get` returns a `Schedule`: a pure function of the training step that both Keras optimizers
accept, tf_keras ones (what `Model.fit` under ParameterServerStrategy uses) and Keras 3 ones,
and that `tfps.Trainer` can call directly. The decays themselves are Keras's own
(``tf_keras.optimizers.schedules``); tfps adds only what Keras lacks: a linear warm-up in
front of any schedule, the inverse-square-root decay, a constant, and scaling by the number of
workers. A learning rate computed from the step costs no RPC; one kept in a variable on a ps
task becomes a hotspot (docs/tensorflow-notes.md, "Optimizer hyperparameters as variables").

>>> from tfps import schedules
>>> lr = schedules.get("cosine", initial_learning_rate=0.1, decay_steps=1000, warmup_steps=100)
>>> [round(float(lr(s)), 4) for s in (0, 50, 100, 600, 1100, 5000)]
[0.0, 0.05, 0.1, 0.05, 0.0, 0.0]
>>> schedules.get(lr.get_config()).get_config() == lr.get_config()
True
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any, Mapping

import tensorflow as tf
import tf_keras

from tfps import validate
from tfps.errors import ConfigError

__all__ = ["MAX_RATE", "MAX_STEPS", "NAMES", "Schedule", "get"]

# name -> (required arguments, optional arguments with their defaults). The defaults are those
# of the Keras schedule of the same kind, so `get_config` is complete and explicit.
_SPECS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "constant": (("initial_learning_rate",), {}),
    "exponential": (("initial_learning_rate", "decay_steps", "decay_rate"),
                    {"staircase": False}),
    "piecewise": (("boundaries", "values"), {}),
    "polynomial": (("initial_learning_rate", "decay_steps"),
                   {"end_learning_rate": 0.0001, "power": 1.0, "cycle": False}),
    "cosine": (("initial_learning_rate", "decay_steps"), {"alpha": 0.0}),
    # decay_steps=None means "the same as warmup_steps" (the Transformer schedule).
    "inverse_sqrt": (("initial_learning_rate",), {"decay_steps": None}),
}
NAMES = tuple(_SPECS)
# Arguments every schedule accepts.
_COMMON = {"warmup_steps": 0, "num_workers": 1}
# The key of `get_config` that names the kind of schedule (`name` is Keras's op-name argument).
_KIND_KEY = "schedule"
_REGISTERED_NAME = "tfps>Schedule"


# Step arguments (warmup_steps, decay_steps, boundaries) become int32 or float32 tensors in
# Keras's schedules: 2**70 passes a Python check and fails at the first call.
MAX_STEPS = 2**31 - 1
# Learning rates and the factors of a decay: any larger value is a typo, and the largest
# rate times the most workers (validate.MAX_COUNT) stays far inside float32.
MAX_RATE = 1e6
# PiecewiseConstantDecay adds ops per boundary: a schedule is a handful of phases.
MAX_BOUNDARIES = 10_000


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    try:
        return (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and math.isfinite(value))
    except OverflowError:  # an int too large for a float
        return False


def _is_step(value) -> bool:
    return _is_int(value) and 0 <= value <= MAX_STEPS


def _check(kind: str, config: dict) -> dict:
    """Validates and normalises the arguments of schedule `kind`; returns a complete config."""
    required, optional = _SPECS[kind]
    accepted = (*required, *optional, *_COMMON)
    for key in config:
        if key not in accepted:
            shown = str(key)[:40]  # kwargs keys are strings; a config dict was checked
            raise ConfigError(
                f"Argument `{shown}` is not accepted by schedule {kind!r} (it accepts "
                f"{', '.join(accepted)}). Received: {shown}={validate.describe(config[key])}")
    for key in required:
        if key not in config:
            raise ConfigError(f"Argument `{key}` is required by schedule {kind!r}. "
                              f"Received: nothing")
    out = {**optional, **_COMMON, **config}

    def integer(key, low, high, why):
        value = out[key]
        if not _is_int(value) or value < low:
            raise validate.fail(key, value, "a positive integer" if low else "an integer >= 0")
        if value > high:
            raise validate.fail(key, value, f"at most {high} ({why})")
        out[key] = int(value)

    def steps(key, low=0):
        integer(key, low, MAX_STEPS, "steps become int32 and float32 tensors")

    def number(key, value, requirement, ok):
        if not _is_number(value) or not ok(value):
            raise validate.fail(key, value, requirement)
        if value > MAX_RATE:
            raise validate.fail(key, value, f"at most {MAX_RATE:g}")
        return float(value)

    def rate(key, value=None):
        return number(key, out[key] if value is None else value, "a finite number >= 0",
                      lambda v: v >= 0)

    def factor(key):  # decay_rate, power
        out[key] = number(key, out[key], "a finite number > 0", lambda v: v > 0)

    steps("warmup_steps")
    integer("num_workers", 1, validate.MAX_COUNT, "workers of one job")
    if kind == "piecewise":
        boundaries, values = out["boundaries"], out["values"]
        if not isinstance(boundaries, (list, tuple)) or not 1 <= len(boundaries) <= \
                MAX_BOUNDARIES or not all(_is_step(b) for b in boundaries):
            raise validate.fail("boundaries", boundaries,
                                f"a list of 1 to {MAX_BOUNDARIES} integers in [0, "
                                f"{MAX_STEPS}] (for one value, use 'constant')")
        if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
            raise validate.fail("boundaries", boundaries, "strictly increasing")
        if not isinstance(values, (list, tuple)) or len(values) != len(boundaries) + 1:
            raise ConfigError(
                f"Argument `values` must have one more element than `boundaries` "
                f"({len(boundaries)} boundaries need {len(boundaries) + 1} values). "
                f"Received: values={validate.describe(values)}, "
                f"boundaries={validate.describe(boundaries)}")
        out["boundaries"] = [int(b) for b in boundaries]
        out["values"] = [rate("values", v) for v in values]
        return out
    out["initial_learning_rate"] = rate("initial_learning_rate")
    if kind == "inverse_sqrt" and out["decay_steps"] is None:
        if not out["warmup_steps"]:
            raise ConfigError("Argument `decay_steps` is required by schedule 'inverse_sqrt' "
                              "when warmup_steps=0. Received: decay_steps=None")
        out["decay_steps"] = out["warmup_steps"]
    if "decay_steps" in out:
        steps("decay_steps", low=1)
    if kind == "exponential":
        factor("decay_rate")
    if kind == "polynomial":
        out["end_learning_rate"] = rate("end_learning_rate")
        factor("power")
    if kind == "cosine":
        if not _is_number(out["alpha"]) or not 0 <= out["alpha"] <= 1:
            raise validate.fail("alpha", out["alpha"], "a number in [0, 1]")
        out["alpha"] = float(out["alpha"])
    for flag in ("staircase", "cycle"):
        if flag in out:
            validate.boolean(flag, out[flag])
    return out


def _keras_schedule(kind: str, c: dict):
    """The Keras schedule that computes `kind` after warm-up, or None where Keras has none."""
    schedules = tf_keras.optimizers.schedules
    if kind == "exponential":
        return schedules.ExponentialDecay(c["initial_learning_rate"], c["decay_steps"],
                                          c["decay_rate"], staircase=c["staircase"])
    if kind == "piecewise":
        return schedules.PiecewiseConstantDecay(c["boundaries"], c["values"])
    if kind == "polynomial":
        return schedules.PolynomialDecay(c["initial_learning_rate"], c["decay_steps"],
                                         c["end_learning_rate"], c["power"], cycle=c["cycle"])
    if kind == "cosine":
        return schedules.CosineDecay(c["initial_learning_rate"], c["decay_steps"],
                                     alpha=c["alpha"])
    return None


@tf_keras.saving.register_keras_serializable(package="tfps", name="Schedule")
class Schedule(tf_keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule by name, with linear warm-up and linear scaling.

    With ``w = warmup_steps``, ``k = num_workers`` and ``inner`` the named schedule:

        lr(step) = k * peak * step / w           for 0 <= step < w   (warm-up from 0)
        lr(step) = k * inner(step - w)           for step >= w

    where ``peak = inner(0)`` (``initial_learning_rate``, or ``values[0]`` for piecewise).
    **The named schedule starts after the warm-up**: it sees ``step - warmup_steps``, so
    ``decay_steps`` and ``boundaries`` count steps after warm-up, and the schedule is
    continuous at ``step = w``. This is what Keras's own `CosineDecay(warmup_steps=...)` does.
    The schedules (``s = step - w``):

    * ``constant``: ``initial_learning_rate``.
    * ``exponential``: ``initial_learning_rate * decay_rate ** (s / decay_steps)``
      (``floor`` of the exponent with ``staircase=True``). Keras `ExponentialDecay`.
    * ``piecewise``: ``values[i]`` for ``boundaries[i-1] < s <= boundaries[i]``. Keras
      `PiecewiseConstantDecay`.
    * ``polynomial``: ``(initial - end_learning_rate) * (1 - min(s, decay_steps) /
      decay_steps) ** power + end_learning_rate``. Keras `PolynomialDecay` (also ``cycle``).
    * ``cosine``: ``initial * ((1 - alpha) * 0.5 * (1 + cos(pi * min(s, decay_steps) /
      decay_steps)) + alpha)``. Keras `CosineDecay`.
    * ``inverse_sqrt``: ``initial_learning_rate * sqrt(decay_steps / (decay_steps + s))``;
      ``decay_steps`` defaults to ``warmup_steps``, which gives the Transformer schedule
      ``initial * sqrt(w / step)`` after warm-up.

    ``num_workers`` applies the linear scaling rule (Goyal et al., 2017): a base learning rate
    tuned for one worker is multiplied by the number of workers, warm-up target included. It
    is a plain integer, so the schedule stays a pure function of the step; pass
    ``tfps.Cluster.from_env().num_workers`` to scale by the cluster's workers.

    Both tf_keras optimizers (which check ``isinstance(lr,
    tf_keras.optimizers.schedules.LearningRateSchedule)``) and Keras 3 optimizers (which check
    ``isinstance(lr, keras.optimizers.schedules.LearningRateSchedule)``) accept it, and Keras 3
    is never imported for it: see `__class__`.

    Args:
      schedule: one of `NAMES`.
      warmup_steps: length of the linear warm-up from 0; 0 for none.
      num_workers: multiply every learning rate by this (the linear scaling rule).
      **kwargs: the arguments of the named schedule, named as in Keras
        (``initial_learning_rate``, ``decay_steps``, ``decay_rate``, ``staircase``, ``alpha``,
        ``boundaries``, ``values``, ``end_learning_rate``, ``power``, ``cycle``).

    Raises:
      tfps.errors.ConfigError: unknown name or argument, a missing or out-of-range argument.

    Example:

    >>> lr = Schedule("piecewise", boundaries=[100], values=[0.1, 0.01], warmup_steps=10)
    >>> [round(float(lr(s)), 3) for s in (0, 5, 10, 110, 111)]
    [0.0, 0.05, 0.1, 0.1, 0.01]
    """

    def __init__(self, schedule: str, *, warmup_steps: int = 0, num_workers: int = 1,
                 **kwargs):
        super().__init__()
        if not isinstance(schedule, str) or schedule not in _SPECS:
            raise validate.fail("schedule", schedule, f"one of {', '.join(NAMES)}")
        self._kind = schedule
        self._config = _check(schedule, dict(kwargs, warmup_steps=warmup_steps,
                                             num_workers=num_workers))
        self._inner = _keras_schedule(schedule, self._config)
        c = self._config
        self._peak = c["values"][0] if schedule == "piecewise" else c["initial_learning_rate"]

    @property
    def name(self) -> str:
        """The kind of schedule, one of `NAMES`."""
        return self._kind

    def _after_warmup(self, s):
        """The named schedule at ``s >= 0`` steps after warm-up (float32 tensor)."""
        c = self._config
        if self._inner is not None:
            return tf.cast(self._inner(s), tf.float32)
        if self._kind == "constant":
            return tf.fill(tf.shape(s), tf.constant(c["initial_learning_rate"], tf.float32))
        decay_steps = float(c["decay_steps"])  # inverse_sqrt
        return c["initial_learning_rate"] * tf.sqrt(decay_steps / (decay_steps + s))

    def __call__(self, step):
        with tf.name_scope(f"tfps_{self._kind}"):
            # float32 like Keras's schedules: exact for steps below 2**24.
            step = tf.maximum(tf.cast(step, tf.float32), 0.0)
            w = float(self._config["warmup_steps"])
            # The named schedule never sees a negative step (tf.where evaluates both sides).
            lr = self._after_warmup(tf.maximum(step - w, 0.0))
            if w:
                lr = tf.where(step < w, self._peak * step / w, lr)
            return lr * float(self._config["num_workers"])

    def get_config(self) -> dict:
        """Every argument, defaults included; ``Schedule.from_config`` (and `get`) invert it."""
        config = {_KIND_KEY: self._kind, **self._config}
        for key in ("boundaries", "values"):
            if key in config:
                config[key] = list(config[key])
        return config

    @classmethod
    def from_config(cls, config: Mapping) -> "Schedule":
        return cls(**config)

    def __reduce__(self):
        # By config: pickle would otherwise pair `type(self)` with the `__class__` below.
        return (_from_config, (self.get_config(),))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config.items())
        return f"Schedule({self._kind!r}, {args})"

    # Keras 3 optimizers accept a learning rate only if `isinstance(lr,
    # keras.optimizers.schedules.LearningRateSchedule)` (keras/src/optimizers/base_optimizer.py,
    # `__init__` and `_get_current_learning_rate`); any other callable is called with *no*
    # argument. Subclassing Keras 3's base would import Keras 3 (~1.6 s, and a second Keras in
    # every PSS task). Instead, `isinstance` falls back on `obj.__class__` when `type(obj)`
    # fails the test (CPython's `object_isinstance`; `unittest.mock` specs rely on the same),
    # so once Keras 3 has been imported by someone else, `__class__` reports a subclass of
    # both bases, made on first use. Both bases are plain classes (no ABCMeta), and Keras 3
    # needs nothing else from its base: it calls `lr(iterations)` and `get_config()`.
    @property
    def __class__(self):
        return _with_keras3_base(type(self))


def _from_config(config: dict) -> Schedule:
    return Schedule.from_config(config)


_DUAL_CLASSES: dict[type, type] = {}


def _with_keras3_base(cls: type) -> type:
    """`cls`, or its subclass that also derives from Keras 3's base if Keras 3 is loaded."""
    keras = sys.modules.get("keras")
    base = getattr(getattr(getattr(keras, "optimizers", None), "schedules", None),
                   "LearningRateSchedule", None)
    if not isinstance(base, type) or issubclass(cls, base):
        return cls
    dual = _DUAL_CLASSES.get(cls)
    if dual is None:
        dual = type(cls.__name__, (cls, base), {"__module__": cls.__module__,
                                                "__qualname__": cls.__qualname__})
        # Both Kerases serialise `obj.__class__`: register the dual class under the base's
        # name ("tfps>Schedule") in both registries, or configs would not deserialise.
        tf_keras.saving.register_keras_serializable(package="tfps", name=cls.__name__)(dual)
        keras.saving.register_keras_serializable(package="tfps", name=cls.__name__)(dual)
        _DUAL_CLASSES[cls] = dual
    return dual


def get(identifier, **kwargs) -> Schedule:
    """A `Schedule` from a name, a config dict, a number, or a `Schedule`.

    Args:
      identifier: a name from `NAMES`; a dict from `Schedule.get_config` (or Keras's
        ``{"class_name": "tfps>Schedule", "config": {...}}``), whose entries `kwargs`
        override; a number (a constant learning rate); or a `Schedule` (returned as is).
      **kwargs: arguments of the schedule (see `Schedule`), ``warmup_steps``,
        ``num_workers``.

    Raises:
      tfps.errors.ConfigError: unknown name or argument, or an out-of-range value.

    >>> get("inverse_sqrt", initial_learning_rate=1.0, warmup_steps=4).get_config()["decay_steps"]
    4
    """
    if isinstance(identifier, Schedule):
        if kwargs:
            return Schedule.from_config({**identifier.get_config(), **kwargs})
        return identifier
    if isinstance(identifier, str):
        return Schedule(identifier, **kwargs)
    if isinstance(identifier, Mapping):
        config = dict(identifier)
        if "class_name" in config and isinstance(config.get("config"), Mapping):
            if config["class_name"] not in (_REGISTERED_NAME, "Schedule"):
                raise ConfigError(f"Argument `identifier` must be the config of a tfps "
                                  f"schedule. Received: class_name="
                                  f"{validate.describe(config['class_name'])}")
            config = dict(config["config"])
        config.update(kwargs)
        for key in config:
            if not isinstance(key, str):
                raise ConfigError(f"Argument `identifier` must be a config dict with string "
                                  f"keys. Received: key {validate.describe(key, 40)}")
        if _KIND_KEY not in config:
            raise ConfigError(f"Argument `identifier` must be a config dict with a "
                              f"{_KIND_KEY!r} key (from Schedule.get_config). "
                              f"Received: identifier={validate.describe(identifier)}")
        return Schedule.from_config(config)
    if _is_number(identifier):
        return Schedule("constant", initial_learning_rate=identifier, **kwargs)
    raise ConfigError(f"Argument `identifier` must be a schedule name ({', '.join(NAMES)}), "
                      f"a config dict, a number or a Schedule. Received: "
                      f"identifier={validate.describe(identifier)}")
