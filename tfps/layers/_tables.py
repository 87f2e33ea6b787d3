"""Hash-keyed embedding rows sharded over the ps tasks, with admission, eviction and
checkpoints: the storage behind `tfps.layers.DynamicEmbedding`.

Per shard (one per ps task, every op of it placed on that task's CPU):

* ``values``: `tf.lookup.experimental.MutableHashTable` key -> float32
  ``[embedding (dim) | optimizer slots (k x dim) | age]``, admitted ids only. ``age`` is 1 at
  admission and grows by one per update: > 0 marks a row present, and Adam's per-row ``t``;
* ``counts``: key -> int64 ``[sightings, last step seen, admitted]`` for every id seen while
  training, admitted or waiting (fewer than ``min_count`` sightings);
* ``lock``: a `tf.CriticalSection` (a mutex on the ps). Every read-modify-write of the shard
  (a training lookup that counts and admits, a row update, an eviction) runs under it, so two
  workers updating one row both apply, one after the other: no update is lost (a hash table
  has no atomic update op: without the lock, a lookup and an insert of two workers interleave
  and the later insert overwrites the earlier one's update).

A key's shard is `tfps.layers._hashing.shard_index` (stable everywhere). Checkpoints, serving
copies and snapshots are in `tfps.layers._saving`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfps import _tf
from tfps.errors import ConfigError
from tfps.layers import _hashing
from tfps.layers._saving import COUNTS as _COUNTS
from tfps.layers._saving import TableSaving
from tfps.layers.config import TableConfig

tf = _tf.require()

__all__ = ["ShardedTables"]

# Bytes a stored key is counted as (an int64; a string's own bytes are not counted).
_KEY_BYTES = 8


class ShardedTables(TableSaving, _tf.tensor_trackable()):
    """The rows of one `DynamicEmbedding`: created by `create` (the Trainer does it), or a
    local serving table (`serve`, or a restore into tables never created).

    Args:
      config: the validated `TableConfig`.
      name: the layer's name (for messages and table names).
    """

    def __init__(self, config: TableConfig, name: str):
        self.config, self.name = config, name
        self.key_dtype = tf.string if config.key_dtype == "string" else tf.int64
        self.devices: list[str] = []
        self._values: list = []
        self._counts: list = []
        self._locks: list = []
        self._rule, self._slot_inits = None, ()
        self.serving = None  # the local serving table, once made
        self.owner = None  # a weak reference to the layer (its `trainable`), if any
        self._evict_fn = self._sizes_fn = None

    # ------------------------------------------------------------------ creation
    @property
    def frozen(self) -> bool:
        """True when the layer that owns the table is not trainable: read only."""
        layer = self.owner() if self.owner is not None else None
        return layer is not None and not layer.trainable

    @property
    def created(self) -> bool:
        return bool(self._values)

    @property
    def num_shards(self) -> int:
        return len(self._values)

    @property
    def slot_count(self) -> int:
        return len(self._slot_inits)

    @property
    def width(self) -> int:
        return self.config.dim * (1 + self.slot_count) + 1

    def create(self, devices: Sequence[str], rule=None, slot_inits: Sequence[float] = ()):
        """Creates one shard per device (e.g. ``/job:ps/replica:0/task:1/device:CPU:0``).

        Args:
          devices: where the shards live.
          rule: the rows' update rule (`tfps.train.optim_math.Rule`); None: no training.
          slot_inits: each slot's initial value (one per slot of `rule`).
        """
        if self.created:
            return
        self._rule, self._slot_inits = rule, tuple(float(v) for v in slot_inits)
        with tf.init_scope():
            for s, device in enumerate(devices):
                with tf.device(device):
                    # Anonymous tables: a restarted chief gets fresh ones, never the previous
                    # chief's (a shared name would reattach to its rows on a surviving ps).
                    self._values.append(tf.lookup.experimental.MutableHashTable(
                        self.key_dtype, tf.float32, tf.zeros([self.width]), checkpoint=False,
                        name=f"{self.name}_rows_{s}", experimental_is_anonymous=True))
                    self._counts.append(tf.lookup.experimental.MutableHashTable(
                        self.key_dtype, tf.int64, tf.zeros([_COUNTS], tf.int64),
                        checkpoint=False, name=f"{self.name}_counts_{s}",
                        experimental_is_anonymous=True))
                    self._locks.append(tf.CriticalSection(name=f"{self.name}_lock_{s}"))
        self.devices = list(devices)

    def _default(self) -> tf.Tensor:
        return tf.constant(self.config.default_value, tf.float32, shape=[self.config.dim])

    def _require(self) -> None:
        if not (self.created or self.serving is not None):
            raise ConfigError(
                f"DynamicEmbedding {self.name!r} has no tables yet: train it with tfps.Trainer "
                f"(which creates them on the ps tasks), or restore a checkpoint into it outside "
                f"any strategy (a serving copy). Received: a lookup before either")

    # ------------------------------------------------------------------ partitions
    def _split(self, keys, *others):
        """Per shard: the keys (and `others` along them), and their positions."""
        if self.num_shards == 1:
            return [[keys], *[[t] for t in others]], None
        shard = _hashing.shard_index(keys, self.num_shards)
        positions = tf.dynamic_partition(tf.range(tf.size(keys)), shard, self.num_shards)
        return [tf.dynamic_partition(t, shard, self.num_shards) for t in (keys, *others)], \
            positions

    def _stitch(self, positions, parts) -> tf.Tensor:
        out = parts[0] if positions is None else tf.dynamic_stitch(positions, parts)
        return tf.ensure_shape(out, [None, self.config.dim])

    def _rows(self, s: int, keys) -> tf.Tensor:
        # A lookup on a captured table handle has no static shape inside a tf.function.
        return tf.ensure_shape(self._values[s].lookup(keys), [None, self.width])

    # ------------------------------------------------------------------ inside a closure
    def lookup(self, keys) -> tf.Tensor:
        """Embeddings ``[n, dim]`` of unique 1-D `keys` (the default row where none); reads
        only: no counting, no admission."""
        self._require()
        if self.serving is not None:
            return tf.ensure_shape(self.serving.lookup(keys), [None, self.config.dim])
        default = self._default()
        (parts,), positions = self._split(keys)
        out = []
        for s, device in enumerate(self.devices):
            with tf.device(device):
                rows = self._rows(s, parts[s])
                out.append(tf.where(rows[:, -1:] > 0, rows[:, :self.config.dim], default))
        return self._stitch(positions, out)

    def train_lookup(self, keys, counts, now) -> tf.Tensor:
        """A training lookup of unique 1-D `keys` seen `counts` times in this batch at step
        `now`: counts the sightings, admits the ids that reach ``min_count`` (their rows are
        created with the initializer), returns the embeddings (default row: not admitted)."""
        self._require()
        if not self.created:
            raise ConfigError(f"DynamicEmbedding {self.name!r} is a serving copy: it cannot "
                              f"train. Received: training=True")
        (parts, part_counts), positions = self._split(keys, tf.cast(counts, tf.int64))
        now = tf.cast(now, tf.int64)
        out = []
        for s, device in enumerate(self.devices):
            with tf.device(device):
                out.append(self._locks[s].execute(
                    lambda s=s: self._train_shard(s, parts[s], part_counts[s], now)))
        return self._stitch(positions, out)

    def _train_shard(self, s: int, keys, counts, now):
        dim = self.config.dim
        rows = self._rows(s, keys)
        status = tf.ensure_shape(self._counts[s].lookup(keys), [None, _COUNTS])
        present = rows[:, -1] > 0
        seen = status[:, 0] + counts
        admit = tf.logical_and(tf.logical_not(present), seen >= self.config.min_count)
        new_keys = tf.boolean_mask(keys, admit)
        new_rows = self._new_rows(new_keys)
        inserted = self._values[s].insert(new_keys, new_rows)
        noted = self._counts[s].insert(keys, tf.stack(
            [seen, tf.fill(tf.shape(seen), now), tf.cast(present | admit, tf.int64)], 1))
        emb = tf.where(present[:, None], rows[:, :dim], self._default())
        emb = tf.tensor_scatter_nd_update(emb, tf.where(admit), new_rows[:, :dim])
        with tf.control_dependencies([inserted, noted]):
            return tf.identity(emb)

    def _new_rows(self, keys) -> tf.Tensor:
        """``[embedding | slots at their initial values | age 1]`` for admitted `keys`."""
        config, n = self.config, tf.size(keys)
        if callable(config.initializer):
            emb = tf.cast(config.initializer(tf.stack([n, config.dim]), tf.float32), tf.float32)
            emb = tf.reshape(emb, [n, config.dim])
        else:
            emb = _hashing.hash_rows(keys, config.dim, config.initializer, config.init_scale,
                                     config.seed)
        slots = [tf.fill([n, config.dim], value) for value in self._slot_inits]
        return tf.concat([emb, *slots, tf.ones([n, 1])], 1)

    def push(self, keys, grads, step) -> tf.Operation:
        """Applies the row optimizer to unique `keys` with their summed gradients ``[n, dim]``
        on each shard's ps (rows evicted meanwhile, and ids without a row, are skipped).
        `step`: the optimizer's update count (schedules are read at it)."""
        if self._rule is None:
            raise ConfigError(f"DynamicEmbedding {self.name!r} has no row optimizer (tables "
                              f"made without one). Received: a gradient push")
        (parts, part_grads), _ = self._split(keys, grads)
        done = []
        for s, device in enumerate(self.devices):
            with tf.device(device):
                done.append(self._locks[s].execute(
                    lambda s=s: self._push_shard(s, parts[s], part_grads[s], step)))
        return tf.group(done)

    def _push_shard(self, s: int, keys, grads, step):
        dim = self.config.dim
        rows = self._rows(s, keys)
        present = rows[:, -1] > 0
        keys, rows, grads = (tf.boolean_mask(t, present) for t in (keys, rows, grads))
        age = rows[:, -1:]
        slots = [rows[:, dim * (1 + i):dim * (2 + i)] for i in range(self.slot_count)]
        emb, slots = self._rule.update(rows[:, :dim], slots, grads, step, count=age)
        written = self._values[s].insert(keys, tf.concat([emb, *slots, age + 1.0], 1))
        with tf.control_dependencies([written]):
            return tf.size(keys)

    # ------------------------------------------------------------------ on the chief
    def evict(self, now: int) -> np.ndarray:
        """Applies the TTL and the cap on every shard now (each under its lock); returns
        ``[shards, 2]``: rows evicted and waiting ids dropped, per shard."""
        if not self.created or not self.config.evicts:
            return np.zeros([self.num_shards, 2], np.int64)
        if self._evict_fn is None:
            self._evict_fn = tf.function(self._evict_all)
        return self._evict_fn(tf.constant(now, tf.int64)).numpy()

    def _evict_all(self, now):
        out = []
        for s, device in enumerate(self.devices):
            with tf.device(device):
                out.append(self._locks[s].execute(lambda s=s: self._evict_shard(s, now)))
        return tf.stack(out)

    def _evict_shard(self, s: int, now):
        config = self.config
        keys, status = self._counts[s].export()
        status = tf.ensure_shape(status, [None, _COUNTS])
        count, last, admitted = status[:, 0], status[:, 1], status[:, 2] > 0
        drop = tf.zeros_like(admitted)
        if config.ttl_steps is not None:
            drop = last < now - config.ttl_steps
        if config.max_rows_per_shard is not None:
            cap = config.max_rows_per_shard
            order = self._eviction_order(keys, count, last)
            for group in (admitted, tf.logical_not(admitted)):  # rows, then waiting ids
                drop = drop | _over_cap(order, tf.logical_and(group, tf.logical_not(drop)), cap)
        gone = tf.boolean_mask(keys, drop)
        removed = [self._values[s].remove(gone), self._counts[s].remove(gone)]
        with tf.control_dependencies(removed):
            return tf.stack([tf.reduce_sum(tf.cast(drop & admitted, tf.int64)),
                             tf.reduce_sum(tf.cast(drop & ~admitted, tf.int64))])

    def _eviction_order(self, keys, count, last) -> tf.Tensor:
        """Indices from first to last evicted: by the policy's score (LRU: last step seen,
        LFU: sightings), then the other, then the key's hash: the same order everywhere."""
        primary, secondary = (last, count) if self.config.eviction_policy == "lru" else \
            (count, last)
        order = tf.argsort(_hashing.order_key(keys), stable=True)
        for score in (secondary, primary):
            order = tf.gather(order, tf.argsort(tf.gather(score, order), stable=True))
        return order

    def sizes(self) -> np.ndarray:
        """``[shards, 2]``: rows (admitted ids) and ids counted (admitted or waiting)."""
        if not self.created:
            return np.zeros([0, 2], np.int64)
        if self._sizes_fn is None:
            self._sizes_fn = tf.function(lambda: tf.stack([
                tf.stack([v.size(), c.size()]) for v, c in zip(self._values, self._counts)]))
        return self._sizes_fn().numpy()

    def shard_bytes(self, sizes: np.ndarray) -> list[int]:
        """Bytes each shard stores (rows and counts; keys counted as 8 bytes each)."""
        row, count = 4 * self.width + _KEY_BYTES, 8 * _COUNTS + _KEY_BYTES
        return [int(r) * row + int(c) * count for r, c in sizes]


def _over_cap(order, eligible, cap: int) -> tf.Tensor:
    """A mask of the eligible entries beyond `cap`, first in `order` first."""
    ranked = tf.gather(eligible, order)
    excess = tf.maximum(tf.reduce_sum(tf.cast(ranked, tf.int64)) - cap, 0)
    # The first `excess` eligible entries in eviction order go.
    position = tf.cumsum(tf.cast(ranked, tf.int64))
    chosen = tf.cast(tf.logical_and(ranked, position <= excess), tf.int32)
    return tf.scatter_nd(order[:, None], chosen, tf.shape(eligible)) > 0
