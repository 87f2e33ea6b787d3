"""Stable hashes of embedding keys: which shard a key lives on, and where its row starts.

A key's shard is ``mix64(fingerprint(key)) mod num_shards``: the same in every process and TF
version, so a checkpoint restores into any number of ps tasks (every key is re-partitioned by
the same function) and an export needs no shard map. `fingerprint` is the key itself for int64
keys and FarmHash Fingerprint64 for strings (`tf.strings.to_hash_bucket_fast`, the hash of
`tf.fingerprint`); `mix64` is splitmix64's finalizer, so that consecutive or patterned ids
spread evenly (a raw ``id mod num_shards`` puts every even id on one shard of two).

The hash initializers compute a row from its key and a seed, so a row starts at the same value
whichever shard admits it, in every run and after every restart.

>>> shard_index(tf.constant([1, 2, 3], tf.int64), 2).numpy()  # doctest: +SKIP
array([1, 0, 0], dtype=int32)
"""

from __future__ import annotations

import math

from tfps import _tf

tf = _tf.require()

__all__ = ["fingerprint", "hash_rows", "mix64", "shard_index"]

# splitmix64 (Steele, Lea, Flood 2014): the golden-ratio increment and the two multipliers of
# its finalizer (the "Mix13" variant of MurmurHash3's fmix64).
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
# FarmHash's 64-bit fingerprint reduced mod 2^63 - 1 (the largest bucket count TF accepts).
_STRING_BUCKETS = (1 << 63) - 1


def _u64(value: int) -> tf.Tensor:
    return tf.constant(value, tf.uint64)


def fingerprint(keys) -> tf.Tensor:
    """A uint64 per key: the int64 key's bits, or the string's FarmHash fingerprint."""
    if keys.dtype == tf.string:
        return tf.bitcast(tf.strings.to_hash_bucket_fast(keys, _STRING_BUCKETS), tf.uint64)
    return tf.bitcast(tf.cast(keys, tf.int64), tf.uint64)


def mix64(x) -> tf.Tensor:
    """splitmix64's finalizer on uint64 (wrapping arithmetic, every bit mixed)."""
    x = x + _u64(_GOLDEN)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(30))) * _u64(_M1)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(27))) * _u64(_M2)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(31)))


def shard_index(keys, num_shards: int) -> tf.Tensor:
    """The shard (int32 in ``[0, num_shards)``) of each key."""
    if num_shards == 1:
        return tf.zeros(tf.shape(keys), tf.int32)
    return tf.cast(tf.math.floormod(mix64(fingerprint(keys)), _u64(num_shards)), tf.int32)


def order_key(keys) -> tf.Tensor:
    """An int64 per key that orders keys the same way everywhere (eviction's tie-breaker)."""
    return tf.bitcast(mix64(fingerprint(keys)), tf.int64)


def _uniform(keys, columns: int, seed: int, salt: int) -> tf.Tensor:
    """``[len(keys), columns]`` floats in (0, 1), a function of (key, column, seed, salt)."""
    salted = mix64(_u64(seed) + _u64((salt * _GOLDEN) & (2**64 - 1)))
    base = mix64(tf.bitwise.bitwise_xor(fingerprint(keys), salted))
    column = tf.cast(tf.range(1, columns + 1), tf.uint64) * _u64(_M2)
    bits = tf.bitwise.right_shift(mix64(base[:, None] + column[None, :]), _u64(11))  # 53 bits
    return tf.cast((tf.cast(bits, tf.float64) + 0.5) * 2.0**-53, tf.float32)


def hash_rows(keys, dim: int, kind: str, scale: float, seed: int) -> tf.Tensor:
    """The initial embeddings ``[len(keys), dim]`` of `kind` ``"zeros"``, ``"uniform"`` (in
    ±scale) or ``"normal"`` (stddev scale, Box-Muller), computed from each key."""
    if kind == "zeros":
        return tf.zeros([tf.size(keys), dim], tf.float32)
    if kind == "uniform":
        return (2.0 * _uniform(keys, dim, seed, 1) - 1.0) * scale
    u1, u2 = _uniform(keys, dim, seed, 2), _uniform(keys, dim, seed, 3)
    return tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos(2.0 * math.pi * u2) * scale
