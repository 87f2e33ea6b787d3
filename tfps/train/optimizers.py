"""Optimizers that can drive variables on parameter servers.

The rule: `tfps.Trainer` always applies updates with a **tf_keras legacy optimizer**
(`tf_keras.optimizers.legacy.*`, the `OptimizerV2` family). They create their slots beside each
variable shard on its ps task and apply `IndexedSlices` gradients sparsely. Keras 3 optimizers
keep their own `keras.Variable` state and know nothing of `ShardedVariable` or of
ParameterServerStrategy (docs/tensorflow-notes.md), and tf_keras's newer optimizers are not the ones
tf_keras's own PSS `fit` path is tested with; so `as_ps_optimizer` converts any of them, by class
name and config, into the legacy optimizer of the same name. A name (``"adam"``) works too.

**Every setting is carried over or refused by name** (docs/settings.md): a setting the legacy
optimizer has is carried (`LEGACY_SETTINGS`); one it lacks is refused as soon as it is set to
anything but its inert default (`NO_COUNTERPART`: ``weight_decay``, ``use_ema``,
``gradient_accumulation_steps``, ``loss_scale_factor``, ``jit_compile``), never dropped. Every
value is checked against its range (`check_settings`): a NaN or negative learning rate, a
momentum of 2, a string where a number goes, are one `ConfigError` line naming the setting.
This module reads configs only (pure Python until a legacy optimizer is built).

>>> opt = as_ps_optimizer("sgd", learning_rate=0.5)  # doctest: +SKIP
>>> type(opt).__name__, float(opt.learning_rate)     # doctest: +SKIP
('SGD', 0.5)
>>> check_settings("SGD", {"learning_rate": float("nan")})
Traceback (most recent call last):
...
tfps.errors.ConfigError: Argument `learning_rate` must be a finite number in [0, 1e+06] or a schedule. Received: learning_rate=nan
"""  # noqa: E501 - a doctest shows an error line whole

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from tfps import _tf, validate
from tfps.errors import ConfigError
from tfps.schedules.config import MAX_RATE, check_learning_rate

__all__ = ["LEGACY_SETTINGS", "NAMES", "NO_COUNTERPART", "SETTINGS", "as_ps_optimizer",
           "check_settings", "learning_rate_schedule"]

log = logging.getLogger(__name__)

NAMES = {"sgd": "SGD", "adam": "Adam", "adagrad": "Adagrad", "rmsprop": "RMSprop",
         "adamax": "Adamax", "nadam": "Nadam", "adadelta": "Adadelta", "ftrl": "Ftrl"}
# Settings every legacy optimizer takes (OptimizerV2.__init__'s allowed keyword arguments).
_COMMON = ("name", "learning_rate", "decay", "clipnorm", "clipvalue", "global_clipnorm")
# Each legacy optimizer's settings, as tf_keras 2.21 declares them
# (tests/integration/test_settings.py checks this table against tf_keras itself).
LEGACY_SETTINGS: dict[str, tuple[str, ...]] = {
    "SGD": _COMMON + ("momentum", "nesterov"),
    "Adam": _COMMON + ("beta_1", "beta_2", "epsilon", "amsgrad"),
    "Adagrad": _COMMON + ("initial_accumulator_value", "epsilon"),
    "RMSprop": _COMMON + ("rho", "momentum", "epsilon", "centered"),
    "Adamax": _COMMON + ("beta_1", "beta_2", "epsilon"),
    "Nadam": _COMMON + ("beta_1", "beta_2", "epsilon"),
    "Adadelta": _COMMON + ("rho", "epsilon"),
    "Ftrl": _COMMON + ("learning_rate_power", "initial_accumulator_value",
                       "l1_regularization_strength", "l2_regularization_strength",
                       "l2_shrinkage_regularization_strength", "beta"),
}
# Settings of Keras 3 and tf_keras (new) optimizers that no legacy optimizer has, with the
# values that leave them inert (what their defaults are): any other value is refused by name.
NO_COUNTERPART: dict[str, tuple[Any, ...]] = {
    "weight_decay": (None, 0, 0.0),          # decoupled weight decay (AdamW-style)
    "use_ema": (False,),                     # an exponential moving average of the weights
    "gradient_accumulation_steps": (None,),  # the legacy optimizer applies every gradient
    "loss_scale_factor": (None,),            # loss scaling (mixed precision)
    "jit_compile": (False,),                 # XLA compilation of the update
}
# Settings that mean something only together with one above; inert while it is.
_INERT_WITH = {"ema_momentum": "use_ema", "ema_overwrite_frequency": "use_ema"}
# Keys of a config that describe the object, not the update.
_BOOKKEEPING = ("is_legacy_optimizer",)


