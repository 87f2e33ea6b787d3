"""The input of a ``dataset_fn``: a per-worker dataset, as ParameterServerStrategy reads one.

``dataset_fn(input_context)`` builds a repeating dataset of batches on every worker
(`ClusterCoordinator.create_per_worker_dataset`); each closure reads the next batches of its
worker's iterator. When the element shapes are static, the closure's batches are stacked into
one element (``batch(steps_per_closure, drop_remainder=True)``): PSS fetches a per-worker
element through a MultiDeviceIterator at a fixed cost whatever its size, which would otherwise
be most of a small model's step (docs/tensorflow-notes.md, "Per-worker iterators and partial
batches", has the cost). A closure of fewer steps than the stack uses the first batches of
its element.

Failure semantics: a closure re-run after a worker failure reads the next batches of the
iterator of the worker it re-runs on, not the batches of its first run; an input whose feeds
name records (`tfps.data.feed`) reads the same ones again.
"""

from __future__ import annotations

from collections.abc import Callable

from tfps import _tf
from tfps.data.feed import Feed
from tfps.errors import ConfigError

tf = _tf.require()

__all__ = ["IteratorInput", "closure_input", "static_shapes"]


def closure_input(*, dataset_fn, data, stack_steps: bool):
    """The Trainer's input: `data` (a `ClosureInput`, e.g. `tfps.data.FileInput`) or an
    `IteratorInput` over `dataset_fn`; exactly one of them.

    Raises:
      ConfigError: both or neither are given, or `dataset_fn` is not callable.
    """
    if (dataset_fn is None) == (data is None):
        raise ConfigError(f"Pass one of `dataset_fn` (a per-worker dataset) and `data` (e.g. "
                          f"tfps.data.FileInput). Received: dataset_fn={dataset_fn!r:.60}, "
                          f"data={data!r:.60}")
    if data is not None:
        missing = [m for m in ("feed", "batches", "finished", "start") if not hasattr(data, m)]
        if missing or not hasattr(data, "element_spec"):
            raise ConfigError(f"Argument `data` must be a tfps.data.feed.ClosureInput (e.g. "
                              f"tfps.data.FileInput). Received: data={data!r:.80}")
        return data
    if not callable(dataset_fn):
        raise ConfigError(f"Argument `dataset_fn` must be callable. "
                          f"Received: dataset_fn={dataset_fn!r}")
    return IteratorInput(dataset_fn, stack_steps)


def static_shapes(element_spec) -> bool:
    """True when every component of a dataset element has a fully defined shape."""
    return all(isinstance(spec, tf.TensorSpec) and spec.shape.is_fully_defined()
               for spec in tf.nest.flatten(element_spec))


class IteratorInput:
    """`tfps.data.feed.ClosureInput` over a ``dataset_fn``.

    Args:
      dataset_fn: ``dataset_fn(input_context) -> tf.data.Dataset`` of batches; must repeat.
      stack_steps: stack a closure's batches into one element when the shapes are static.
    """

    def __init__(self, dataset_fn: Callable, stack_steps: bool = True):
        self._dataset_fn = dataset_fn
        self._stack_steps = stack_steps
        self._spec = None
        self._iterator = None
        self._stack = 1       # batches per element, as made
        self._requested = None
        self._kept: list = []  # replaced iterators, never destroyed (docs/tensorflow-notes.md)

    @property
    def element_spec(self):
        if self._spec is None:
            self._spec = self._dataset_fn(tf.distribute.InputContext()).element_spec
        return self._spec

    @property
    def stack(self) -> int:
        """Batches per element of the current iterator."""
        return self._stack

    def start(self, coordinator, strategy, steps_per_closure: int) -> None:
        want = steps_per_closure if self._stack_steps else 1
        if self._iterator is not None and self._requested == want:
            return
        if self._iterator is not None:
            self._kept.append(self._iterator)
        made = {"stack": 1}

        def stacked_dataset_fn(context):
            dataset = self._dataset_fn(context)
            if want > 1 and static_shapes(dataset.element_spec) and \
                    _tf.gpus_per_worker(strategy) <= 1:
                made["stack"] = want
                return dataset.batch(want, drop_remainder=True)
            return dataset

        def per_worker_dataset():
            return strategy.distribute_datasets_from_function(stacked_dataset_fn)

        self._iterator = iter(coordinator.create_per_worker_dataset(per_worker_dataset))
        self._stack, self._requested = made["stack"], want

    def feed(self, num_steps: int) -> Feed:
        return Feed(args=(self._iterator, self._stack), steps=num_steps)

    def batches(self, args, num_steps, replay: bool = False) -> Callable:
        iterator, stack = args
        if stack > 1:
            stacked = _next(iterator)
            return lambda i: tf.nest.map_structure(lambda t: t[i], stacked)
        if not replay:
            return lambda i: _next(iterator)
        return _buffered(iterator, num_steps, self.element_spec)

    def finished(self, feed: Feed) -> None:
        pass


def _next(iterator):
    """The next element of a per-worker iterator inside a closure, without PSS's partial-batch
    machinery (an Optional and a ``tf.cond`` per step: `_tf.next_without_partial_batch`).
    Training data repeats; at its end both paths raise ``OutOfRangeError``."""
    return _tf.next_without_partial_batch(iterator)


def _buffered(iterator, num_steps, spec) -> Callable:
    """``batch_at(i)`` over `num_steps` batches fetched first into TensorArrays: each may be
    read any number of times (shapes may differ from batch to batch)."""
    flat = tf.nest.flatten(spec)
    arrays = [tf.TensorArray(s.dtype, size=num_steps, infer_shape=False) for s in flat]

    def body(i, arrays):
        batch = tf.nest.flatten(_next(iterator))
        return i + 1, [a.write(i, t) for a, t in zip(arrays, batch)]

    _, arrays = tf.while_loop(lambda i, _: i < num_steps, body, (tf.constant(0), arrays))

    def batch_at(i):
        parts = [a.read(i) for a in arrays]
        for part, s in zip(parts, flat):
            part.set_shape(s.shape)
        return tf.nest.pack_sequence_as(spec, parts)

    return batch_at
