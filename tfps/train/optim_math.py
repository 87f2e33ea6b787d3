"""Optimizer updates as plain functions of tensors, the same arithmetic as tf_keras's legacy
optimizers apply to variables on ps tasks.

Local steps (`tfps.train.local`) update worker-local copies of parameters and slots with
these, and push the difference; the update rules are those of the legacy kernels
(``ResourceApplyGradientDescent``, ``ResourceApplyKerasMomentum``, ``ResourceApplyAdagradV2``,
``ResourceApplyAdam``):

* SGD: ``w -= lr g``; with momentum ``m = μ m - lr g; w += m`` (Nesterov: ``w += μ m - lr g``);
* Adagrad: ``a += g²; w -= lr g / (√a + ε)``;
* Adam: ``m = β₁ m + (1-β₁) g; v = β₂ v + (1-β₂) g²;
  w -= lr √(1-β₂ᵗ)/(1-β₁ᵗ) · m / (√v + ε)``, t the 1-based update count.

For rows of an embedding, they update only the rows given ("lazy" Adam: tf_keras's own sparse
Adam also decays the moments of every other row at every step). Rows of a `DynamicEmbedding`
(`tfps.layers`) pass ``count``, each row's own 1-based update count, which replaces ``t`` in
Adam's bias correction (a row created at step 10 000 starts with t = 1, as a new variable would).

>>> rule = rule_for(tf_keras.optimizers.legacy.Adagrad(0.5, epsilon=0.0))  # doctest: +SKIP
>>> w, (a,) = rule.update(tf.constant([1.0]), [tf.constant([0.0])], tf.constant([2.0]),
...                       step=tf.constant(0, tf.int64))  # doctest: +SKIP
>>> float(w), float(a)  # doctest: +SKIP
(0.5, 4.0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from tfps import _tf
from tfps.errors import ConfigError

tf = _tf.require()

__all__ = ["Rule", "SUPPORTED", "decay", "hyper", "initial_slots", "learning_rate",
           "rule_for"]

SUPPORTED = ("SGD", "Adagrad", "Adam")


def hyper(optimizer, name: str, step) -> tf.Tensor:
    """A hyperparameter's value at `step` (a float, a variable, a schedule or a callable)."""
    value = _tf.optimizer_hyper(optimizer, name)
    if isinstance(value, tf.Variable):
        return tf.cast(value.read_value(), tf.float32)
    if callable(value):
        try:
            value = value(tf.cast(step, tf.float32))  # a schedule: at the step
        except TypeError:
            value = value()  # a callable taking nothing (tfps's staleness wrapper)
    return tf.cast(value, tf.float32)


def learning_rate(optimizer, step) -> tf.Tensor:
    """The learning rate the optimizer applies at `step`, as its ``_decayed_lr`` computes it
    (optimizer_v2.py): the schedule's value at the step, then divided by ``1 + decay * step``
    when the legacy ``decay`` argument is set."""
    lr = hyper(optimizer, "learning_rate", step)
    decay_rate = decay(optimizer)
    if decay_rate:
        lr = lr / (1.0 + decay_rate * tf.cast(step, tf.float32))
    return lr


def decay(optimizer) -> float:
    """The legacy ``decay`` argument of a tf_keras optimizer (0: none)."""
    return float(optimizer.get_config().get("decay", 0.0) or 0.0)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One optimizer's update: its slot names (as tf_keras names them) and the function.

    `update(w, slots, g, step, count=None)` returns ``(new w, new slots)``; `step` is the count
    of updates before this one (the optimizer's ``iterations``: schedules are read at it).
    `count`, when given, is each row's own 1-based update count (a ``[rows, 1]`` tensor): Adam
    uses it as ``t`` instead of ``step + 1``; the other rules ignore it.
    """

    name: str
    slot_names: tuple[str, ...]
    update: Callable


def rule_for(optimizer, purpose: str = "local steps") -> Rule:
    """The `Rule` of a tf_keras legacy SGD, Adagrad or Adam; `ConfigError` (naming `purpose`)
    for any other."""
    kind = type(optimizer).__name__
    if kind not in SUPPORTED or getattr(optimizer, "amsgrad", False) or \
            getattr(optimizer, "centered", False):
        raise ConfigError(f"Argument `optimizer` must be one of {', '.join(SUPPORTED)} "
                          f"(without amsgrad) for {purpose}. Received: optimizer={kind}")
    eps = float(getattr(optimizer, "epsilon", 0.0) or 0.0)
    if kind == "SGD":
        momentum = _tf.optimizer_hyper(optimizer, "momentum")
        if not callable(momentum) and not isinstance(momentum, tf.Variable) and \
                float(momentum) == 0.0:
            return Rule("SGD", (), lambda w, s, g, step, count=None: (
                w - learning_rate(optimizer, step) * g, []))
        nesterov = bool(optimizer.nesterov)

        def momentum_update(w, slots, g, step, count=None):
            lr, mu = learning_rate(optimizer, step), hyper(optimizer, "momentum", step)
            m = mu * slots[0] - lr * g
            return (w + mu * m - lr * g if nesterov else w + m), [m]

        return Rule("SGD", ("momentum",), momentum_update)
    if kind == "Adagrad":
        def adagrad(w, slots, g, step, count=None):
            a = slots[0] + g * g
            return w - learning_rate(optimizer, step) * g / (tf.sqrt(a) + eps), [a]

        return Rule("Adagrad", ("accumulator",), adagrad)

    def adam(w, slots, g, step, count=None):
        lr = learning_rate(optimizer, step)
        b1, b2 = hyper(optimizer, "beta_1", step), hyper(optimizer, "beta_2", step)
        t = tf.cast(step + 1, tf.float32) if count is None else tf.cast(count, tf.float32)
        m = b1 * slots[0] + (1 - b1) * g
        v = b2 * slots[1] + (1 - b2) * g * g
        lr_t = lr * tf.sqrt(1 - tf.pow(b2, t)) / (1 - tf.pow(b1, t))
        return w - lr_t * m / (tf.sqrt(v) + eps), [m, v]

    return Rule("Adam", ("m", "v"), adam)


def initial_slots(optimizer, rule: Rule) -> tuple[float, ...]:
    """The value each of `rule`'s slots starts at for a new parameter: Adagrad's
    ``initial_accumulator_value`` (from the optimizer's config), 0 for the others."""
    if rule.name == "Adagrad":
        return (float(optimizer.get_config().get("initial_accumulator_value", 0.1)),)
    return tuple(0.0 for _ in rule.slot_names)


def slots_of(optimizer, rule: Rule, variable) -> list:
    """The optimizer's slot variables of `variable`, in `rule`'s order."""
    return [optimizer.get_slot(variable, name) for name in rule.slot_names]


def apply_all(rule: Rule, values: Sequence, slots: Sequence, grads: Sequence, step):
    """`rule.update` over lists; a None gradient leaves its parameter and slots as they are."""
    out_values, out_slots = [], []
    for w, s, g in zip(values, slots, grads):
        if g is None:
            out_values.append(w)
            out_slots.append(list(s))
            continue
        w2, s2 = rule.update(w, list(s), tf.convert_to_tensor(g), step)
        out_values.append(w2)
        out_slots.append(s2)
    return out_values, out_slots
