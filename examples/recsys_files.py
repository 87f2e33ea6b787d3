r"""Click-through prediction trained from TFRecord files, every record once per epoch.

``--make_data N --data_dir D`` writes the planted click data of `examples/recsys.py` (its
oracle AUC is known) as TFRecord shards in D, each record carrying its id, plus a held-out set
(skipped when D already holds the same data). Then it trains the same model (a sharded
embedding table + MLP, Adagrad) from D's files for ``--epochs`` epochs through
`tfps.data.FileInput`, in ``--input shard`` (each closure reads its records on its worker) or
``--input service`` (TF's tf.data service reads and parses them: run under ``tfps-launch
--data-workers N``). The steps per epoch come from the data. Evaluation reads the held-out
files, each record once.

    tfps-launch --num-ps 2 --num-workers 2 --data-workers 1 examples/recsys_files.py \
        --make_data 600000 --data_dir /tmp/clicks --epochs 2 --input service

Last line: ``result: auc=… oracle_auc=… epochs=… records_per_epoch=… seen_once=… seen_more=…
missing=… steps=…``, the seen counts from the chief's ledger of record ids, summed over the
epochs (``seen_once = epochs × records_per_epoch`` when every record was trained on exactly once
per epoch). ``--tally`` also counts, on a ps, how often the workers' steps saw each record id
(a closure re-run after a worker died counts twice there: TF re-runs closures at least once),
and prints ``tally: min=… max=… extra=…`` before the result. Bad data (no file, an unreadable
or corrupt file, a record the parser rejects) ends it with one line naming the file and record,
exit 2.
"""

from absl import app, flags, logging  # noqa: I001 - tfps before TensorFlow, on purpose

import tfps  # first: binds tf.keras to tf_keras and sets GRPC_FAIL_FAST

import os
import sys

import numpy as np
import tensorflow as tf

import tfps.data

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import click_files  # the planted click data as TFRecord files
from common import planted_clicks as clicks

FLAGS = flags.FLAGS
flags.DEFINE_integer("make_data", 0, "Write this many training records into --data_dir first "
                     "(skipped when it holds them already); 0: use what is there.")
flags.DEFINE_string("data_dir", None, "The TFRecord files (train-*, eval-*).", required=True)
flags.DEFINE_integer("num_files", 8, "Training shards --make_data writes.")
flags.DEFINE_integer("epochs", 2, "Epochs over the training files (resuming counts earlier "
                     "ones).")
flags.DEFINE_enum("input", "shard", ["shard", "service"], "Where records are read and parsed: "
                  "on the training workers, or by the tf.data service (tfps-launch "
                  "--data-workers N).")
flags.DEFINE_integer("batch_size", 512, "Examples per step.")
flags.DEFINE_integer("num_ids", 100_000, "Rows of the embedding table.")
flags.DEFINE_integer("embedding_dim", 16, "Columns of the embedding table.")
flags.DEFINE_float("learning_rate", 0.2, "Adagrad learning rate.")
flags.DEFINE_string("model_dir", None, "Checkpoints (with the data ledger); resumes from it.")
flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.")
flags.DEFINE_integer("steps_per_closure", 0, "Steps per scheduled closure; 0 = measure.")
flags.DEFINE_integer("log_every", 200, "Steps between progress records.")
flags.DEFINE_integer("eval_examples", 16_384, "Held-out records --make_data writes.")
flags.DEFINE_integer("seed", 0, "Seed of the planted model and the data.")
flags.DEFINE_bool("tally", False, "Also count on a ps how often steps saw each record id.")


def build_model():
    ids = tf.keras.Input([clicks.NUM_SLOTS], dtype=tf.int64)
    dense = tf.keras.Input([clicks.NUM_DENSE])
    emb = tf.keras.layers.Embedding(FLAGS.num_ids, FLAGS.embedding_dim, name="ids")(ids)
    h = tf.keras.layers.Concatenate()([tf.keras.layers.Flatten()(emb), dense])
    h = tf.keras.layers.Dense(256, activation="relu")(h)
    h = tf.keras.layers.Dense(128, activation="relu")(h)
    return tf.keras.Model([ids, dense], tf.keras.layers.Dense(1)(h))


