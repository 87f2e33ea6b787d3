"""A tf_keras classifier trained with `Model.fit` on a parameter-server cluster.

    tfps-launch --num-ps 2 --num-workers 2 examples/keras_fit.py --model_dir /tmp/keras_fit
    tfps-launch --num-ps 2 --num-workers 2 --evaluator examples/keras_fit.py --model_dir ...
    python examples/keras_fit.py --in_process          # everything inside this one process

The chief builds the strategy from TF_CONFIG (set by `tfps-launch`, Kubeflow or Slurm),
trains with `tfps.keras.fit` (a cosine learning rate with warm-up from `tfps.schedules`;
`BackupAndRestore` and a checkpoint every ``--checkpoint_epochs`` under ``--model_dir``), and
evaluates exactly once per example (``pss_evaluation_shards``). Killed and restarted with the
same ``--model_dir``, it resumes from the last finished epoch. In the evaluator task the same
script runs tf_keras's side-car evaluator on the checkpoints instead.

``--dataset=synthetic`` draws labels from a known linear softmax "teacher", so the best
possible accuracy is known: the accuracy of the teacher's own argmax on the same examples.
``--dataset=mnist`` loads MNIST with `tensorflow_datasets` (its files must be reachable by
every worker: a shared ``--data_dir``).

Last line: ``result: accuracy=<float> best_accuracy=<float> steps=<int> start_step=<int>``
(``nan`` accuracies for tfds data), plus `` export=<path>`` with ``--export_dir``. Run again
with the same ``--model_dir`` and more ``--epochs`` to resume after the last epoch, on any
number of ps tasks; ``--export_dir DIR`` writes the trained model as a SavedModel with plain
variables (``tf.saved_model.load(DIR).signatures["serving_default"]``).
"""

from __future__ import annotations

import contextlib
import os
import sys

import tfps  # first: binds tf.keras to tf_keras before TensorFlow loads

# isort: split
import numpy as np
import tensorflow as tf
import tf_keras
from absl import app, flags, logging

import tfps.keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import export_flag

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "synthetic", ["synthetic", "mnist"], "Training data.")
flags.DEFINE_string("data_dir", None, "tensorflow_datasets data directory (mnist).")
flags.DEFINE_string("model_dir", None, "BackupAndRestore state and checkpoints; None: neither. "
                    "Resumes after the last epoch it holds.")
