"""`DynamicEmbedding`: an embedding with no fixed vocabulary, its rows in hash tables on the
ps tasks that grow, admit and evict (tf_keras layer; `tfps.layers.keras3` has the Keras 3 one).

Keys are int64 ids of any value, or strings: no vocabulary size, no hashing into buckets.
Each id's row lives on one ps task (``shard = splitmix64(id) mod ps tasks``), created the first
time the id is admitted, and trained with the Trainer's optimizer, row by row.

Example (an in-process cluster; under `tfps-launch` use ``tfps.make_strategy()``):

>>> import tfps, tensorflow as tf
>>> strategy = tfps.make_strategy(tfps.in_process_cluster(num_ps=2, num_workers=1))
>>> def build():
...     ids = tf.keras.Input([3], dtype=tf.int64)
...     emb = tfps.layers.DynamicEmbedding(8, min_count=2, max_rows_per_shard=50_000)(ids)
...     return tf.keras.Model(ids, tf.keras.layers.Dense(1)(tf.keras.layers.Flatten()(emb)))
>>> def data(ctx):
...     ids = tf.random.stateless_uniform([64, 3], [ctx.input_pipeline_id, 0], maxval=2**62,
...                                       dtype=tf.int64) % 1000 * 7919   # any int64 values
...     return tf.data.Dataset.from_tensors((ids, tf.ones([64]))).repeat()
>>> trainer = tfps.Trainer(strategy=strategy, model=build, optimizer="adagrad",
...     learning_rate=0.1, dataset_fn=data, loss_fn=lambda m, b: tf.reduce_mean(
...         tf.square(tf.squeeze(m(b[0], training=True), 1) - b[1])),
...     options=tfps.TrainerOptions(steps_per_closure=10, log_every=0))
>>> trainer.train(100).step
100
>>> print(trainer.describe().splitlines()[-4])  # the DynamicEmbedding part  # doctest: +SKIP
dynamic table      shard  rows  waiting  bytes    device

See `DynamicEmbedding` for admission, eviction, concurrency and what each mode of the Trainer
does with it.
"""

from __future__ import annotations

import weakref

import tf_keras

from tfps import _tf, errors, validate
from tfps.errors import ConfigError
from tfps.layers import gradients
from tfps.layers._tables import ShardedTables
from tfps.layers.config import TableConfig, check_layer_arguments

tf = _tf.require()

__all__ = ["DynamicEmbedding", "TableLayer", "embed", "tables_of"]

# The layer's arguments (beyond `dim`) that `TableConfig` validates, in its order.
TABLE_ARGS = ("key_dtype", "min_count", "max_rows_per_shard", "ttl_steps", "policy",
              "evict_every", "initializer", "init_scale", "default_value", "seed")


def tables_of(model) -> list[ShardedTables]:
    """The tables of every `DynamicEmbedding` layer in `model` (tf_keras, Keras 3 or a
    `tf.Module`), in a stable order (its object graph's)."""
    found, seen = [], set()
    for obj in tf.train.TrackableView(model).descendants():
        if isinstance(obj, ShardedTables) and id(obj) not in seen:
            seen.add(id(obj))
            found.append(obj)
    return found


def _training(training, name: str) -> bool:
    if training is None or isinstance(training, bool):
        return bool(training)
    static = tf.get_static_value(training)
    if static is None:
        raise ConfigError(f"Argument `training` of DynamicEmbedding {name!r} must be known "
                          f"when the step is traced (a Python bool). Received: "
                          f"training={validate.describe(training)}")
    return bool(static)


def _check_ids(ids, tables: ShardedTables):
    if isinstance(ids, (tf.RaggedTensor, tf.SparseTensor)):
        raise ConfigError(f"Argument `ids` of DynamicEmbedding {tables.name!r} must be a dense "
                          f"tensor. Received: ids={type(ids).__name__}")
    ids = tf.convert_to_tensor(ids)
    if tables.key_dtype == tf.string:
        if ids.dtype != tf.string:
            raise ConfigError(f"Argument `ids` of DynamicEmbedding {tables.name!r} must be "
                              f"strings (key_dtype='string'). Received: ids of dtype "
                              f"{ids.dtype.name}")
        return ids
    if ids.dtype not in (tf.int64, tf.int32):
        raise ConfigError(f"Argument `ids` of DynamicEmbedding {tables.name!r} must be int64 "
                          f"or int32 (key_dtype='int64'). Received: ids of dtype "
                          f"{ids.dtype.name}")
    return tf.cast(ids, tf.int64)


