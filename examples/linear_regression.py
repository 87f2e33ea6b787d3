"""The classic parameter-server demo: learn `w` in y = 3x + noise by gradient descent.

`w` lives on a ps task; the workers compute gradients with `tf.GradientTape` and apply
``w := w - lr * g`` there, several steps per function the coordinator schedules. The last line
compares the learned `w` with the least-squares solution of the same data:

    result: w=2.998765 w_lstsq=2.998803 steps=400

Run it on a local cluster (chief + 2 ps + 2 workers):

    tfps-launch examples/linear_regression.py --train_steps 400

With ``--model_dir`` it checkpoints every ``--checkpoint_every`` steps and at the end, and a
restarted chief resumes from the latest checkpoint (the step counter is in the checkpoint).
A side-car evaluator (``tfps-launch --evaluator``) then scores each checkpoint as it appears.
"""

import json
import os

import tfps  # first: sets TF_USE_LEGACY_KERAS and GRPC_FAIL_FAST before TensorFlow loads

# isort: split
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

flags.DEFINE_integer("train_steps", 400, "Gradient steps in total.")
flags.DEFINE_float("learning_rate", 0.05, "Step size of w := w - lr * g.")
flags.DEFINE_integer("batch_size", 256, "Examples per step.")
flags.DEFINE_integer("seed", 0, "Seed of the generated dataset.")
flags.DEFINE_integer("steps_per_call", 20, "Steps per scheduled function (fewer RPCs).")
flags.DEFINE_string("model_dir", None, "Checkpoint directory; a restart resumes from it.")
flags.DEFINE_integer("checkpoint_every", 100, "Steps between checkpoints (with --model_dir).")
FLAGS = flags.FLAGS

NUM_EXAMPLES = 4096
TRUE_W = 3.0
NOISE = 0.1


def make_data(seed):
    """x ~ N(0, 1), y = 3x + N(0, 0.1^2); returns (x, y, least-squares w of y ~ w x)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=NUM_EXAMPLES).astype(np.float32)
    y = (TRUE_W * x + NOISE * rng.normal(size=NUM_EXAMPLES)).astype(np.float32)
    w_lstsq = float(np.dot(x, y) / np.dot(x, x))
    return x, y, w_lstsq


def evaluate(x, y):
    """The side-car evaluator (``tfps-launch --evaluator``): scores each new checkpoint."""
    if not FLAGS.model_dir:
        print("eval: nothing to score without --model_dir")
        return
    w, step = tf.Variable(0.0), tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(w=w, step=step)
    for path in tf.train.checkpoints_iterator(FLAGS.model_dir, timeout=60):
        checkpoint.restore(path).expect_partial()
        loss = float(np.mean((w.numpy() * x - y) ** 2))
        print(f"eval: step={int(step.numpy())} w={float(w.numpy()):.6f} loss={loss:.6f}")
        if step.numpy() >= FLAGS.train_steps:
            return


def main(argv):
    del argv
    # Keep the demo's output to its own lines. TF logs INFO chatter, and warns about a retrace
    # on every checkpoint save: its saver retraces by design when the variables live on
    # several tasks (MultiDeviceSaver.save in tensorflow/python/checkpoint/functional_saver.py).
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")
    x, y, w_lstsq = make_data(FLAGS.seed)
    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    if task.get("type") == "evaluator":  # a side-car: it reads checkpoints, joins no cluster
        return evaluate(x, y)
    strategy = tfps.make_strategy()  # the cluster from TF_CONFIG
    coordinator = tfps.make_coordinator(strategy)

    with strategy.scope():
        w = tf.Variable(0.0, name="w")  # lives on a ps task
        step = tf.Variable(0, dtype=tf.int64, name="step")  # steps done, checkpointed

    checkpoint = tf.train.Checkpoint(w=w, step=step)
    manager = None
    if FLAGS.model_dir:
        manager = tf.train.CheckpointManager(checkpoint, FLAGS.model_dir, max_to_keep=2)
        if manager.latest_checkpoint:
            checkpoint.restore(manager.latest_checkpoint)
            print(f"restored {manager.latest_checkpoint} at step {int(step.numpy())}")

    def dataset_fn(input_context):
        # Each worker reads its own shard, shuffled and repeated forever.
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shard(
            input_context.num_input_pipelines, input_context.input_pipeline_id)
        return ds.shuffle(1024, seed=FLAGS.seed).repeat().batch(FLAGS.batch_size)

    @tf.function
    def per_worker_dataset_fn():
        return strategy.distribute_datasets_from_function(dataset_fn)

    iterator = iter(coordinator.create_per_worker_dataset(per_worker_dataset_fn))

    @tf.function
    def train_steps(iterator, num_steps):
        loss = tf.constant(0.0)
        for _ in tf.range(num_steps):
            xb, yb = next(iterator)
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(w * xb - yb))
            w.assign_sub(FLAGS.learning_rate * tape.gradient(loss, w))
        return loss

    # The coordinator owns the step count: it advances by whole chunks once their functions
    # have finished (join), so a function re-run after a worker failure is not counted twice.
    chunk = FLAGS.checkpoint_every if manager else FLAGS.train_steps
    while (done := int(step.numpy())) < FLAGS.train_steps:
        todo = min(chunk, FLAGS.train_steps - done)
        for start in range(0, todo, FLAGS.steps_per_call):
            n = tf.constant(min(FLAGS.steps_per_call, todo - start))
            loss = coordinator.schedule(train_steps, args=(iterator, n))
        coordinator.join()
        step.assign_add(todo)
        if manager:
            manager.save(checkpoint_number=done + todo)
        print(f"step: {done + todo} | w: {float(w.numpy()):.6f} | "
              f"loss: {float(loss.fetch()):.6f}{' | saved' if manager else ''}")

    print(f"result: w={float(w.numpy()):.6f} w_lstsq={w_lstsq:.6f} "
          f"steps={int(step.numpy())}")


if __name__ == "__main__":
    app.run(main)