export_flag.define_export_dir()
flags.DEFINE_integer("epochs", 4, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", 100, "Training steps per epoch.", lower_bound=1)
flags.DEFINE_integer("checkpoint_epochs", 1, "Save a checkpoint every this many epochs "
                     "(and after the last).", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Batch size per worker step.", lower_bound=1)
flags.DEFINE_integer("eval_batch_size", 128, "Evaluation batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 0.02, "Peak learning rate (after warm-up).", lower_bound=0)
flags.DEFINE_integer("warmup_steps", 20, "Linear learning-rate warm-up steps.", lower_bound=0)
flags.DEFINE_bool("in_process", False, "Start 2 ps + 2 workers inside this process instead "
                  "of reading TF_CONFIG (quick tries, notebooks).")

# Synthetic data: features, classes, examples. Small enough to ship inside the dataset graph.
_FEATURES, _CLASSES = 16, 4
_TRAIN_EXAMPLES, _EVAL_EXAMPLES = 16384, 4096
# Teacher logit scale: its argmax is right about 85 % of the time on its own samples.
_TEACHER_SCALE = 1.5


def synthetic_data(seed: int = 0):
    """(x_train, y_train, x_eval, y_eval, best_accuracy) from a linear softmax teacher."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(_FEATURES, _CLASSES)) * _TEACHER_SCALE

    def draw(n):
        x = rng.normal(size=(n, _FEATURES)).astype(np.float32)
        logits = x @ weights
        # Gumbel-max: y ~ softmax(logits). The Bayes-optimal guess is argmax(logits).
        y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1).astype(np.int64)
        return x, y, np.argmax(logits, axis=1)

    x_train, y_train, _ = draw(_TRAIN_EXAMPLES)
    x_eval, y_eval, teacher = draw(_EVAL_EXAMPLES)
    return x_train, y_train, x_eval, y_eval, float(np.mean(teacher == y_eval))


def data_functions():
    """(train_fn, eval_fn, best_accuracy) for --dataset."""
    batch = FLAGS.batch_size
    if FLAGS.dataset == "synthetic":
        x_train, y_train, x_eval, y_eval, best = synthetic_data()

        def train_fn():  # runs on each worker; tfps.keras.fit shards it per worker
            return (tf.data.Dataset.from_tensor_slices((x_train, y_train))
                    .shuffle(4096).repeat().batch(batch).prefetch(2))

        def eval_fn():
            return (tf.data.Dataset.from_tensor_slices((x_eval, y_eval))
                    .batch(FLAGS.eval_batch_size))
        return train_fn, eval_fn, best

    import tensorflow_datasets as tfds

    def mnist(split):
        ds = tfds.load("mnist", split=split, as_supervised=True, data_dir=FLAGS.data_dir)
        return ds.map(lambda image, label: (tf.cast(image, tf.float32) / 255.0, label))

    def train_fn():
        return mnist("train").shuffle(4096).repeat().batch(batch).prefetch(2)

    def eval_fn():
        return mnist("test").batch(FLAGS.eval_batch_size)
    return train_fn, eval_fn, float("nan")


def build_model(strategy=None, eval_shards: int = 0, steps_per_execution: int = 1):
    """The classifier, compiled; under `strategy.scope()` when one is given."""
    shape = (_FEATURES,) if FLAGS.dataset == "synthetic" else (28, 28, 1)
    classes = _CLASSES if FLAGS.dataset == "synthetic" else 10
    total = FLAGS.epochs * FLAGS.steps_per_epoch
    learning_rate = tfps.schedules.get(
        "cosine", initial_learning_rate=FLAGS.learning_rate, warmup_steps=FLAGS.warmup_steps,
        decay_steps=max(1, total - FLAGS.warmup_steps), alpha=0.1)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = tf_keras.Sequential([
            tf_keras.Input(shape),
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(64, activation="relu"),
            tf_keras.layers.Dense(classes),
        ])
        # Legacy (OptimizerV2) Adam: the optimizers tf_keras's PSS fit path is tested with;
        # they compute the scheduled learning rate inline from `iterations`.
        model.compile(
            optimizer=tf_keras.optimizers.legacy.Adam(learning_rate),
            loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            steps_per_execution=steps_per_execution,
            pss_evaluation_shards=eval_shards)
    return model


class _StartStep(tf_keras.callbacks.Callback):
    """The optimizer's step when training begins: after `BackupAndRestore` (which runs
    before this callback) restored an earlier run's, 0 otherwise."""

    step = 0

    def on_train_begin(self, logs=None):
        self.step = int(self.model.optimizer.iterations.numpy())


def run_chief() -> None:
    train_fn, eval_fn, best = data_functions()
    strategy = tfps.keras.make_strategy(
        tfps.in_process_cluster(num_ps=2, num_workers=2) if FLAGS.in_process else None)
    # Exactly-once evaluation needs at least one batch per shard (tfps.keras.evaluation_shards).
    eval_batches = int(eval_fn().cardinality())  # < 0: infinite or unknown
    shards = tfps.keras.evaluation_shards(strategy, eval_batches if eval_batches > 0 else None)
    model = build_model(
        strategy, eval_shards=shards,
        steps_per_execution=tfps.keras.steps_per_execution(FLAGS.steps_per_epoch, strategy))
    start = _StartStep()
    tfps.keras.fit(model, train_fn, epochs=FLAGS.epochs, steps_per_epoch=FLAGS.steps_per_epoch,
                   model_dir=FLAGS.model_dir, checkpoint_epochs=FLAGS.checkpoint_epochs,
                   callbacks=[start])
    metrics = tfps.keras.evaluate(model, eval_fn)
    print(f"eval | exactly once over {shards} shards | "
          + " | ".join(f"{k}: {v:.4f}" for k, v in metrics.items()), flush=True)
    exported = ""
    if FLAGS.export_dir:
        exported = f" export={tfps.keras.export(model, FLAGS.export_dir, overwrite=True)}"
    print(f"result: accuracy={metrics['accuracy']:.4f} best_accuracy={best:.4f} "
          f"steps={int(model.optimizer.iterations.numpy())} start_step={start.step}{exported}",
          flush=True)


def run_evaluator() -> None:
    if not FLAGS.model_dir:
        raise app.UsageError("the evaluator task needs --model_dir (the chief's)")
    _, eval_fn, best = data_functions()
    metrics = tfps.keras.run_sidecar_evaluator(build_model, eval_fn, FLAGS.model_dir,
                                               max_evaluations=FLAGS.epochs)
    print(f"result: accuracy={metrics.get('accuracy', float('nan')):.4f} "
          f"best_accuracy={best:.4f}", flush=True)


def main(argv):
    del argv
    if tfps.keras.is_evaluator():
        logging.info("evaluator task: watching %s", FLAGS.model_dir)
        run_evaluator()
    else:
        run_chief()


if __name__ == "__main__":
    app.run(main)
