"""Staleness: how many updates other workers applied between a step's read and its write.

A version counter lives on ps beside the model. Each step reads it *before* the model's
variables and increments it *after* its gradient exists; the difference, minus one, is the
step's staleness τ. With ``TrainerOptions(staleness_aware=True)`` the step's learning rate is
scaled by 1 / max(1, τ) (Zhang et al., IJCAI 2016): exact for SGD and momentum, partly
normalised away by Adam and Adagrad.
"""

from __future__ import annotations

from tfps import _tf

tf = _tf.require()

__all__ = ["Staleness"]


class Staleness:
    """The update counter and the learning-rate scale of the update being traced.

    Create under the strategy's scope (the counter must live on ps).

    Args:
      enabled: measure τ and scale the learning rate; when False, `read` gives None and
        `count` gives τ = 0 without touching ps.
      optimizer: a tf_keras legacy optimizer whose learning rate gets scaled (when enabled).
    """

    def __init__(self, enabled: bool, optimizer):
        self.enabled = enabled
        self.version = tf.Variable(0, dtype=tf.int64, trainable=False, name="version")
        # The scale of the update being traced: a tensor of that closure, 1.0 otherwise.
        self._scale = 1.0
        if enabled:
            self._wrap_learning_rate(optimizer)

    def _wrap_learning_rate(self, optimizer):
        """Makes the optimizer's learning rate ``base(step) * scale``."""
        base = _tf.optimizer_hyper(optimizer, "learning_rate")  # float, schedule or variable

        def learning_rate():
            lr = base
            if callable(lr) and not isinstance(lr, tf.Variable):  # a schedule: at the step
                lr = lr(tf.cast(optimizer.iterations, tf.float32))
            return tf.cast(lr, tf.float32) * self._scale

        # OptimizerV2 calls a callable hyperparameter each time it reads it, so the scale
        # traced into each closure applies to that closure's update only.
        _tf.set_optimizer_hyper(optimizer, "learning_rate", learning_rate)

    def read(self):
        """The counter before this step's reads (a tensor), or None when disabled."""
        return self.version.read_value() if self.enabled else None

    @staticmethod
    def before_reads(read_version) -> list:
        """Control dependencies that order the counter's read before the model's reads:
        nothing else orders two reads of different resources inside a tf.function, and a
        late read would measure no staleness."""
        return [] if read_version is None else [read_version]

    def count(self, grads, read_version, apply_fn):
        """Counts this update (once its gradient exists), then `apply_fn()` with the scaled
        learning rate in effect. Returns τ (0 when disabled), after the update."""
        if not self.enabled:
            update = apply_fn()
            # τ = 0, after the update: a control dependency on τ orders after the push.
            with tf.control_dependencies([] if update is None else [update]):
                return tf.constant(0, tf.int64)
        # Count only once the gradient exists; otherwise the increment may run right after the
        # read (they touch the same resource) and τ would always be 0.
        computed = [g.values if isinstance(g, tf.IndexedSlices) else g
                    for g in grads if g is not None]
        with tf.control_dependencies(computed):
            tau = self.version.assign_add(1, read_value=True) - 1 - read_version
        self._scale = 1.0 / tf.cast(tf.maximum(tau, 1), tf.float32)
        try:
            update = apply_fn()
        finally:
            self._scale = 1.0
        with tf.control_dependencies([] if update is None else [update]):
            return tf.identity(tau)
