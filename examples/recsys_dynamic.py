r"""Click prediction over a 10-million-id space with `tfps.layers.DynamicEmbedding`.

The data come from a *planted* click model (`common/zipf_clicks.py`, generated on each worker,
no download): 4 ids per example drawn with Zipf-distributed traffic from `--id_space` ids (each
id an arbitrary int64), the `--signal_ids` most frequent with hidden weights, plus 8 dense
features, so the best achievable AUC (the *oracle*) is known.

Two models learn it, with the same MLP (256-128-1), optimizer and steps:

* **dynamic**: `DynamicEmbedding` rows on the ps tasks: an id gets a row at its
  `--min_count`-th sighting, each shard keeps at most `--max_rows_per_shard` rows (least
  frequently seen evicted first) and forgets ids unseen for `--ttl_steps` steps;
* **hashed**: what a user would pick today: a `Hashing` layer into a fixed sharded `Embedding`
  with the same memory as the dynamic table ended with (its bytes: rows, optimizer slots and
  counts), retrained from scratch in every run.

    tfps-launch --num-ps 2 --num-workers 2 examples/recsys_dynamic.py --model_dir /tmp/dyn
    tfps-launch --num-ps 3 --num-workers 2 examples/recsys_dynamic.py --model_dir /tmp/dyn \
        --train_steps 3000          # resumes the dynamic model on 3 ps (its table reshards)

Last line: ``result: auc=<f> hashed_auc=<f> oracle_auc=<f> rows=<int> id_space=<int>
steps=<int> start_step=<int>``. Bad flag values exit 2 with one line.
"""

import os
import sys

import tfps  # first: binds tf.keras to tf_keras and sets GRPC_FAIL_FAST

# isort: split
import tensorflow as tf
from absl import app, flags, logging

from tfps.errors import ConfigError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import zipf_clicks as clicks

FLAGS = flags.FLAGS
flags.DEFINE_integer("train_steps", 2000, "Total training steps (resuming counts earlier ones).")
flags.DEFINE_integer("batch_size", 512, "Examples per step.")
flags.DEFINE_integer("id_space", 10_000_000, "Distinct ids the traffic draws from.")
flags.DEFINE_float("zipf", 1.0, "Exponent s of the traffic: rank r drawn ~ 1 / (r + 1)^s.")
flags.DEFINE_integer("signal_ids", 2000, "The most frequent ids that carry hidden weights.")
flags.DEFINE_integer("embedding_dim", 16, "Embedding columns.")
flags.DEFINE_float("learning_rate", 0.2, "Adagrad learning rate (rows and dense layers).")
flags.DEFINE_integer("min_count", 2, "Sightings before an id gets its own row.")
flags.DEFINE_integer("max_rows_per_shard", 5000, "Row cap per ps task (LFU eviction).")
flags.DEFINE_integer("ttl_steps", 1000, "Forget ids unseen for this many steps.")
flags.DEFINE_integer("evict_every", 250, "Steps between evictions.")
flags.DEFINE_string("model_dir", None, "Checkpoints + TensorBoard of the dynamic model; "
                    "resumes from it.")
flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.")
flags.DEFINE_integer("steps_per_closure", 20, "Steps per scheduled closure; 0 = measure.")
flags.DEFINE_integer("eval_examples", 16_384, "Held-out examples for the AUC.")
flags.DEFINE_integer("log_every", 250, "Steps between progress records.")
flags.DEFINE_integer("seed", 0, "Seed of the planted model and the data.")

NUM_SLOTS, NUM_DENSE = clicks.NUM_SLOTS, clicks.NUM_DENSE


def _data():
    return dict(seed=FLAGS.seed, id_space=FLAGS.id_space, exponent=FLAGS.zipf,
                signal_ids=FLAGS.signal_ids)


def train_dataset_fn(ctx):
    return clicks.train_dataset(ctx.input_pipeline_id, FLAGS.batch_size, **_data())


def eval_dataset_fn(ctx):
    del ctx  # every worker sees the whole set; the Trainer shards it exactly once
    return clicks.eval_dataset(FLAGS.eval_examples, **_data())


def _head(emb, dense, ids):
    h = tf.keras.layers.Concatenate()([tf.keras.layers.Flatten()(emb), dense])
    h = tf.keras.layers.Dense(256, activation="relu")(h)
    h = tf.keras.layers.Dense(128, activation="relu")(h)
    return tf.keras.Model([ids, dense], tf.keras.layers.Dense(1)(h))