def _fraction(high_open: bool) -> Callable[[str, Any], None]:
    def check(name, value):
        validate.number(name, value, low=0.0, high=1.0)
        if high_open and value >= 1.0:
            raise validate.fail(name, value, "a finite number in [0, 1)")
    return check


def _nonnegative(name, value):
    validate.number(name, value, low=0.0, high=MAX_RATE)


def _clip(name, value):
    validate.number(name, value, low=0.0, low_open=True, high=MAX_RATE, allow_none=True)


def _power(name, value):
    validate.number(name, value, low=-MAX_RATE, high=0.0)


def _flag(name, value):
    validate.boolean(name, value)


def _name(name, value):
    if not isinstance(value, str) or not value.isprintable() or len(value) > 200:
        raise validate.fail(name, value, "a printable string of at most 200 characters")


def _learning_rate(name, value):
    if isinstance(value, Mapping):  # a serialized schedule (a legacy optimizer's config)
        return
    check_learning_rate(name, value)


# The range of every setting (the legacy optimizers check few of them: a NaN learning rate or
# an epsilon of -1 trains on, wrongly). MAX_RATE bounds what has no natural bound: an
# epsilon or a decay of 1e30 is a typo, not a setting.
_RANGES: dict[str, Callable[[str, Any], None]] = {
    "name": _name, "learning_rate": _learning_rate, "lr": _learning_rate,
    "decay": _nonnegative, "clipnorm": _clip, "clipvalue": _clip, "global_clipnorm": _clip,
    "momentum": _fraction(False), "rho": _fraction(False),
    "beta_1": _fraction(True), "beta_2": _fraction(True),
    "epsilon": _nonnegative, "initial_accumulator_value": _nonnegative,
    "nesterov": _flag, "amsgrad": _flag, "centered": _flag,
    "learning_rate_power": _power, "l1_regularization_strength": _nonnegative,
    "l2_regularization_strength": _nonnegative,
    "l2_shrinkage_regularization_strength": _nonnegative, "beta": _nonnegative,
}
SETTINGS = tuple(_RANGES)
# Settings whose None means "the default" (the backend's epsilon, no clipping).
_MAY_BE_NONE = ("epsilon", "clipnorm", "clipvalue", "global_clipnorm")


def check_settings(kind: str, config: Mapping[str, Any], *,
                   converting: bool = True) -> dict[str, Any]:
    """The settings of `config` that legacy optimizer `kind` takes, each checked against its
    range; `ConfigError` naming the first one that has no legacy counterpart and is set, or
    that is out of range. Keys that only describe the object (``is_legacy_optimizer``) and
    inert settings (``use_ema=False``, an EMA setting without ``use_ema``) are left out.

    With ``converting=False`` (a legacy optimizer used as it is, maybe a subclass with
    settings of its own: nothing is carried, so nothing can be dropped), only the ranges of
    the settings known here are checked."""
    if not converting:
        for key, value in config.items():
            if key in _RANGES and not (value is None and key in _MAY_BE_NONE):
                _RANGES[key](key, value)
        return dict(config)
    for key in config:
        if not isinstance(key, str):
            raise ConfigError(f"Argument `optimizer` must have settings named by strings. "
                              f"Received: a setting named {validate.describe(key, 40)}")
    for key, inert in NO_COUNTERPART.items():
        value = config.get(key, inert[0])
        if not any(value is v or (type(value) is type(v) and value == v) for v in inert):
            raise ConfigError(
                f"Argument `{key}` of optimizer {kind} has no tf_keras legacy counterpart "
                f"(tfps updates variables on ps tasks with legacy optimizers): leave it "
                f"{inert[0]!r}, or train without it. Received: {key}="
                f"{validate.describe(value)}")
    taken = LEGACY_SETTINGS.get(kind, ())
    out = {}
    for key, value in config.items():
        if key in NO_COUNTERPART or key in _BOOKKEEPING or (
                key in _INERT_WITH and key not in taken):
            continue
        if key not in taken and key != "lr":
            raise ConfigError(
                f"Argument `{key}` has no counterpart in the tf_keras legacy {kind} (it takes "
                f"{', '.join(taken)}). Received: {key}={validate.describe(value)}")
        if value is None and key in _MAY_BE_NONE:
            continue  # None: the backend's epsilon, no clipping
        _RANGES[key](key, value)
        out[key] = value
    return out


