"""Click logs over a huge id space with Zipf-distributed traffic, from a *planted* model.

Every example has `NUM_SLOTS` ids drawn from a Zipf (power-law) distribution over the ranks
``0 .. id_space - 1`` (rank r drawn with probability ~ 1 / (r + 1)^s), and `NUM_DENSE` dense
features. An id is its rank scrambled into all of int64 (splitmix64): ids are arbitrary 64-bit
values, as in real logs, so no table can be indexed by them directly. The `signal_ids` most
frequent ranks carry hidden N(0, 1) weights, the long tail none (rare ids say little):

    p(click) = sigmoid(sum_j w[rank_j] + x . beta + b)

so the best achievable AUC (the *oracle*: the AUC of the true logits) is known. Generated with
stateless RNGs from (stream, index): every worker makes its own stream, no download, and the
held-out set is the same everywhere. Plain TensorFlow: no tfps import.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from common.planted_clicks import AUC_BUCKETS, auc_from_histograms, histograms  # noqa: F401

NUM_SLOTS, NUM_DENSE = 4, 8
EVAL_STREAM = 1 << 20  # the held-out set's stream; training streams are worker ids
# splitmix64's increment and finalizer multipliers (ids: scrambled ranks).
_GOLDEN, _M1, _M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _mix(x):
    x = x + tf.constant(_GOLDEN, tf.uint64)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(30, tf.uint64)))
    x = x * tf.constant(_M1, tf.uint64)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(27, tf.uint64)))
    x = x * tf.constant(_M2, tf.uint64)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(31, tf.uint64)))


def rank_to_id(rank, seed: int):
    """The int64 id of each rank: a bijection of the ranks onto scattered 64-bit values."""
    salted = tf.cast(rank, tf.uint64) + tf.constant(seed * 1_000_003 + 1, tf.uint64)
    return tf.bitcast(_mix(salted), tf.int64)


def zipf_ranks(u, id_space: int, exponent: float):
    """Ranks in [0, id_space) from uniforms `u` (float64 in [0, 1)): the inverse CDF of a
    continuous power law x^-s on [1, id_space + 1), floored."""
    n1 = float(id_space + 1)
    if abs(exponent - 1.0) < 1e-9:
        x = tf.exp(u * np.log(n1))
    else:
        a = 1.0 - exponent
        x = tf.pow(1.0 + u * (n1 ** a - 1.0), 1.0 / a)
    return tf.clip_by_value(tf.cast(tf.floor(x), tf.int64) - 1, 0, id_space - 1)


def planted_model(seed: int, signal_ids: int):
    """The hidden weights (the same on every task): one per signal rank, the dense betas."""
    weights = tf.random.stateless_normal([signal_ids], seed=[seed, 1])
    beta = tf.random.stateless_normal([NUM_DENSE], seed=[seed, 2], stddev=0.5)
    return weights, beta, tf.constant(-1.0)


def make_batch(stream, index, batch_size: int, seed: int, id_space: int, exponent: float,
               signal_ids: int):
    """One batch: ids (int64), dense features, clicks, and the true logits (the oracle)."""
    weights, beta, bias = planted_model(seed, signal_ids)
    s = tf.stack([tf.cast(stream, tf.int32), tf.cast(index, tf.int32)])
    u = tf.random.stateless_uniform([batch_size, NUM_SLOTS], seed=s + [seed, 10],
                                    dtype=tf.float64)
    rank = zipf_ranks(u, id_space, exponent)
    signal = tf.where(rank < signal_ids, tf.gather(weights, tf.minimum(rank, signal_ids - 1)),
                      0.0)
    dense = tf.random.stateless_normal([batch_size, NUM_DENSE], seed=s + [seed, 20])
    logits = tf.reduce_sum(signal, 1) + tf.linalg.matvec(dense, beta) + bias
    clicks = tf.cast(tf.random.stateless_uniform([batch_size], seed=s + [seed, 30])
                     < tf.sigmoid(logits), tf.float32)
    return rank_to_id(rank, seed), dense, clicks, logits


def train_dataset(stream: int, batch_size: int, seed: int, id_space: int, exponent: float,
                  signal_ids: int):
    """An endless dataset of training batches for one stream (a worker's pipeline id)."""
    return tf.data.Dataset.range(1 << 62).map(
        lambda i: make_batch(stream, i, batch_size, seed, id_space, exponent, signal_ids),
        num_parallel_calls=2, deterministic=True).prefetch(2)


def eval_dataset(examples: int, seed: int, id_space: int, exponent: float, signal_ids: int,
                 batch_size: int = 1024):
    """The held-out set: the same batches on every task."""
    return tf.data.Dataset.range(examples // batch_size).map(
        lambda i: make_batch(EVAL_STREAM, i, batch_size, seed, id_space, exponent, signal_ids))
