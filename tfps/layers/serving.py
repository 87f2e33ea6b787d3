"""Serving copies of `DynamicEmbedding` tables: one local hash table per layer, key ->
embedding, unknown ids -> the default row. Plain TensorFlow loads them (no tfps).

* `copy_tables(trained, copy)`: gives each `DynamicEmbedding` of `copy` (the same model built
  outside the strategy, e.g. by `tfps.export`) a local table holding the trained layer's
  embeddings (read from every ps; optimizer slots and counts are not copied). A copy
  restored from a checkpoint outside the strategy gets its tables from the checkpoint instead.
* `serving_lookup(layer)`: a `tf.Module` with one table and a ``lookup(ids)`` function, on
  its own: ``tf.saved_model.save(serving_lookup(layer), path)``; then, anywhere,
  ``tf.saved_model.load(path).lookup(ids)`` -> ``ids.shape + [dim]``.

>>> module = serving_lookup(trained_layer)                        # doctest: +SKIP
>>> tf.saved_model.save(module, "/tmp/emb")                       # doctest: +SKIP
>>> tf.saved_model.load("/tmp/emb").lookup(tf.constant([7, 8], tf.int64)).shape  # doctest: +SKIP
TensorShape([2, 16])
"""

from __future__ import annotations

from tfps import _tf
from tfps.errors import ConfigError
from tfps.layers._tables import ShardedTables
from tfps.layers.dynamic_embedding import tables_of

tf = _tf.require()

__all__ = ["ServingLookup", "copy_tables", "serving_lookup"]


def copy_tables(trained, copy) -> list:
    """Fills every `DynamicEmbedding` table of `copy` from the one at the same place in
    `trained` (object-graph order); returns the copy's serving tables (`MutableHashTable`s:
    track them in what is saved, as `tfps.export` does, so a SavedModel carries them).

    Raises:
      tfps.errors.ConfigError: the two models do not have the same DynamicEmbedding layers.
    """
    source, target = tables_of(trained), tables_of(copy)
    if len(source) != len(target):
        raise ConfigError(f"Argument `copy` must have the DynamicEmbedding layers of the "
                          f"trained model: {len(source)} there, {len(target)} in the copy. "
                          f"Received: a copy of another model")
    for s, t in zip(source, target):
        if (s.config.dim, s.config.key_dtype) != (t.config.dim, t.config.key_dtype):
            raise ConfigError(f"Argument `copy` must have the DynamicEmbedding layers of the "
                              f"trained model: {s.name!r} is dim={s.config.dim} "
                              f"key_dtype={s.config.key_dtype!r}, the copy's {t.name!r} "
                              f"dim={t.config.dim} key_dtype={t.config.key_dtype!r}. Received: "
                              f"a copy of another model")
        if t.serving is None and not t.created:
            keys, embeddings = s.embeddings()
            with tf.device("/device:CPU:0"):
                t.serve(tf.identity(keys), tf.identity(embeddings))
    return [t.serving for t in target]


class ServingLookup(tf.Module):
    """One local table of a trained `DynamicEmbedding`: ``lookup(ids)`` -> embeddings."""

    def __init__(self, tables: ShardedTables):
        super().__init__(name=f"{tables.name}_serving")
        keys, embeddings = tables.embeddings()
        self.dim = tables.config.dim
        self.tables = ShardedTables(tables.config, tables.name)
        with tf.device("/device:CPU:0"):
            self.tables.serve(tf.identity(keys), tf.identity(embeddings))
        self.table = self.tables.serving  # tracked: the SavedModel carries it
        key_dtype = self.tables.key_dtype
        self.lookup = tf.function(self._lookup,
                                  input_signature=[tf.TensorSpec(None, key_dtype, name="ids")])
        self.size = tf.function(lambda: self.table.size(), input_signature=[])

    def _lookup(self, ids):
        flat = tf.reshape(ids, [-1])
        rows = self.table.lookup(flat)
        return tf.reshape(rows, tf.concat([tf.shape(ids), [self.dim]], 0))


def serving_lookup(layer) -> ServingLookup:
    """A `ServingLookup` of a trained `DynamicEmbedding` layer (or its tables). Call it
    outside any strategy's scope, with no closure updating the layer."""
    tables = layer if isinstance(layer, ShardedTables) else getattr(layer, "tables", None)
    if not isinstance(tables, ShardedTables):
        raise ConfigError(f"Argument `layer` must be a DynamicEmbedding layer. Received: "
                          f"layer={type(layer).__name__}")
    return ServingLookup(tables)
