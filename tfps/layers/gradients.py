"""Gradients for rows that are not variables: what a training step of `DynamicEmbedding`
layers records, and the push of each table's row updates to its ps tasks.

A `DynamicEmbedding` row is a value in a hash table, not a variable: a tape cannot
differentiate with respect to it. Inside `watch_rows(tape, step)`, every training lookup
watches the rows it returns on `tape` and records them; after ``tape.gradient(loss, [...,
*recorder.sources])`` the step calls ``recorder.push(row_gradients)``, which sums the gradients
of each table's ids (a table looked up twice in one step pushes once) and applies the row
optimizer on the ps tasks. `tfps.Trainer` does all this in every step; a custom loop can too:

>>> with tf.GradientTape() as tape, watch_rows(tape, step=0) as rows:  # doctest: +SKIP
...     loss = loss_fn(model(batch, training=True))
>>> dense, row_grads = tape.gradient(loss, (model.trainable_variables, rows.sources))
>>> rows.push(row_grads)                                                # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import threading

from tfps import _tf

tf = _tf.require()

__all__ = ["RowGradients", "current", "watch_rows"]

_LOCAL = threading.local()


class RowGradients:
    """The rows one training step looked up, per table, watched on its tape.

    Args:
      tape: the step's `tf.GradientTape`.
      step: the optimizer's update count before this step (an int64 tensor or int): the
        rows' "last seen" clock (TTL, LRU) and the step learning-rate schedules are read at.
    """

    def __init__(self, tape, step):
        self.tape = tape
        self.step = tf.cast(step, tf.int64)
        self._entries: list = []  # (tables, unique keys, rows)

    def record(self, tables, keys, rows) -> None:
        """Watches `rows` (the embeddings of unique `keys` in `tables`) for the gradient."""
        self.tape.watch(rows)
        self._entries.append((tables, keys, rows))

    @property
    def sources(self) -> list:
        """The watched rows, one tensor per lookup: differentiate the loss with respect to
        these (``tape.gradient(loss, recorder.sources)``) and `push` the result."""
        return [rows for _, _, rows in self._entries]

    @property
    def tables(self) -> list:
        seen, out = set(), []
        for tables, _, _ in self._entries:
            if id(tables) not in seen:
                seen.add(id(tables))
                out.append(tables)
        return out

    def push(self, grads) -> tf.Operation:
        """Applies each table's row optimizer to its rows' gradients (one per `sources`
        entry; None where the loss does not depend on a lookup), on the ps tasks."""
        by_table: dict = {}
        for (tables, keys, rows), grad in zip(self._entries, grads):
            if grad is None:
                continue
            keys_list, grads_list = by_table.setdefault(id(tables), (tables, [], []))[1:]
            keys_list.append(keys)
            grads_list.append(_dense(grad, tf.shape(rows)[0]))
        pushed = []
        for tables, keys_list, grads_list in by_table.values():
            keys, grads = keys_list[0], grads_list[0]
            if len(keys_list) > 1:  # the same table looked up twice: one update per id
                keys, where = tf.unique(tf.concat(keys_list, 0))
                grads = tf.math.unsorted_segment_sum(tf.concat(grads_list, 0), where,
                                                     tf.size(keys))
            pushed.append(tables.push(keys, grads, self.step))
        return tf.group(pushed)


def _dense(grad, rows) -> tf.Tensor:
    """A lookup's gradient as one row per id (a gather's gradient is IndexedSlices)."""
    if isinstance(grad, tf.IndexedSlices):
        return tf.math.unsorted_segment_sum(grad.values, grad.indices, rows)
    return tf.convert_to_tensor(grad)


@contextlib.contextmanager
def watch_rows(tape, step):
    """Inside the block, `DynamicEmbedding` training lookups record their rows on `tape`.

    Yields:
      The step's `RowGradients`.
    """
    stack = _LOCAL.__dict__.setdefault("stack", [])
    recorder = RowGradients(tape, step)
    stack.append(recorder)
    try:
        yield recorder
    finally:
        stack.pop()


def current() -> RowGradients | None:
    """The innermost active `RowGradients` of this thread, or None."""
    stack = getattr(_LOCAL, "stack", None)
    return stack[-1] if stack else None
