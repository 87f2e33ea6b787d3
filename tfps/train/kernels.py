"""An optimizer's update as TF's fused kernels, on resource handles: what local steps
(`tfps.train.local`) run on worker-local copies at every step.

They are the kernels tf_keras's legacy optimizers run on their variables (its
``_resource_apply_dense`` / ``_resource_apply_sparse``), with the same hyperparameters at the
same step (`tfps.train.optim_math.learning_rate`: the schedule, then the legacy ``decay``), so
one local step is the optimizer's own update of a copy:

* SGD: ``ResourceApplyGradientDescent``; rows ``ResourceScatterAdd(-lr g)``; with momentum
  ``ResourceApplyKerasMomentum`` / ``ResourceSparseApplyKerasMomentum``;
* Adagrad: ``ResourceApplyAdagradV2`` / ``ResourceSparseApplyAdagradV2``;
* Adam: ``ResourceApplyAdam``; rows "lazily" (only the rows given: gathered, updated by
  `tfps.train.optim_math`, scattered back), as local steps always did.

Sparse updates take each row once: de-duplicate first (`tf.unique` + segment sum), as the
optimizer itself does before its sparse kernels.
"""

from __future__ import annotations

from collections.abc import Sequence

from tfps import _tf
from tfps.errors import ConfigError
from tfps.train import optim_math

tf = _tf.require()

__all__ = ["FusedRule", "fused_rule", "rule_or_none"]

# What tf_keras's `apply_gradients` does besides its kernels, which `FusedRule` does not.
_TRANSFORMS = ("clipnorm", "clipvalue", "global_clipnorm")


class FusedRule:
    """The fused update of one tf_keras legacy optimizer (SGD, Adagrad or Adam).

    Args:
      optimizer: the optimizer (its hyperparameters are read at trace time, at each step).
      purpose: what needs it, for the error when the optimizer has no rule.
    """

    def __init__(self, optimizer, purpose: str = "local steps"):
        self.rule = optim_math.rule_for(optimizer, purpose)
        config = optimizer.get_config()
        for name in _TRANSFORMS:  # refused, never dropped (docs/settings.md)
            if config.get(name) is not None:
                raise ConfigError(
                    f"Argument `optimizer` must not clip gradients for {purpose}: its updates "
                    f"run as the optimizer's kernels, which do not clip. Received: "
                    f"{name}={config[name]!r}")
        self.optimizer = optimizer
        self.slot_names: tuple[str, ...] = self.rule.slot_names
        self._nesterov = bool(getattr(optimizer, "nesterov", False))
        eps = getattr(optimizer, "epsilon", None)
        self._epsilon = float(eps) if eps is not None else 0.0

    @property
    def uses_step(self) -> bool:
        """Whether any update depends on the step count (a schedule, a legacy ``decay``,
        Adam's bias correction, a hyperparameter in a variable or a callable)."""
        if self.rule.name == "Adam" or optim_math.decay(self.optimizer):
            return True
        for name in ("learning_rate", "momentum"):
            try:
                value = _tf.optimizer_hyper(self.optimizer, name)
            except KeyError:
                continue
            if callable(value) or isinstance(value, tf.Variable):
                return True
        return False

    def _value(self, name: str, step, dtype):
        return tf.cast(optim_math.hyper(self.optimizer, name, step), dtype)

    def dense(self, var, slots: Sequence, grad, step):
        """Updates the variable behind handle `var` (and its slots' handles) by `grad`."""
        lr = tf.cast(optim_math.learning_rate(self.optimizer, step), grad.dtype)
        name = self.rule.name
        if name == "SGD" and not slots:
            return tf.raw_ops.ResourceApplyGradientDescent(var=var, alpha=lr, delta=grad)
        if name == "SGD":
            return tf.raw_ops.ResourceApplyKerasMomentum(
                var=var, accum=slots[0], lr=lr, grad=grad,
                momentum=self._value("momentum", step, grad.dtype),
                use_nesterov=self._nesterov)
        if name == "Adagrad":
            return tf.raw_ops.ResourceApplyAdagradV2(
                var=var, accum=slots[0], lr=lr, epsilon=tf.cast(self._epsilon, grad.dtype),
                grad=grad)
        b1, b2 = self._value("beta_1", step, grad.dtype), self._value("beta_2", step, grad.dtype)
        t = tf.cast(step + 1, grad.dtype)
        return tf.raw_ops.ResourceApplyAdam(
            var=var, m=slots[0], v=slots[1], beta1_power=tf.pow(b1, t),
            beta2_power=tf.pow(b2, t), lr=lr, beta1=b1, beta2=b2,
            epsilon=tf.cast(self._epsilon, grad.dtype), grad=grad)

    def sparse(self, var, slots: Sequence, values, indices, step, dtype):
        """Updates rows `indices` (distinct) of the variable behind handle `var` by `values`."""
        lr = tf.cast(optim_math.learning_rate(self.optimizer, step), values.dtype)
        name = self.rule.name
        if name == "SGD" and not slots:
            return tf.raw_ops.ResourceScatterAdd(resource=var, indices=indices,
                                                 updates=-lr * values)
        if name == "SGD":
            return tf.raw_ops.ResourceSparseApplyKerasMomentum(
                var=var, accum=slots[0], lr=lr, grad=values, indices=indices,
                momentum=self._value("momentum", step, values.dtype),
                use_nesterov=self._nesterov)
        if name == "Adagrad":
            return tf.raw_ops.ResourceSparseApplyAdagradV2(
                var=var, accum=slots[0], lr=lr, epsilon=tf.cast(self._epsilon, values.dtype),
                grad=values, indices=indices)
        rows = [tf.raw_ops.ResourceGather(resource=h, indices=indices, dtype=dtype)
                for h in (var, *slots)]
        new_rows, new_slots = self.rule.update(rows[0], rows[1:], values, step)
        return tf.group([tf.raw_ops.ResourceScatterUpdate(resource=h, indices=indices,
                                                          updates=u)
                         for h, u in zip((var, *slots), (new_rows, *new_slots))])


def fused_rule(optimizer, purpose: str = "local steps") -> FusedRule:
    """The `FusedRule` of `optimizer`; `ConfigError` (naming `purpose`) for one it lacks."""
    return FusedRule(optimizer, purpose)


def rule_or_none(optimizer) -> FusedRule | None:
    """The `FusedRule` of `optimizer` when it does all the optimizer's `apply_gradients`
    would (a supported kind, no gradient clipping); None otherwise.

    Not for Adam: tf_keras's sparse Adam decays the moments of *every* row at every step and
    moves every row whose moment is not zero, while `FusedRule.sparse` updates the rows given
    ("lazy"): on an embedding whose rows are not all in every batch the two part (0.23 after
    12 steps, tests/integration/test_settings.py), so Adam keeps its own `apply_gradients`."""
    config = optimizer.get_config()
    if any(config.get(name) is not None for name in _TRANSFORMS):
        return None
    if type(optimizer).__name__ == "Adam":
        return None
    try:
        return FusedRule(optimizer)
    except Exception:  # noqa: BLE001 - the optimizer's own apply_gradients serves any other
        return None