def _legacy_module():
    import tf_keras
    return tf_keras.optimizers.legacy


def _is_legacy(optimizer) -> bool:
    return isinstance(optimizer, _legacy_module().Optimizer)


def as_ps_optimizer(optimizer, **kwargs):
    """Returns a tf_keras legacy optimizer equivalent to `optimizer`.

    Args:
      optimizer: a tf_keras legacy optimizer (returned as is, once its settings are
        checked), a Keras 3 or tf_keras optimizer (converted by class name and config: every
        setting carried over or refused), or a name such as ``"sgd"`` or ``"adam"``.
      **kwargs: constructor arguments when `optimizer` is a name (each checked).

    Raises:
      ConfigError: the optimizer has no legacy counterpart, sets something the legacy one
        lacks (``weight_decay``, ``use_ema``, ``gradient_accumulation_steps``, ...), or a
        value out of its range (a NaN or negative learning rate, a momentum above 1, ...).
    """
    if isinstance(optimizer, str):
        kind = NAMES.get(optimizer.lower())
        if kind is None:
            raise validate.fail("optimizer", optimizer,
                                f"one of {sorted(NAMES)} or an optimizer object")
        settings = check_settings(kind, kwargs)  # before tf_keras is even imported
        return getattr(_legacy_module(), kind)(**settings)
    if kwargs:
        key = next(iter(kwargs))
        raise ConfigError(f"Argument `{key}` is only for an optimizer name; set it on the "
                          f"optimizer. Received: {key}={validate.describe(kwargs[key])}, "
                          f"optimizer={type(optimizer).__name__}")
    if isinstance(optimizer, type):
        raise validate.fail("optimizer", optimizer, "an optimizer instance or a name, not a "
                                                    "class")
    kind = type(optimizer).__name__
    legacy = _legacy_module()
    if _is_legacy(optimizer):
        check_settings(kind, _config(optimizer, kind), converting=False)
        return optimizer
    if not hasattr(optimizer, "get_config") or kind not in LEGACY_SETTINGS:
        raise ConfigError(f"Argument `optimizer` has no tf_keras legacy counterpart (needed "
                          f"to update variables on ps tasks; those are "
                          f"{', '.join(LEGACY_SETTINGS)}). Received: optimizer={kind}")
    config = check_settings(kind, _config(optimizer, kind))
    schedule = _tf.keras3_schedule(optimizer)
    if schedule is not None:
        config["learning_rate"] = _as_tf_keras_schedule(schedule)
    elif "learning_rate" in config:
        config["learning_rate"] = _plain(config["learning_rate"])
    log.info("tfps: using tf_keras.optimizers.legacy.%s for %s (ps-capable)", kind,
             type(optimizer).__module__)
    return getattr(legacy, kind)(**{k: v for k, v in config.items() if v is not None})


def _config(optimizer, kind: str) -> dict:
    try:
        return dict(optimizer.get_config())
    except Exception as e:  # noqa: BLE001 - a config that cannot be read cannot be carried
        raise ConfigError(f"Argument `optimizer` must have a readable config (every setting "
                          f"is carried over from it). Received: optimizer={kind} whose "
                          f"get_config() raised {type(e).__name__}: "
                          f"{validate.describe(str(e))}") from None


def _plain(value):
    """A NumPy scalar (a tf_keras new optimizer's learning rate) as a Python float."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def learning_rate_schedule(optimizer):
    """The schedule a legacy optimizer reads its learning rate from, or None (a number, a
    variable, a callable of no argument): what `tfps.schedules.check_run` checks per run."""
    value = _tf.optimizer_hyper(optimizer, "learning_rate")
    if callable(value) and hasattr(value, "get_config") and not hasattr(value, "assign"):
        return value
    return None


def _as_tf_keras_schedule(schedule):
    """`schedule` as a tf_keras `LearningRateSchedule` (legacy optimizers test isinstance)."""
    import tf_keras

    base = tf_keras.optimizers.schedules.LearningRateSchedule
    if isinstance(schedule, base):
        return schedule

    class _StepSchedule(base):
        """Adapts a Keras 3 (or any step -> lr) schedule for tf_keras optimizers."""

        def __call__(self, step):
            return schedule(step)

        def get_config(self):
            return schedule.get_config()

    return _StepSchedule()

