r"""Click-through prediction with a large embedding table sharded over the ps tasks.

The data come from a *planted* logistic model, generated on each worker (no download): every
example has 4 categorical ids drawn from a long-tailed (log-uniform) distribution over
`--num_ids` ids, each id with a hidden weight, plus 8 dense features with hidden weights:

    p(click) = sigmoid(sum_j w[id_j] + x . beta + b)

so the best achievable AUC (the *oracle*: the AUC of the true logits) is known. The model is a
tf_keras embedding table (`--num_ids` x `--embedding_dim`, sharded over the ps tasks) + an MLP
(256-128-1), trained by `tfps.Trainer` with Adagrad; evaluation is exactly-once over a fixed
held-out set, with AUC from score histograms summed over the shards.

    tfps-launch --num-ps 2 --num-workers 2 examples/recsys.py --train_steps=2000

Last line: ``result: auc=<float> oracle_auc=<float> steps=<int> start_step=<int>``.
Run again with the same ``--model_dir`` and more ``--train_steps`` to resume.
"""

from absl import app, flags, logging

import tfps  # first: binds tf.keras to tf_keras and sets GRPC_FAIL_FAST

import numpy as np
import tensorflow as tf

FLAGS = flags.FLAGS
flags.DEFINE_integer("train_steps", 2000, "Total training steps (resuming counts earlier ones).")
flags.DEFINE_integer("batch_size", 512, "Examples per step.")
flags.DEFINE_integer("num_ids", 100_000, "Rows of the embedding table.")
flags.DEFINE_integer("embedding_dim", 16, "Columns of the embedding table.")
flags.DEFINE_float("learning_rate", 0.2, "Adagrad learning rate.")
flags.DEFINE_string("model_dir", None, "Checkpoints + TensorBoard; resumes from it.")
flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.")
flags.DEFINE_integer("steps_per_closure", 0, "Steps per scheduled closure; 0 = measure.")
flags.DEFINE_integer("accumulate_steps", 1, "Micro-batches per update (local accumulation).")
flags.DEFINE_bool("staleness_aware", False, "Scale each update's lr by 1/max(1, staleness).")
flags.DEFINE_integer("eval_examples", 16_384, "Held-out examples for the AUC.")
flags.DEFINE_integer("log_every", 200, "Steps between progress records.")
flags.DEFINE_integer("seed", 0, "Seed of the planted model and the data.")

NUM_SLOTS, NUM_DENSE = 4, 8
SIGNAL_IDS = 5000
AUC_BUCKETS = 4096
EVAL_STREAM = 1 << 20  # the held-out set's seed stream; training streams are worker ids


def planted_model(seed, num_ids):
    """The hidden weights that generate the clicks (same on every task: stateless RNG).

    Ids carry weight by popularity rank: the `SIGNAL_IDS` most frequent ids have N(0, 1)
    weights, the long tail none (as in real logs, where rare ids say little). Every id still
    occurs, so the whole table is trained.
    """
    id_weights = tf.random.stateless_normal([num_ids], seed=[seed, 1])
    id_weights *= tf.cast(tf.range(num_ids) < SIGNAL_IDS, tf.float32)
    beta = tf.random.stateless_normal([NUM_DENSE], seed=[seed, 2], stddev=0.5)
    return id_weights, beta, tf.constant(-1.0)


def make_batch(stream, index, batch_size, seed, num_ids):
    """One batch: ids, dense features, click labels and the true logits (for the oracle)."""
    id_weights, beta, bias = planted_model(seed, num_ids)
    s = tf.stack([tf.cast(stream, tf.int32), tf.cast(index, tf.int32)])
    u = tf.random.stateless_uniform([batch_size, NUM_SLOTS], seed=s + [seed, 10])
    # Log-uniform ranks (popular ids are frequent, as in real logs), hashed over the table so
    # popular rows are spread across the shards.
    rank = tf.cast(tf.floor(tf.exp(u * np.log(num_ids + 1.0))) - 1.0, tf.int64)
    ids = (rank * 2654435761) % num_ids
    dense = tf.random.stateless_normal([batch_size, NUM_DENSE], seed=s + [seed, 20])
    logits = tf.reduce_sum(tf.gather(id_weights, rank), 1) + tf.linalg.matvec(dense, beta) + bias
    clicks = tf.cast(tf.random.stateless_uniform([batch_size], seed=s + [seed, 30])
                     < tf.sigmoid(logits), tf.float32)
    return ids, dense, clicks, logits