def embed(tables: ShardedTables, ids, training, frozen: bool = False) -> tf.Tensor:
    """The lookup both layers run: ``ids.shape + [dim]`` float32 embeddings.

    Training (inside `tfps.layers.gradients.watch_rows`, which `tfps.Trainer` enters every
    step): count, admit, watch the rows for the gradient. Otherwise, and always for a
    `frozen` table (``trainable=False``): read only (an id without a row reads the default
    row; nothing is counted, admitted or updated)."""
    dim = tables.config.dim
    ids = _check_ids(ids, tables)
    shape = ids.shape.concatenate([dim])
    if not tables.created and tables.serving is None and _tf.keras_symbolic_build():
        return tf.zeros(tf.concat([tf.shape(ids), [dim]], 0))  # a Keras shape inference
    flat = tf.reshape(ids, [-1])
    if _training(training, tables.name) and not frozen:
        recorder = gradients.current()
        if recorder is None:
            raise ConfigError(
                f"DynamicEmbedding {tables.name!r} trains under tfps.Trainer, whose steps "
                f"apply its row updates (Keras fit and a plain tape cannot; a custom loop can "
                f"use tfps.layers.watch_rows). Received: training=True outside a Trainer step")
        keys, where, counts = tf.unique_with_counts(flat)
        rows = tables.train_lookup(keys, counts, recorder.step)
        recorder.record(tables, keys, rows)
    else:
        keys, where = tf.unique(flat)
        rows = tables.lookup(keys)
    out = tf.reshape(tf.gather(rows, where), tf.concat([tf.shape(ids), [dim]], 0))
    out.set_shape(shape)
    return out


def table_config(dim, kwargs: dict) -> TableConfig:
    """`TableConfig` from a layer's arguments; what is left must be Keras layer arguments
    the layer honours (`tfps.layers.config.check_layer_arguments`)."""
    config = TableConfig(dim=dim, **{k: kwargs.pop(k) for k in TABLE_ARGS if k in kwargs})
    check_layer_arguments(kwargs)
    return config


def layer_config(config: TableConfig) -> dict:
    return {"dim": config.dim, **{k: getattr(config, k) for k in TABLE_ARGS}}


class TableLayer:
    """What the tf_keras and the Keras 3 `DynamicEmbedding` share (a mixin before the Keras
    ``Layer`` class): the validated `TableConfig`, the tables, the lookup and the config."""

    def __init__(self, dim: int, **kwargs):
        config = table_config(dim, kwargs)
        super().__init__(**kwargs)
        self.table_config = config
        self.tables = ShardedTables(config, self.name)
        self.tables.owner = weakref.ref(self)  # `tables.frozen`: the layer's `trainable`

    def __call__(self, *args, **kwargs):
        with errors.surfaced():  # Keras wraps a ConfigError raised in `call`
            return super().__call__(*args, **kwargs)

    def call(self, ids, training=None):
        return embed(self.tables, ids, training, frozen=not self.trainable)

    def get_config(self) -> dict:
        return {**super().get_config(), **layer_config(self.table_config)}


