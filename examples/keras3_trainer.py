r"""A Keras 3 model trained on parameter servers by `tfps.Trainer`.

Neither TensorFlow nor Keras can do this: Keras 3's `fit` has no ParameterServerStrategy
support, and a raw tape over a Keras 3 model whose embedding is sharded fails. Here the model is
built with `import keras` (Keras 3) under the strategy, so its variables live on the ps tasks
(the embedding table split in shards); the Trainer takes gradients per shard and applies them
with the tf_keras legacy optimizer equivalent to the Keras 3 optimizer given
(`tfps.train.optimizers`).

    tfps-launch --num-ps 2 --num-workers 2 examples/keras3_trainer.py

Task: predict a rating from (user, item) ids and 4 dense features, generated from a planted
model. Last line: ``result: loss_first=<float> loss_last=<float>`` (mean squared error of the
first and the last closure), plus `` export=<path>`` with ``--export_dir``: the trained Keras 3
model as a SavedModel with plain (un-sharded) variables, served by
``tf.saved_model.load(DIR).signatures["serving_default"]`` without Keras or tfps.
"""

import os
import sys

import tfps  # first: sets the environment; Keras 3 is still `import keras`

# isort: split
import keras
import tensorflow as tf
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import export_flag

FLAGS = flags.FLAGS
flags.DEFINE_integer("train_steps", 600, "Training steps.")
flags.DEFINE_integer("batch_size", 256, "Examples per step.")
flags.DEFINE_integer("num_ids", 40_000, "Rows of the (sharded) embedding table.")
flags.DEFINE_float("learning_rate", 0.05, "Adam learning rate (Keras 3 optimizer).")
flags.DEFINE_integer("steps_per_closure", 20, "Steps per scheduled closure; 0 = measure.")
flags.DEFINE_integer("seed", 0, "Seed of the planted model and the data.")
export_flag.define_export_dir()


def make_batch(stream, index):
    s = tf.stack([tf.cast(stream, tf.int32), tf.cast(index, tf.int32)]) + [FLAGS.seed, 0]
    ids = tf.random.stateless_uniform([FLAGS.batch_size, 2], seed=s, maxval=2000,
                                      dtype=tf.int64)  # the active users/items
    dense = tf.random.stateless_normal([FLAGS.batch_size, 4], seed=s + [0, 1])
    bias = tf.random.stateless_normal([FLAGS.num_ids], seed=[FLAGS.seed, 7])
    beta = tf.constant([1.0, -2.0, 0.5, 0.0])
    rating = tf.reduce_sum(tf.gather(bias, ids), 1) + tf.linalg.matvec(dense, beta)
    return (ids, dense), rating


def dataset_fn(ctx):
    stream = ctx.input_pipeline_id
    return tf.data.Dataset.range(1 << 62).map(lambda i: make_batch(stream, i)).prefetch(2)


def build_model():
    ids = keras.Input([2], dtype="int64")
    dense = keras.Input([4])
    emb = keras.layers.Embedding(FLAGS.num_ids, 8, name="ids")(ids)
    h = keras.layers.Concatenate()([keras.layers.Flatten()(emb), dense])
    h = keras.layers.Dense(32, activation="relu")(h)
    return keras.Model([ids, dense], keras.layers.Dense(1)(h))


def loss_fn(model, batch):
    (ids, dense), rating = batch
    prediction = tf.squeeze(model([ids, dense], training=True), 1)
    return tf.reduce_mean(tf.square(prediction - rating))


def main(argv):
    del argv
    # Only the example's own lines: TF logs INFO chatter, and warns of a retrace at every
    # checkpoint save (by design when variables live on several tasks: functional_saver.py).
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")
    trainer = tfps.Trainer(
        strategy=tfps.make_strategy(), model=build_model, loss_fn=loss_fn,
        optimizer=keras.optimizers.Adam(FLAGS.learning_rate), dataset_fn=dataset_fn,
        batch_size=FLAGS.batch_size,
        options=tfps.TrainerOptions(steps_per_closure=FLAGS.steps_per_closure or None,
                                    log_every=100))
    print(f"keras {keras.__version__}; model {type(trainer.model).__module__}; optimizer "
          f"{type(trainer.optimizer).__module__}.{type(trainer.optimizer).__name__}")
    print(trainer.describe(), flush=True)
    per_closure = FLAGS.steps_per_closure or 1
    first = trainer.train(per_closure).loss  # the first closure alone: the starting loss
    last = trainer.train(FLAGS.train_steps).loss
    exported = ""
    if FLAGS.export_dir:
        exported = f" export={trainer.export(FLAGS.export_dir, overwrite=True)}"
    print(f"result: loss_first={first:.4f} loss_last={last:.4f}{exported}", flush=True)


if __name__ == "__main__":
    app.run(main)