def train_dataset_fn(ctx):
    stream = ctx.input_pipeline_id
    return tf.data.Dataset.range(1 << 62).map(
        lambda i: make_batch(stream, i, FLAGS.batch_size, FLAGS.seed, FLAGS.num_ids)
    ).prefetch(2)


def eval_dataset_fn(ctx):
    del ctx  # every worker sees the whole set; the Trainer shards it exactly once
    num_batches = FLAGS.eval_examples // 1024
    return tf.data.Dataset.range(num_batches).map(
        lambda i: make_batch(EVAL_STREAM, i, 1024, FLAGS.seed, FLAGS.num_ids))


def build_model():
    ids = tf.keras.Input([NUM_SLOTS], dtype=tf.int64)
    dense = tf.keras.Input([NUM_DENSE])
    emb = tf.keras.layers.Embedding(FLAGS.num_ids, FLAGS.embedding_dim, name="ids")(ids)
    h = tf.keras.layers.Concatenate()([tf.keras.layers.Flatten()(emb), dense])
    h = tf.keras.layers.Dense(256, activation="relu")(h)
    h = tf.keras.layers.Dense(128, activation="relu")(h)
    return tf.keras.Model([ids, dense], tf.keras.layers.Dense(1)(h))


def loss_fn(model, batch):
    ids, dense, clicks, _ = batch
    logits = tf.squeeze(model([ids, dense], training=True), 1)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(clicks, logits))


def _histograms(scores, clicks):
    bucket = tf.clip_by_value(tf.cast(scores * AUC_BUCKETS, tf.int32), 0, AUC_BUCKETS - 1)
    pos = tf.math.unsorted_segment_sum(clicks, bucket, AUC_BUCKETS)
    return pos, tf.math.unsorted_segment_sum(1.0 - clicks, bucket, AUC_BUCKETS)


def eval_fn(model, batch):
    ids, dense, clicks, true_logits = batch
    logits = tf.squeeze(model([ids, dense], training=False), 1)
    pos, neg = _histograms(tf.sigmoid(logits), clicks)
    opos, oneg = _histograms(tf.sigmoid(true_logits), clicks)
    loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(clicks, logits))
    return {"loss": loss, "count": tf.cast(tf.size(clicks), tf.float32),
            "pos": pos, "neg": neg, "oracle_pos": opos, "oracle_neg": oneg}


def auc_from_histograms(pos, neg):
    """AUC of scores binned into ascending buckets (ties inside a bucket count half)."""
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / max(pos.sum() * neg.sum(), 1.0))


def main(argv):
    del argv
    # Only the example's own lines: TF logs INFO chatter, and warns of a retrace at every
    # checkpoint save (by design when variables live on several tasks: functional_saver.py).
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")
    strategy = tfps.make_strategy()  # the cluster from TF_CONFIG (tfps-launch sets it)
    trainer = tfps.Trainer(
        strategy=strategy, model=build_model, loss_fn=loss_fn,
        optimizer=tf.keras.optimizers.legacy.Adagrad(FLAGS.learning_rate),
        dataset_fn=train_dataset_fn, batch_size=FLAGS.batch_size, model_dir=FLAGS.model_dir,
        eval_dataset_fn=eval_dataset_fn, eval_fn=eval_fn,
        options=tfps.TrainerOptions(
            steps_per_closure=FLAGS.steps_per_closure or None,
            accumulate_steps=FLAGS.accumulate_steps, staleness_aware=FLAGS.staleness_aware,
            checkpoint_every=FLAGS.checkpoint_every, log_every=FLAGS.log_every))
    print(trainer.describe(), flush=True)
    result = trainer.train(FLAGS.train_steps)
    metrics = trainer.evaluate()
    auc = auc_from_histograms(metrics["pos"], metrics["neg"])
    oracle = auc_from_histograms(metrics["oracle_pos"], metrics["oracle_neg"])
    trainer.summarize_eval({"loss": metrics["loss"], "auc": auc, "oracle_auc": oracle})
    print(f"result: auc={auc:.4f} oracle_auc={oracle:.4f} steps={result.step} "
          f"start_step={result.start_step}", flush=True)


if __name__ == "__main__":
    app.run(main)
