"""One chief of the resharding test (tests/integration/test_reshard.py), on an in-process
cluster with ``--num_ps`` ps tasks: three models in their own ``model_dir``s under ``--dir``,

* ``tfk``: a tf_keras model trained by `tfps.Trainer` with Adagrad,
* ``k3``: a Keras 3 model trained by `tfps.Trainer` with Adam,
* ``fit``: a tf_keras model trained by `tfps.keras.fit` (`BackupAndRestore`) with Adam,

each with a 20 000 x 8 embedding (sharded over the ps tasks when there are several). It
builds them (restoring what ``--dir`` holds), records every variable, every optimizer slot
(from the per-shard slots the updates use) and the step counters as restored, plus the loss
of a fixed batch; trains 40 more steps (``fit``: up to ``--epochs``) and saves; records all
again.
The records go to ``--out`` (an .npz), the variable tables to stdout.

    python tests/integration/reshard_job.py --num_ps 2 --dir D --epochs 2 --out first.npz
"""

from __future__ import annotations

import argparse
import os
import sys

import tfps  # first: binds tf.keras to tf_keras

# isort: split
import keras
import numpy as np
import tensorflow as tf
import tf_keras

import tfps.keras
from tfps.export.unsharded import logical_variables

VOCAB, DIM, BATCH = 20_000, 8, 64


def batch(i):
    seed = tf.stack([tf.cast(i, tf.int32), 7])
    ids = tf.random.stateless_uniform([BATCH, 4], seed=seed, maxval=VOCAB, dtype=tf.int64)
    x = tf.random.stateless_normal([BATCH, 4], seed=seed + [0, 1])
    return ids, x, tf.reduce_sum(x, 1) + tf.cast(ids[:, 0] % 7, tf.float32)


def dataset(ctx=None):
    return tf.data.Dataset.range(1 << 30).map(batch)


def build(k):
    ids, x = k.Input([4], dtype="int64"), k.Input([4])
    h = k.layers.Flatten()(k.layers.Embedding(VOCAB, DIM, name="emb")(ids))
    h = k.layers.Dense(16, activation="relu")(k.layers.Concatenate()([h, x]))
    return k.Model([ids, x], k.layers.Dense(1)(h))


def loss_fn(model, b):
    return tf.reduce_mean(tf.square(tf.squeeze(model([b[0], b[1]]), 1) - b[2]))


def record(prefix, model, optimizer, out):
    """Every variable and slot, shards put back together, under ``prefix|name|...``."""
    for name, _, parts in logical_variables(model):
        if not any(p.trainable for p in parts):
            continue
        out[f"{prefix}|{name}|value"] = np.concatenate([p.numpy().reshape(p.shape) for p in parts])
        for slot in optimizer.get_slot_names():
            out[f"{prefix}|{name}|{slot}"] = np.concatenate(
                [optimizer.get_slot(p, slot).numpy().reshape(p.shape) for p in parts])
    out[f"{prefix}|iterations"] = np.array(int(optimizer.iterations.numpy()))
    out[f"{prefix}|loss"] = np.array(float(loss_fn(model, batch(10**6))))


class Recorder(tf_keras.callbacks.Callback):
    """Records the fit model as `BackupAndRestore` (which runs before it) restored it."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def on_train_begin(self, logs=None):
        record("fit|restored", self.model, self.model.optimizer, self.out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_ps", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, required=True, help="fit's epochs in all")
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")
    strategy = tfps.make_strategy(tfps.in_process_cluster(num_ps=args.num_ps, num_workers=1))
    out = {}
    options = tfps.TrainerOptions(steps_per_closure=10, log_every=0, progress_bar="off")
    for kind, keras_module, optimizer in (("tfk", tf.keras, "adagrad"), ("k3", keras, "adam")):
        trainer = tfps.Trainer(
            strategy=strategy, model=lambda k=keras_module: build(k), loss_fn=loss_fn,
            optimizer=optimizer, learning_rate=0.05, dataset_fn=dataset,
            model_dir=os.path.join(args.dir, kind), options=options)
        print(f"table {kind}\n{trainer.describe()}", flush=True)
        record(f"{kind}|restored", trainer.model, trainer.optimizer, out)
        out[f"{kind}|restored|step"] = np.array(trainer.step)
        trainer.train(trainer.step + 40)
        record(f"{kind}|after", trainer.model, trainer.optimizer, out)
        out[f"{kind}|after|step"] = np.array(trainer.step)

    with strategy.scope():
        model = build(tf_keras)
        model.compile(tf_keras.optimizers.legacy.Adam(0.01), "mse", steps_per_execution=5)
    tfps.keras.fit(model, lambda ctx: dataset().map(lambda i, x, y: ((i, x), y)),
                   epochs=args.epochs, steps_per_epoch=10, model_dir=os.path.join(args.dir, "fit"),
                   progress=False, callbacks=[Recorder(out)])
    record("fit|after", model, model.optimizer, out)
    np.savez(args.out, **out)
    print("done", flush=True)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # in-process servers cannot be stopped