def make_loss_fn(tally):
    def loss_fn(model, batch):
        ids, dense, labels, _, record_ids = batch
        if tally is not None:  # how often a step saw each record (on a ps; at least once)
            tally.scatter_add(tf.IndexedSlices(tf.ones_like(labels), record_ids))
        logits = tf.squeeze(model([ids, dense], training=True), 1)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))
    return loss_fn


def eval_fn(model, batch):
    ids, dense, labels, true_logits, _ = batch
    logits = tf.squeeze(model([ids, dense], training=False), 1)
    pos, neg = clicks.histograms(tf.sigmoid(logits), labels)
    opos, oneg = clicks.histograms(tf.sigmoid(true_logits), labels)
    loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))
    return {"loss": loss, "count": tf.cast(tf.size(labels), tf.float32),
            "pos": pos, "neg": neg, "oracle_pos": opos, "oracle_neg": oneg}


def run() -> None:
    if FLAGS.make_data:
        try:
            click_files.write(FLAGS.data_dir, FLAGS.make_data, num_files=FLAGS.num_files,
                              eval_records=FLAGS.eval_examples, seed=FLAGS.seed,
                              num_ids=FLAGS.num_ids)
        except ValueError as e:
            raise tfps.errors.ConfigError(str(e)) from None
    mode = tfps.data.Service() if FLAGS.input == "service" else tfps.data.Shard()
    # Before the cluster: bad files end the program here (one line, exit 2).
    data = tfps.data.FileInput(click_files.train_files(FLAGS.data_dir), parse_fn=click_files.parse,
                               batch_size=FLAGS.batch_size, mode=mode, seed=FLAGS.seed)
    eval_data = tfps.data.FileInput(click_files.eval_files(FLAGS.data_dir),
                                    parse_fn=click_files.parse, batch_size=1024, shuffle=False)
    strategy = tfps.make_strategy()  # the cluster from TF_CONFIG (tfps-launch sets it)
    tally = None
    if FLAGS.tally:
        with strategy.scope():
            tally = tf.Variable(tf.zeros([data.records_per_epoch]), trainable=False,
                                name="tally")
    trainer = tfps.Trainer(
        strategy=strategy, model=build_model, loss_fn=make_loss_fn(tally),
        optimizer=tf.keras.optimizers.legacy.Adagrad(FLAGS.learning_rate), data=data,
        batch_size=FLAGS.batch_size, model_dir=FLAGS.model_dir,
        eval_dataset_fn=eval_data, eval_fn=eval_fn,
        options=tfps.TrainerOptions(steps_per_closure=FLAGS.steps_per_closure or None,
                                    checkpoint_every=FLAGS.checkpoint_every,
                                    log_every=FLAGS.log_every))
    print(f"{tfps.data.files.files_summary(data)}; {FLAGS.epochs} epochs", flush=True)
    result = trainer.train(FLAGS.epochs * trainer.steps_per_epoch)
    metrics = trainer.evaluate()
    auc = clicks.auc_from_histograms(metrics["pos"], metrics["neg"])
    oracle = clicks.auc_from_histograms(metrics["oracle_pos"], metrics["oracle_neg"])
    trainer.summarize_eval({"loss": metrics["loss"], "auc": auc, "oracle_auc": oracle})
    seen = data.visitation(FLAGS.epochs)
    if tally is not None:
        counts = np.asarray(tally.read_value() if not hasattr(tally, "variables") else
                            tf.concat([v.read_value() for v in tally.variables], 0))
        print(f"tally: min={int(counts.min())} max={int(counts.max())} "
              f"extra={int(counts.sum()) - FLAGS.epochs * data.records_per_epoch}", flush=True)
    print(f"result: auc={auc:.4f} oracle_auc={oracle:.4f} epochs={FLAGS.epochs} "
          f"records_per_epoch={seen.records_per_epoch} seen_once={seen.seen_once} "
          f"seen_more={seen.seen_more} missing={seen.missing} steps={result.step}", flush=True)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")
    try:
        run()
    except tfps.errors.ConfigError as e:  # bad data or flags: one line, exit 2
        print(f"recsys_files.py: error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    app.run(main)
