"""Exactly-once evaluation through a `ClusterCoordinator`.

The eval data are split into shards; each shard is one scheduled closure that runs the model
over every batch of its shard on a worker and returns per-batch sums added up. A closure that
TF's coordinator re-runs after a worker failure re-evaluates its whole shard, and the chief keeps
exactly one result per shard: every batch counts once, whatever fails.

>>> evaluator = ExactEvaluator(strategy=strategy, model=model, num_shards=8,  # doctest: +SKIP
...     dataset_fn=lambda ctx: eval_batches, eval_fn=lambda m, b: {"count": ...})
>>> evaluator()  # doctest: +SKIP
{'count': 10000.0, ...}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tfps import _tf
from tfps.strategy import make_coordinator

__all__ = ["ExactEvaluator", "reduce_sums"]


class ExactEvaluator:
    """Evaluates `model` over all of `dataset_fn`'s data, each batch exactly once.

    Args:
      strategy: the ParameterServerStrategy the model's variables live under.
      model: passed to `eval_fn`.
      dataset_fn: ``dataset_fn(input_context) -> finite dataset of batches``. It must give
        the *whole* eval set on every worker (do not shard it by
        ``input_context.input_pipeline_id``): a shard's closure runs on whichever worker is
        free and keeps only its shard of that worker's dataset.
      eval_fn: ``eval_fn(model, batch) -> {name: per-batch sum}`` (scalars or fixed-shape
        tensors, e.g. histogram counts).
      num_shards: closures per evaluation (more shards: finer load balance and smaller
        re-runs after a failure; each costs one scheduling round trip). Never more than the
        eval set has batches, when its size is known (`Dataset.cardinality`): TF's auto-sharding
        refuses to make empty shards ("Could not apply FILE based sharding").

    `dataset_fn` may also be a `tfps.data.FileInput`: then each shard is a range of its records
    (in file order), which the shard's closure reads itself (`FileInput.eval_dataset`), and no
    worker reads the records of another shard.
    """

    def __init__(self, *, strategy, model, dataset_fn: Callable, eval_fn: Callable,
                 num_shards: int):
        self._strategy = strategy
        self._coordinator = make_coordinator(strategy)
        self._model, self._dataset_fn, self._eval_fn = model, dataset_fn, eval_fn
        self.num_shards = num_shards
        self._sized = False
        self._per_worker = None
        self._closure = None

    def __call__(self) -> dict[str, Any]:
        """Runs one evaluation; returns `reduce_sums` of the summed `eval_fn` outputs."""
        fn = self._closure_fn()
        if hasattr(self._dataset_fn, "eval_dataset"):  # a tfps.data.FileInput
            shards = self._dataset_fn.eval_shards(self.num_shards)
            args = [self._dataset_fn.eval_args(shards, i) for i in range(shards)]
            return _summed([self._coordinator.schedule(fn, args=a) for a in args])
        data = self._data()
        if not self._sized:  # the set's size, from a copy built here (no data is read)
            tf = _tf.require()
            batches = int(self._dataset_fn(tf.distribute.InputContext()).cardinality())
            self.num_shards = min(self.num_shards, batches) if batches > 0 else self.num_shards
            self._sized = True
        return _summed([self._coordinator.schedule(fn, args=(data, self.num_shards, i))
                        for i in range(self.num_shards)])

    def _data(self):
        if self._per_worker is None:
            strategy, fn = self._strategy, self._dataset_fn
            self._per_worker = self._coordinator.create_per_worker_dataset(
                lambda: strategy.distribute_datasets_from_function(fn)).build()
        return self._per_worker

    def _closure_fn(self):
        tf = _tf.require()

        if self._closure is not None:
            return self._closure
        model, eval_fn = self._model, self._eval_fn

        def zeros_like_outputs(spec):
            outputs = tf.function(lambda b: eval_fn(model, b)).get_concrete_function(spec)
            return tf.nest.map_structure(lambda t: tf.zeros(t.shape, t.dtype),
                                         outputs.structured_outputs)

        @tf.function
        def eval_shard(*args):
            if hasattr(self._dataset_fn, "eval_dataset"):  # the shard's records, read here
                # A loop of steps, not over a dataset: a dataset's loop body that reads
                # variables on ps is a multi-device function, whose handle TF cannot release
                # on a remote worker (an error line per closure, function_handle_cache.cc).
                batch_at, num_batches = self._dataset_fn.eval_dataset(args)
                acc = zeros_like_outputs(self._dataset_fn.element_spec)
                for i in tf.range(num_batches):
                    acc = tf.nest.map_structure(tf.add, acc, eval_fn(model, batch_at(i)))
                return acc
            # The per-worker value is a distributed dataset; auto_shard shards its source by
            # file where it can and by element otherwise (input_ops.auto_shard_dataset), as
            # tf_keras's exact evaluation does.
            dataset, num_shards, index = args
            dataset = dataset.auto_shard(num_shards, index)
            acc = zeros_like_outputs(dataset.element_spec)
            for batch in dataset:
                acc = tf.nest.map_structure(tf.add, acc, eval_fn(model, batch))
            return acc

        self._closure = eval_shard
        return eval_shard


def _summed(remotes) -> dict:
    """The shards' results added up (`reduce_sums`)."""
    parts = [r.fetch() for r in remotes]
    return reduce_sums({k: np.sum([np.asarray(p[k]) for p in parts], axis=0) for k in parts[0]})


def reduce_sums(sums: dict) -> dict:
    """With a ``count`` entry, every other scalar sum becomes a mean (sum / count)."""
    count = sums.get("count")
    if count is None:
        return sums
    return {k: (v / count if k != "count" and np.ndim(v) == 0 else v) for k, v in sums.items()}
