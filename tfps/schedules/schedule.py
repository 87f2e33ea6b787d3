"""`Schedule`, the learning-rate schedules of `tfps.schedules`, and `get` (TensorFlow).

The arguments are checked by `tfps.schedules.config` (pure Python); here they become a
function of the step that tf_keras and Keras 3 optimizers accept.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
import tf_keras

from tfps import validate
from tfps.errors import ConfigError
from tfps.schedules.config import MAX_RATE, NAMES, check, first_step_over

__all__ = ["Schedule", "check_run", "get"]

# The key of `get_config` that names the kind of schedule (`name` is Keras's op-name argument).
_KIND_KEY = "schedule"
_REGISTERED_NAME = "tfps>Schedule"
# Steps a schedule that is not a tfps `Schedule` is read at to check a run (`check_run`): the
# run's ends and points spaced evenly on a log scale between them.
_PROBES = 64


def _keras_schedule(kind: str, c: dict):
    """The Keras schedule that computes `kind` after warm-up, or None where Keras has none."""
    schedules = tf_keras.optimizers.schedules
    if kind == "exponential":
        return schedules.ExponentialDecay(c["initial_learning_rate"], c["decay_steps"],
                                          c["decay_rate"], staircase=c["staircase"])
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
    * ``piecewise``: ``values[i]`` for ``boundaries[i-1] < s <= boundaries[i]``, as Keras's
      `PiecewiseConstantDecay` (one search over the boundaries: any number of them traces).
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
        self._config = check(schedule, dict(kwargs, warmup_steps=warmup_steps,
                                            num_workers=num_workers))
        self._kind = schedule
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
        if self._kind == "piecewise":
            # Keras's PiecewiseConstantDecay builds one nested condition per boundary, and
            # tracing ~300 of them overflows Python's recursion limit. One search instead:
            # the number of boundaries below s is the index of its value (values[i] for
            # boundaries[i-1] < s <= boundaries[i]), the same float32 comparisons.
            bounds = tf.constant(np.asarray(c["boundaries"], np.float32))
            flat = tf.reshape(s, [-1])
            index = tf.searchsorted(bounds, flat, side="left")
            values = tf.constant(c["values"], tf.float32)
            return tf.reshape(tf.gather(values, index), tf.shape(s))
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
    def from_config(cls, config: Mapping) -> Schedule:
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
    if isinstance(identifier, (int, float)) and not isinstance(identifier, bool):
        return Schedule("constant", initial_learning_rate=identifier, **kwargs)
    raise ConfigError(f"Argument `identifier` must be a schedule name ({', '.join(NAMES)}), "
                      f"a config dict, a number or a Schedule. Received: "
                      f"identifier={validate.describe(identifier)}")


def _exponential_at(c: dict, step: int) -> float:
    """An exponential schedule's rate at `step` (after warm-up), in float64; inf past it."""
    exponent = (step - c["warmup_steps"]) / c["decay_steps"]
    if c["staircase"]:
        exponent = math.floor(exponent)
    try:
        return c["num_workers"] * c["initial_learning_rate"] * c["decay_rate"] ** exponent
    except OverflowError:
        return math.inf


def check_run(learning_rate, first_step: int, last_step: int,
              name: str = "learning_rate") -> None:
    """Raises `ConfigError` (naming `name`) when `learning_rate`, a schedule, leaves ``[0,
    limit]`` or stops being finite at some step of ``[first_step, last_step]``: the steps a
    run will read it at. The limit is ``MAX_RATE`` (times ``num_workers`` for a tfps
    `Schedule`, whose largest rate is computed, not sampled).

    A schedule that is not a tfps `Schedule` (a Keras one, a function of the step) is read at
    the run's ends and at `_PROBES` steps between them; a plain number or a callable that
    takes no step passes (checked where it was given).
    """
    if isinstance(learning_rate, Schedule):
        c = learning_rate.get_config()
        limit = MAX_RATE * c["num_workers"]
        over = first_step_over(learning_rate.name, c, limit)
        if over is not None and over <= last_step:
            value = _exponential_at(c, over)
            raise ConfigError(
                f"Argument `{name}` must stay finite and at most {limit:g} over the run: "
                f"schedule {learning_rate.name!r} reaches {value:.4g} at step {over}, and "
                f"this run reads it up to step {last_step}. Received: "
                f"{name}={validate.describe(learning_rate, 160)}")
        return
    if not callable(learning_rate) or not hasattr(learning_rate, "get_config"):
        return
    last_step = max(first_step, last_step)
    probes = {first_step, last_step}
    if last_step > first_step:
        probes.update(int(v) for v in np.geomspace(1, last_step - first_step + 1, _PROBES)
                      + first_step - 1)
    for step in sorted(probes):
        value = float(tf.convert_to_tensor(learning_rate(tf.constant(step, tf.float32))))
        if not (math.isfinite(value) and 0 <= value <= MAX_RATE):
            raise ConfigError(
                f"Argument `{name}` must stay finite and in [0, {MAX_RATE:g}] over the run: "
                f"it is {value:.3g} at step {step}, and this run reads it up to step "
                f"{last_step}. Received: {name}={validate.describe(learning_rate)}")
