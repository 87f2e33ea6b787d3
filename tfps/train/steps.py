"""What runs on a worker: one replica step, and closures that pack several of them.

One replica step (Orbit's ``train_step``): read the staleness counter, run the loss under a
`tf.GradientTape` (the model's reads pull dense variables from their ps; embedding lookups pull
only their rows), take gradients per shard (`IndexedSlices` stay sparse all the way to the ps),
and push one update. A closure (`train_fn`) runs `num_steps` of them in a `tf.range` loop:
one `ClusterCoordinator.schedule` for many steps.

The closures do not advance the step counter: the chief counts each closure once, when its
result arrives (`tfps.train.loop`), because TF's coordinator may run a closure twice after a
worker failure (docs/tensorflow-notes.md, "At-least-once closures").
"""

from __future__ import annotations

from typing import Callable

from tfps import _tf
from tfps.train.staleness import Staleness

tf = _tf.require()

__all__ = ["StepFunctions", "static_shapes"]


def static_shapes(element_spec) -> bool:
    """True when every component of a dataset element has a fully defined shape."""
    return all(isinstance(spec, tf.TensorSpec) and spec.shape.is_fully_defined()
               for spec in tf.nest.flatten(element_spec))


class StepFunctions:
    """The replica step and the per-step closure of a model whose variables live on ps tasks.

    Args:
      strategy: the ParameterServerStrategy.
      model: passed to `loss_fn`.
      variables: the TF variables to train, one entry per shard of a sharded variable.
      loss_fn: ``loss_fn(model, batch) -> scalar loss``.
      optimizer: a tf_keras legacy optimizer (it places its slots beside each shard).
      staleness: the `Staleness` counter.
    """

    def __init__(self, *, strategy, model, variables: list, loss_fn: Callable, optimizer,
                 staleness: Staleness):
        self.strategy, self.model, self.variables = strategy, model, variables
        self.optimizer, self.staleness = optimizer, staleness
        self.loss_fn = loss_fn
        # Variable name -> "IndexedSlices" / the dense gradient's type, filled at trace time.
        self.gradient_types: dict[str, str] = {}
        # Elements of the per-worker dataset are stacks of this many batches (1: plain).
        self.stack = 1
        self.train_fn = tf.function(self._train_closure)
        self.traced_graph = None  # the FuncGraph of the last trace (`tfps.train.traffic`)

    # ------------------------------------------------------------------------ on a replica
    def replica_gradients(self, batch):
        """``(loss, gradients, counter read)`` of one batch; nothing is applied yet."""
        read_version = self.staleness.read()
        with tf.control_dependencies(Staleness.before_reads(read_version)), \
                tf.GradientTape() as tape:
            loss = tf.cast(self.loss_fn(self.model, batch), tf.float32)
        grads = tape.gradient(loss, self.variables)  # IndexedSlices stay sparse
        self.gradient_types = {v.name: type(g).__name__ for v, g in zip(self.variables, grads)}
        return loss, grads, read_version

    def apply(self, grads, read_version):
        """Pushes `grads` (None entries skipped); returns the update's staleness τ."""
        pairs = [(g, v) for g, v in zip(grads, self.variables) if g is not None]
        return self.staleness.count(grads, read_version,
                                    lambda: self.optimizer.apply_gradients(pairs))

    def _replica_step(self, batch):
        loss, grads, read_version = self.replica_gradients(batch)
        return loss, self.apply(grads, read_version)

    # ------------------------------------------------------------------------ closures
    def _train_closure(self, iterator, num_steps):
        """`num_steps` steps, each one pull -> gradient -> push. Returns (mean loss, τs)."""
        self.traced_graph = tf.compat.v1.get_default_graph()
        total = tf.constant(0.0)
        taus = tf.TensorArray(tf.int64, size=num_steps)
        for i in tf.range(num_steps):
            loss, tau = self.strategy.run(self._replica_step, args=(next_batch(iterator),))
            total += loss
            taus = taus.write(i, tau)
        return total / tf.cast(num_steps, tf.float32), taus.stack()

    # ------------------------------------------------------------------------ input
    def per_worker_iterator(self, coordinator, dataset_fn: Callable, stack: int = 1):
        """The per-worker iterator over `dataset_fn`'s batches.

        With ``stack > 1`` and static element shapes, each element stacks `stack` batches
        (``batch(stack, drop_remainder=True)``): PSS fetches every per-worker element through
        a MultiDeviceIterator at ~0.35 ms whatever its size, which would otherwise be most of
        a small model's step. `self.stack` says what was done (the decision needs the element
        spec, known when the coordinator traces the dataset function, before any closure).
        """
        strategy = self.strategy

        def stacked_dataset_fn(context):
            dataset = dataset_fn(context)
            if stack > 1 and static_shapes(dataset.element_spec) and \
                    _tf.gpus_per_worker(strategy) <= 1:
                self.stack = stack
                return dataset.batch(stack, drop_remainder=True)
            self.stack = 1
            return dataset

        def per_worker_dataset():
            return strategy.distribute_datasets_from_function(stacked_dataset_fn)

        return iter(coordinator.create_per_worker_dataset(per_worker_dataset))

    def micro_batches(self, iterator):
        """``micro_batch(i)`` for the batches of one closure: slices of one stacked element,
        or one fetch each."""
        if self.stack > 1:
            stacked = next_batch(iterator)
            return lambda i: tf.nest.map_structure(lambda t: t[i], stacked)
        return lambda i: next_batch(iterator)


def next_batch(iterator):
    """The next element of a per-worker iterator inside a closure, without PSS's partial-batch
    machinery (an Optional and a ``tf.cond`` per step: `_tf.next_without_partial_batch`).
    Training data repeats; at its end both paths raise ``OutOfRangeError``."""
    return _tf.next_without_partial_batch(iterator)
