"""Optimizers that can drive variables on parameter servers.

The rule: `tfps.Trainer` always applies updates with a **tf_keras legacy optimizer**
(`tf_keras.optimizers.legacy.*`, the `OptimizerV2` family). They create their slots beside each
variable shard on its ps task and apply `IndexedSlices` gradients sparsely. Keras 3 optimizers
keep their own `keras.Variable` state and know nothing of `ShardedVariable` or of
ParameterServerStrategy (docs/tensorflow-notes.md), and tf_keras's newer optimizers are not the ones
tf_keras's own PSS `fit` path is tested with; so `as_ps_optimizer` converts any of them, by class
name and config, into the legacy optimizer of the same name. A name (``"adam"``) works too.

>>> opt = as_ps_optimizer("sgd", learning_rate=0.5)
>>> type(opt).__name__, float(opt.learning_rate)
('SGD', 0.5)
"""

from __future__ import annotations

import logging

from tfps import _tf
from tfps.errors import ConfigError

__all__ = ["as_ps_optimizer"]

log = logging.getLogger(__name__)

_NAMES = {"sgd": "SGD", "adam": "Adam", "adagrad": "Adagrad", "rmsprop": "RMSprop",
          "adamax": "Adamax", "nadam": "Nadam", "adadelta": "Adadelta", "ftrl": "Ftrl"}
# Config keys the legacy optimizers share with Keras 3 / tf_keras new optimizers; others
# (weight_decay, use_ema, loss_scale_factor, ...) have no legacy counterpart and are refused.
_PORTABLE = {"learning_rate", "momentum", "nesterov", "beta_1", "beta_2", "epsilon", "amsgrad",
             "rho", "initial_accumulator_value", "centered", "clipnorm", "clipvalue",
             "global_clipnorm", "learning_rate_power", "l1_regularization_strength",
             "l2_regularization_strength", "beta"}
_IGNORED = {"name", "is_legacy_optimizer", "decay", "jit_compile", "use_ema",
            "ema_momentum", "ema_overwrite_frequency", "loss_scale_factor",
            "gradient_accumulation_steps", "weight_decay"}


def _legacy_module():
    import tf_keras
    return tf_keras.optimizers.legacy


def _is_legacy(optimizer) -> bool:
    return isinstance(optimizer, _legacy_module().Optimizer)


def as_ps_optimizer(optimizer, **kwargs):
    """Returns a tf_keras legacy optimizer equivalent to `optimizer`.

    Args:
      optimizer: a tf_keras legacy optimizer (returned as is), a Keras 3 or tf_keras optimizer
        (converted by class name and config), or a name such as ``"sgd"`` or ``"adam"``.
      **kwargs: constructor arguments when `optimizer` is a name.

    Raises:
      ConfigError: the optimizer has no legacy counterpart, or uses a setting that cannot be
        carried over (e.g. ``weight_decay``).
    """
    legacy = _legacy_module()
    if _is_legacy(optimizer):
        return optimizer
    if isinstance(optimizer, str):
        name = _NAMES.get(optimizer.lower())
        if name is None:
            raise ConfigError(f"Argument `optimizer` must be one of {sorted(_NAMES)} or an "
                              f"optimizer object. Received: optimizer={optimizer!r}")
        return getattr(legacy, name)(**kwargs)
    name = type(optimizer).__name__
    if not hasattr(optimizer, "get_config") or not hasattr(legacy, name):
        raise ConfigError(f"Argument `optimizer` has no tf_keras legacy counterpart "
                          f"(needed to update variables on ps tasks). Received: "
                          f"optimizer={name}")
    config = dict(optimizer.get_config())
    if config.get("weight_decay"):
        raise ConfigError(f"Argument `optimizer` uses weight_decay, which the tf_keras legacy "
                          f"optimizers lack. Received: optimizer={name}(weight_decay="
                          f"{config['weight_decay']})")
    unknown = set(config) - _PORTABLE - _IGNORED
    if unknown:
        raise ConfigError(f"Argument `optimizer` has settings the legacy {name} cannot take: "
                          f"{sorted(unknown)}. Received: optimizer={name}")
    schedule = _tf.keras3_schedule(optimizer)
    if schedule is not None:
        config["learning_rate"] = _as_tf_keras_schedule(schedule)
    config = {k: v for k, v in config.items() if k in _PORTABLE and v is not None}
    log.info("tfps: using tf_keras.optimizers.legacy.%s for %s (ps-capable)", name,
             type(optimizer).__module__)
    return getattr(legacy, name)(**config)


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