def build_dynamic():
    ids = tf.keras.Input([NUM_SLOTS], dtype=tf.int64)
    dense = tf.keras.Input([NUM_DENSE])
    emb = tfps.layers.DynamicEmbedding(
        FLAGS.embedding_dim, min_count=FLAGS.min_count,
        max_rows_per_shard=FLAGS.max_rows_per_shard, policy="lfu", ttl_steps=FLAGS.ttl_steps,
        evict_every=FLAGS.evict_every, name="ids")(ids)
    return _head(emb, dense, ids)


def build_hashed(bins: int):
    ids = tf.keras.Input([NUM_SLOTS], dtype=tf.int64)
    dense = tf.keras.Input([NUM_DENSE])
    buckets = tf.keras.layers.Hashing(num_bins=bins)(ids)
    emb = tf.keras.layers.Embedding(bins, FLAGS.embedding_dim, name="hashed_ids")(buckets)
    return _head(emb, dense, ids)


def loss_fn(model, batch):
    ids, dense, labels, _ = batch
    logits = tf.squeeze(model([ids, dense], training=True), 1)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))


def eval_fn(model, batch):
    ids, dense, labels, true_logits = batch
    logits = tf.squeeze(model([ids, dense], training=False), 1)
    pos, neg = clicks.histograms(tf.sigmoid(logits), labels)
    opos, oneg = clicks.histograms(tf.sigmoid(true_logits), labels)
    return {"pos": pos, "neg": neg, "oracle_pos": opos, "oracle_neg": oneg}


def train(strategy, build, model_dir=None):
    """Trains one model for --train_steps; returns (trainer, result, auc, oracle auc)."""
    trainer = tfps.Trainer(
        strategy=strategy, model=build, loss_fn=loss_fn,
        optimizer=tf.keras.optimizers.legacy.Adagrad(FLAGS.learning_rate),
        dataset_fn=train_dataset_fn, batch_size=FLAGS.batch_size, model_dir=model_dir,
        eval_dataset_fn=eval_dataset_fn, eval_fn=eval_fn,
        options=tfps.TrainerOptions(
            steps_per_closure=FLAGS.steps_per_closure or None,
            checkpoint_every=FLAGS.checkpoint_every, log_every=FLAGS.log_every))
    print(trainer.describe(), flush=True)
    result = trainer.train(FLAGS.train_steps)
    metrics = trainer.evaluate()
    auc = clicks.auc_from_histograms(metrics["pos"], metrics["neg"])
    oracle = clicks.auc_from_histograms(metrics["oracle_pos"], metrics["oracle_neg"])
    trainer.summarize_eval({"auc": auc, "oracle_auc": oracle})
    return trainer, result, auc, oracle


def run() -> None:
    strategy = tfps.make_strategy()  # the cluster from TF_CONFIG (tfps-launch sets it)
    print(f"dynamic model: ids over a {FLAGS.id_space:,}-id space, no vocabulary", flush=True)
    trainer, result, auc, oracle = train(strategy, build_dynamic, FLAGS.model_dir)
    (table,) = tfps.layers.tables_of(trainer.model)
    sizes = table.sizes()
    rows, stored = int(sizes[:, 0].sum()), sum(table.shard_bytes(sizes))
    # The same memory for the hashed table: an Embedding row and its Adagrad accumulator.
    bins = max(1, stored // (2 * 4 * FLAGS.embedding_dim))
    print(f"dynamic table: {rows:,} rows, {int(sizes[:, 1].sum()) - rows:,} ids waiting, "
          f"{stored:,} bytes -> hashed table of {bins:,} rows (same bytes)", flush=True)
    _, _, hashed_auc, _ = train(strategy, lambda: build_hashed(bins))
    print(f"result: auc={auc:.4f} hashed_auc={hashed_auc:.4f} oracle_auc={oracle:.4f} "
          f"rows={rows} id_space={FLAGS.id_space} steps={result.step} "
          f"start_step={result.start_step}", flush=True)


def main(argv):
    del argv
    # Only the example's own lines: TF logs INFO chatter, and warns of a retrace at every
    # checkpoint save (by design when variables live on several tasks: functional_saver.py).
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")
    try:
        run()
    except ConfigError as e:  # a bad flag value: one line, exit 2
        print(f"recsys_dynamic.py: error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    app.run(main)
