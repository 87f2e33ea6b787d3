"""How `ShardedTables` persist: checkpoints (all shards concatenated, restorable into any
number of ps tasks), serving copies (one local table: key -> embedding, unknown ids -> the
default row) and snapshots for tests.

A checkpoint holds four tensors: ``keys`` and ``rows`` (``[embedding | slots | age]``) of
every admitted id, ``count_keys`` and ``counts`` (``[sightings, last step seen, admitted]``)
of every id counted. Restoring partitions them with the same stable shard function, so the
number of ps tasks may differ from the saving run's; rows saved with another optimizer keep
their embeddings and ages and start their slots over. Restored into tables that were never
created (a model built outside any strategy, as `python -m tfps.export` does), they become the
serving table.
"""

from __future__ import annotations

import numpy as np

from tfps import _tf
from tfps.errors import ConfigError

tf = _tf.require()

__all__ = ["TableSaving"]

COUNTS = 3  # columns of a count: sightings, last step seen, admitted (0/1)


class TableSaving:
    """The checkpoint, serving and snapshot side of `ShardedTables` (a mixin: it works on
    that class's shards, `_values` and `_counts`, and its partition helpers)."""

    def serve(self, keys, embeddings):
        """Makes this a local serving table (on this process's device) holding `embeddings`
        ``[n, dim]`` for `keys`; unknown keys read the default row. Returns the insert (an op
        when called while tracing, e.g. inside a checkpoint restore function).

        The serving table (`serving`, a plain `MutableHashTable`) is not a checkpoint
        dependency of this object: what saves a serving copy tracks it (`tfps.export`,
        `tfps.layers.serving`), and a restore that made it leaves no object unmatched."""
        if self.serving is None:
            with tf.init_scope():
                self.serving = tf.lookup.experimental.MutableHashTable(
                    self.key_dtype, tf.float32, self._default(), name=f"{self.name}_serving")
        return self.serving.insert(keys, embeddings)

    def embeddings(self):
        """``(keys, embeddings)`` of every admitted id, all shards (or the serving table)."""
        self._require()
        if self.serving is not None:
            return self.serving.export()
        keys, rows = self._export(self._values)
        return keys, rows[:, :self.config.dim]

    def snapshot(self) -> list[dict]:
        """Per shard, as NumPy: ``keys``, ``rows`` (``[embedding | slots | age]``) and the
        ``counts`` of ``count_keys`` (``[sightings, last step seen, admitted]``), each sorted
        by key. For tests and debugging: it reads every shard whole."""
        out = []
        for values, counts in zip(self._values, self._counts):
            shard = {}
            for (k_name, v_name), table in ((("keys", "rows"), values),
                                            (("count_keys", "counts"), counts)):
                keys, vals = (t.numpy() for t in table.export())
                order = np.argsort(keys, kind="stable")
                shard[k_name], shard[v_name] = keys[order], vals[order]
            out.append(shard)
        return out

    def _export(self, tables):
        parts = [t.export() for t in tables]
        return tf.concat([k for k, _ in parts], 0), tf.concat([v for _, v in parts], 0)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_tensors(self) -> dict:
        """Everything, all shards concatenated: rows (embeddings, slots, age) and counts."""
        if self.serving is not None and not self.created:
            return {}  # a serving copy: its table checkpoints itself
        if not self.created:
            # Nothing yet (a model built outside any strategy, about to be restored: TF asks
            # what it saves to find its tensors in the checkpoint).
            dim = self.config.dim
            return {"keys": tf.zeros([0], self.key_dtype), "rows": tf.zeros([0, dim + 1]),
                    "count_keys": tf.zeros([0], self.key_dtype),
                    "counts": tf.zeros([0, COUNTS], tf.int64)}
        keys, rows = self._export(self._values)
        count_keys, counts = self._export(self._counts)
        return {"keys": keys, "rows": rows, "count_keys": count_keys, "counts": counts}

    def restore_tensors(self, tensors: dict):
        """Partitions the saved rows and counts over this table's shards (any number: every
        key goes to ``shard_index(key, shards)``); replaces each shard's content."""
        if not tensors:  # a serving copy saved nothing of its own (its table did)
            return tf.no_op()
        keys, rows = tensors["keys"], tensors["rows"]
        rows = self._fit_width(rows)
        if not self.created:  # a copy outside the strategy: serve the embeddings
            return self.serve(keys, rows[:, :self.config.dim])
        ops = []
        for _name, tables, k, v in (("rows", self._values, keys, rows),
                                   ("counts", self._counts, tensors["count_keys"],
                                    tensors["counts"])):
            (parts, values), _ = self._split(k, v)
            for s, (table, device) in enumerate(zip(tables, self.devices)):
                with tf.device(device):
                    ops.append(tf.raw_ops.LookupTableImportV2(
                        table_handle=table.resource_handle, keys=parts[s], values=values[s]))
        return tf.group(ops)

    def _fit_width(self, rows) -> tf.Tensor:
        """Saved rows as this table lays them out. The embedding (first `dim` columns) and
        the age (last) always carry over; slots saved by another optimizer are reset."""
        dim, saved = self.config.dim, rows.shape[-1]
        if saved is not None and saved < dim + 1:
            raise ConfigError(f"DynamicEmbedding {self.name!r}: the checkpoint's rows have "
                              f"{saved} columns, fewer than dim + 1 = {dim + 1} (another "
                              f"dim?). Received: rows of width {saved}")
        if saved == self.width or not self.created:
            return rows

        def refit():
            n = tf.shape(rows)[0]
            slots = [tf.fill([n, dim], value) for value in self._slot_inits]
            return tf.concat([rows[:, :dim], *slots, rows[:, -1:]], 1)

        if saved is not None:
            return refit()
        # Restored inside TF's restore function (variables on several tasks), the width is
        # known only when it runs.
        return tf.cond(tf.shape(rows)[1] == self.width,
                       lambda: tf.reshape(rows, [-1, self.width]), refit)
