"""Click logs from a *planted* logistic model, so the best possible AUC is known.

Every example has `NUM_SLOTS` categorical ids drawn from a long-tailed (log-uniform)
distribution over `num_ids` ids, each id with a hidden weight, and `NUM_DENSE` dense features
with hidden weights:

    p(click) = sigmoid(sum_j w[id_j] + x . beta + b)

The *oracle* AUC is the AUC of the true logits. Data are generated with stateless RNGs from
(stream, index), so every worker makes its own stream without a download and a held-out set is
the same everywhere. Plain TensorFlow and NumPy: the examples (which import tfps) and the
benchmarks' baselines (which must not) share it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

NUM_SLOTS, NUM_DENSE = 4, 8
# Ids carry weight by popularity rank: the SIGNAL_IDS most frequent have N(0, 1) weights, the
# long tail none (as in real logs, where rare ids say little).
SIGNAL_IDS = 5000
AUC_BUCKETS = 4096
EVAL_STREAM = 1 << 20  # the held-out set's stream; training streams are worker ids


def planted_model(seed: int, num_ids: int):
    """The hidden weights that generate the clicks (the same on every task)."""
    id_weights = tf.random.stateless_normal([num_ids], seed=[seed, 1])
    id_weights *= tf.cast(tf.range(num_ids) < SIGNAL_IDS, tf.float32)
    beta = tf.random.stateless_normal([NUM_DENSE], seed=[seed, 2], stddev=0.5)
    return id_weights, beta, tf.constant(-1.0)


def make_batch(stream, index, batch_size: int, seed: int, num_ids: int):
    """One batch: ids, dense features, click labels and the true logits (for the oracle)."""
    id_weights, beta, bias = planted_model(seed, num_ids)
    s = tf.stack([tf.cast(stream, tf.int32), tf.cast(index, tf.int32)])
    u = tf.random.stateless_uniform([batch_size, NUM_SLOTS], seed=s + [seed, 10])
    # Log-uniform ranks (popular ids are frequent), hashed over the table so popular rows
    # are spread across shards.
    rank = tf.cast(tf.floor(tf.exp(u * np.log(num_ids + 1.0))) - 1.0, tf.int64)
    ids = (rank * 2654435761) % num_ids
    dense = tf.random.stateless_normal([batch_size, NUM_DENSE], seed=s + [seed, 20])
    logits = tf.reduce_sum(tf.gather(id_weights, rank), 1) + tf.linalg.matvec(dense, beta) + bias
    clicks = tf.cast(tf.random.stateless_uniform([batch_size], seed=s + [seed, 30])
                     < tf.sigmoid(logits), tf.float32)
    return ids, dense, clicks, logits


def train_dataset(stream: int, batch_size: int, seed: int, num_ids: int, first: int = 0):
    """An endless dataset of training batches for one stream (a worker's pipeline id),
    from its batch `first` on (a resumed run passes the step it resumes from, so that it
    trains on batches it has not seen: input positions are not in checkpoints)."""
    return tf.data.Dataset.range(first, 1 << 62).map(
        lambda i: make_batch(stream, i, batch_size, seed, num_ids)).prefetch(2)


def eval_dataset(examples: int, seed: int, num_ids: int, batch_size: int = 1024):
    """The held-out set: the same batches on every task."""
    return tf.data.Dataset.range(examples // batch_size).map(
        lambda i: make_batch(EVAL_STREAM, i, batch_size, seed, num_ids))


def histograms(scores, clicks):
    """Positive and negative counts of `scores` in AUC_BUCKETS ascending buckets."""
    bucket = tf.clip_by_value(tf.cast(scores * AUC_BUCKETS, tf.int32), 0, AUC_BUCKETS - 1)
    pos = tf.math.unsorted_segment_sum(clicks, bucket, AUC_BUCKETS)
    return pos, tf.math.unsorted_segment_sum(1.0 - clicks, bucket, AUC_BUCKETS)


def auc_from_histograms(pos, neg) -> float:
    """AUC of scores binned into ascending buckets (ties inside a bucket count half)."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / max(pos.sum() * neg.sum(), 1.0))
