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

Last line: ``result: auc=<float> oracle_auc=<float> steps=<int> start_step=<int>``, plus
`` export=<path>`` with ``--export_dir``.
Run again with the same ``--model_dir`` and more ``--train_steps`` to resume, on any number
of ps tasks (``--num-ps 3``: the table and its Adagrad accumulators are re-split over them).
``--export_dir DIR`` then writes the trained model as a SavedModel with plain (un-sharded)
variables, which ``tf.saved_model.load(DIR).signatures["serving_default"]`` serves anywhere.
"""

import os
import sys

import tfps  # first: binds tf.keras to tf_keras and sets GRPC_FAIL_FAST

# isort: split
import tensorflow as tf
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import export_flag
from common import planted_clicks as clicks

FLAGS = flags.FLAGS
flags.DEFINE_integer("train_steps", 2000, "Total training steps (resuming counts earlier ones).")
flags.DEFINE_integer("batch_size", 512, "Examples per step.")
flags.DEFINE_integer("num_ids", 100_000, "Rows of the embedding table.")
flags.DEFINE_integer("embedding_dim", 16, "Columns of the embedding table.")
flags.DEFINE_float("learning_rate", 0.2, "Adagrad learning rate.")
flags.DEFINE_string("model_dir", None, "Checkpoints + TensorBoard; resumes from it.")
export_flag.define_export_dir()
flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.")
flags.DEFINE_integer("steps_per_closure", 0, "Steps per scheduled closure; 0 = measure.")
flags.DEFINE_integer("accumulate_steps", 1, "Micro-batches per update (local accumulation).")
flags.DEFINE_bool("staleness_aware", None, "Scale each update's lr by 1/max(1, staleness) "
                  "(default: on for local steps with several workers).")
flags.DEFINE_integer("local_steps", 1, "Steps on worker-local copies per push (1: per step).")
flags.DEFINE_integer("read_every", 1, "Read the dense layers once every this many steps.")
flags.DEFINE_integer("eval_examples", 16_384, "Held-out examples for the AUC.")
flags.DEFINE_integer("log_every", 200, "Steps between progress records.")
flags.DEFINE_integer("seed", 0, "Seed of the planted model and the data.")

NUM_SLOTS, NUM_DENSE = clicks.NUM_SLOTS, clicks.NUM_DENSE


def train_dataset_fn(ctx, first: int = 0):
    return clicks.train_dataset(ctx.input_pipeline_id, FLAGS.batch_size, FLAGS.seed,
                                FLAGS.num_ids, first=first)


def eval_dataset_fn(ctx):
    del ctx  # every worker sees the whole set; the Trainer shards it exactly once
    return clicks.eval_dataset(FLAGS.eval_examples, FLAGS.seed, FLAGS.num_ids)


def build_model():
    ids = tf.keras.Input([NUM_SLOTS], dtype=tf.int64)
    dense = tf.keras.Input([NUM_DENSE])
    emb = tf.keras.layers.Embedding(FLAGS.num_ids, FLAGS.embedding_dim, name="ids")(ids)
    h = tf.keras.layers.Concatenate()([tf.keras.layers.Flatten()(emb), dense])
    h = tf.keras.layers.Dense(256, activation="relu")(h)
    h = tf.keras.layers.Dense(128, activation="relu")(h)
    return tf.keras.Model([ids, dense], tf.keras.layers.Dense(1)(h))


def loss_fn(model, batch):
    ids, dense, labels, _ = batch
    logits = tf.squeeze(model([ids, dense], training=True), 1)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))


def eval_fn(model, batch):
    ids, dense, labels, true_logits = batch
    logits = tf.squeeze(model([ids, dense], training=False), 1)
    pos, neg = clicks.histograms(tf.sigmoid(logits), labels)
    opos, oneg = clicks.histograms(tf.sigmoid(true_logits), labels)
    loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))
    return {"loss": loss, "count": tf.cast(tf.size(labels), tf.float32),
            "pos": pos, "neg": neg, "oracle_pos": opos, "oracle_neg": oneg}


def main(argv):
    del argv
    # Only the example's own lines: TF logs INFO chatter, and warns of a retrace at every
    # checkpoint save (by design when variables live on several tasks: functional_saver.py).
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")
    strategy = tfps.make_strategy()  # the cluster from TF_CONFIG (tfps-launch sets it)
    # A resumed run trains on batches it has not seen: each worker's stream starts at the
    # restored step (input positions are not in checkpoints; the Trainer makes its input at
    # the first train(), after restoring). Replaying the first batches would skew the model.
    start = {"step": 0}
    trainer = tfps.Trainer(
        strategy=strategy, model=build_model, loss_fn=loss_fn,
        optimizer=tf.keras.optimizers.legacy.Adagrad(FLAGS.learning_rate),
        dataset_fn=lambda ctx: train_dataset_fn(ctx, start["step"]),
        batch_size=FLAGS.batch_size, model_dir=FLAGS.model_dir,
        eval_dataset_fn=eval_dataset_fn, eval_fn=eval_fn,
        options=tfps.TrainerOptions(
            steps_per_closure=FLAGS.steps_per_closure or None,
            accumulate_steps=FLAGS.accumulate_steps, staleness_aware=FLAGS.staleness_aware,
            local_steps=FLAGS.local_steps, read_every=FLAGS.read_every,
            checkpoint_every=FLAGS.checkpoint_every, log_every=FLAGS.log_every))
    start["step"] = trainer.step
    print(trainer.describe(), flush=True)
    result = trainer.train(FLAGS.train_steps)
    metrics = trainer.evaluate()
    auc = clicks.auc_from_histograms(metrics["pos"], metrics["neg"])
    oracle = clicks.auc_from_histograms(metrics["oracle_pos"], metrics["oracle_neg"])
    trainer.summarize_eval({"loss": metrics["loss"], "auc": auc, "oracle_auc": oracle})
    exported = ""
    if FLAGS.export_dir:
        exported = f" export={trainer.export(FLAGS.export_dir, overwrite=True)}"
    print(f"result: auc={auc:.4f} oracle_auc={oracle:.4f} steps={result.step} "
          f"start_step={result.start_step}{exported}", flush=True)


if __name__ == "__main__":
    app.run(main)