class DynamicEmbedding(TableLayer, tf_keras.layers.Layer):
    """An embedding for ids with no fixed vocabulary, on hash tables on the ps tasks.

    ``ids`` (any shape, int64/int32 or strings) -> ``ids.shape + [dim]`` float32.

    **Storage.** One table per ps task (`tf.lookup.experimental.MutableHashTable`, created on
    that task); an id lives on shard ``splitmix64(id) mod ps tasks``. A row holds the
    embedding, the optimizer's slots for it (Adagrad's accumulator; Adam's m, v and the row's
    own update count t) and is created with `initializer` when its id is admitted.

    **Training** (`tfps.Trainer` only): each step looks up the distinct ids of the batch
    (counting them and admitting new ones on their ps), and after the gradient applies the
    Trainer's optimizer (SGD with or without momentum, Adagrad, Adam; learning rate and
    schedule as for the dense variables) to the touched rows only, on their ps. Admission:
    an id gets its own row at its `min_count`-th sighting; before that it reads
    `default_value` (not trained) and the table does not grow.

    **Concurrency.** Workers run asynchronously, as everywhere in PSS: a row's gradient is
    computed from the row as the worker read it and applied to the row as it is when the update
    arrives (the usual stale gradient). Every update of a shard runs under that shard's lock
    (a `tf.CriticalSection` on its ps), so **two concurrent updates of one row both apply, one
    after the other**: none is lost, and sighting counts stay exact. A hash table alone has no
    atomic update: without the lock, a read-modify-write of two workers interleaves and the
    later write drops the earlier update (docs/embeddings.md).

    **Failures.** As for variables: a closure re-run after a worker failure (TF runs closures
    at least once) counts its sightings and applies its row updates again; a lost ps loses its
    shard, and the job restarts from the last checkpoint (`tfps-launch` does it).

    **Eviction.** With `max_rows_per_shard` and/or `ttl_steps`, every `evict_every` steps (at
    the first closure boundary at or after each multiple), before every checkpoint and at the
    end of `train`, the chief waits for the closures in flight (as for a checkpoint) and, on
    each ps under its lock, drops the ids not seen in the last `ttl_steps` optimizer steps,
    then the rows beyond the cap (LRU: least recently seen first; LFU: fewest sightings first;
    ties by the other score, then by key hash). Ids waiting for admission are capped and
    expire the same way. An evicted id starts over (its count and row are gone). Checkpoints
    and exports never hold rows over the cap or past the TTL; between evictions a shard may
    exceed its cap by the rows admitted since.

    **Observability.** `tfps.Trainer.describe` lists rows, waiting ids and bytes per shard;
    each ``train |`` record carries ``rows``, ``admitted`` and ``evicted`` (per interval), and
    TensorBoard gets them per shard (``dynamic/<layer>/...``).

    **Checkpoints and export.** A checkpoint holds all shards' keys, rows (with their slots)
    and counts, concatenated: it restores exactly, into any number of ps tasks. Restored
    outside a strategy (an export), the layer becomes one local table of key -> embedding,
    unknown ids -> `default_value` (`tfps.layers.serving`).

    **Frozen tables.** With ``trainable=False`` (or a frozen model) the table is read only,
    in training steps too: lookups return the rows as they are (an id without a row reads
    `default_value`), and nothing is counted, admitted, updated or evicted. A Trainer reads
    ``trainable`` when it is built, and refuses to train after it changed.

    **Trainer modes.** `stack_steps`, `dedup_lookups` and `fuse_dense` work as for any model
    (exact). `accumulate_steps`, `read_every`, `local_steps` and `staleness_aware` are refused
    with a `ConfigError` naming the option: rows are read and updated on their ps at every
    step, which those modes exist to avoid. `tfps.keras.fit` refuses the model (tf_keras `fit`
    has no step hook for the row updates).

    Args:
      dim: embedding columns.
      **kwargs: the table's settings below (`TableConfig`) and Keras layer arguments
        (``name``, ...).

    Keyword Args:
      key_dtype: ``"int64"`` (int32 ids are widened) or ``"string"``.
      min_count: sightings before an id gets a row (1: at first sight).
      max_rows_per_shard: row cap per ps task, or None.
      ttl_steps: evict ids not seen for this many optimizer steps, or None.
      policy: ``"lru"`` or ``"lfu"`` under the cap (default ``"lru"``).
      evict_every: steps between evictions (default ``min(1000, ttl_steps)``).
      initializer: ``"uniform"`` (±`init_scale`, Keras's Embedding default), ``"normal"``,
        ``"zeros"``, computed from each key's hash (a row starts at the same value in every
        run and shard layout); or a callable ``(shape, dtype)`` (a Keras initializer).
      init_scale: scale of ``"uniform"`` / ``"normal"`` (default 0.05; refused with another
        initializer, which it would not scale).
      default_value: what ids without a row read: a float or `dim` floats.
      seed: seed of the hash initializers (default 0; refused with another initializer).
      **kwargs: Keras layer arguments it honours (``name``, ``trainable``, ``dtype`` float32
        only, input shapes, ``activity_regularizer``: `tfps.layers.config.LAYER_ARGUMENTS`);
        any other is refused by name.

    Raises:
      tfps.errors.ConfigError: a bad value or contradicting eviction settings (at
        construction); ids of the wrong dtype (at call).
    """

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape).concatenate([self.table_config.dim])
