"""tfps side of the data rows: `tfps.Trainer` on the clicks model, its batches from TFRecord
files (`tfps.data.FileInput`, ``--input shard|service``) or generated in the workers
(``--input generated``: `workloads.clicks_dataset_fn`, the per-worker dataset the other rows
use). ``--parse heavy`` parses as the ``service_offload`` row asks (string ids hashed, every
pair of slots crossed: 10 ids per example, `click_files.parse_heavy`). The same model, loss,
optimizer and batch on every side, and the Trainer's measured steps per closure (each side
measures its own: a service job per closure costs more); timed in the steady state (one
``trainer.train`` per window after a warm-up that traces). Prints ``bench: steps_per_sec=...``.
"""

import argparse  # noqa: I001 - side first: it imports tfps before TensorFlow
import time

import side  # noqa: F401  (and puts benchmarks/ on the path, for workloads)
import workloads

import tensorflow as tf
import tfps
import tfps.data
from common import click_files
from common import planted_clicks as clicks


def build(num_slots: int):
    ids = tf.keras.Input([num_slots], dtype=tf.int64)
    dense = tf.keras.Input([clicks.NUM_DENSE])
    emb = tf.keras.layers.Embedding(workloads.RECSYS_IDS, workloads.CLICKS_DIM, name="ids")(ids)
    h = tf.keras.layers.Concatenate()([tf.keras.layers.Flatten()(emb), dense])
    h = tf.keras.layers.Dense(256, activation="relu")(h)
    h = tf.keras.layers.Dense(128, activation="relu")(h)
    return tf.keras.Model([ids, dense], tf.keras.layers.Dense(1)(h))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--input", choices=("generated", "shard", "service"), required=True)
    p.add_argument("--parse", choices=("plain", "heavy"), default="plain")
    p.add_argument("--data_dir")
    p.add_argument("--warmup_steps", type=int, default=100)
    p.add_argument("--steps", type=int, default=500, help="steps per timed window")
    p.add_argument("--windows", type=int, default=1)
    p.add_argument("--steps_per_closure", type=int, default=0, help="0: measured (default)")
    args = p.parse_args()
    slots = clicks.NUM_SLOTS
    if args.input == "generated":
        source = {"dataset_fn": workloads.clicks_dataset_fn(workloads.RECSYS_IDS)}
    else:
        parse = click_files.parse_heavy if args.parse == "heavy" else click_files.parse
        slots = 10 if args.parse == "heavy" else slots

        def parse_fn(records):
            ids, dense, label, _, _ = parse(records)
            return (ids, dense), label

        mode = tfps.data.Service() if args.input == "service" else tfps.data.Shard()
        source = {"data": tfps.data.FileInput(click_files.train_files(args.data_dir),
                                              parse_fn=parse_fn, batch_size=workloads.CLICKS_BATCH,
                                              mode=mode)}
    trainer = tfps.Trainer(
        strategy=tfps.make_strategy(), model=lambda: build(slots), loss_fn=workloads.recsys_loss,
        optimizer=workloads.clicks_optimizer(), batch_size=workloads.CLICKS_BATCH,
        options=tfps.TrainerOptions(steps_per_closure=args.steps_per_closure or None, log_every=0,
                                    checkpoint_every=None, progress_bar="off"), **source)
    target = trainer.train(args.warmup_steps).step
    rates, timed, meter, steps, packing = [], [], workloads.CpuMeter(), 0, None
    for _ in range(args.windows):
        meter.start()
        start = time.perf_counter()
        result = trainer.train(target + args.steps)
        timed.append(time.perf_counter() - start)
        meter.stop()
        rates.append((result.step - target) / timed[-1])
        steps += result.step - target
        target, packing = result.step, result.steps_per_closure
    workloads.report(rates, timed=sum(timed), steps_per_closure=packing,
                     input=args.input, parse=args.parse, **meter.fields(steps))


if __name__ == "__main__":
    main()
