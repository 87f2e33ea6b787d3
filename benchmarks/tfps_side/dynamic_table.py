"""Both sides of ``dynamic_vs_static``: the recsys workload through `tfps.Trainer`, its ids
looked up in a `tfps.layers.DynamicEmbedding` (``--table dynamic``: hash tables on the ps,
counted, admitted at first sight, per-row Adagrad on the ps under each shard's lock) or in a
static sharded ``Embedding`` of ``--num_ids`` rows (``--table static``). Same ids (uniform over
``--num_ids``), so both touch the same rows per step; the warm-up admits them all. Prints
``bench: steps_per_sec=...`` (and ``table_rows=``, the dynamic table's rows at the end).
"""

import time

import side  # first: it imports tfps, which sets up TensorFlow's environment

# isort: split
import tensorflow as tf
import workloads

import tfps


def build(table: str, num_ids: int):
    ids = tf.keras.Input([workloads.RECSYS_SLOTS], dtype=tf.int64)
    dense = tf.keras.Input([workloads.RECSYS_DENSE])
    if table == "dynamic":
        emb = tfps.layers.DynamicEmbedding(workloads.RECSYS_DIM, initializer="zeros",
                                           name="ids")(ids)
    else:
        emb = tf.keras.layers.Embedding(num_ids, workloads.RECSYS_DIM,
                                        embeddings_initializer="zeros", name="ids")(ids)
    h = tf.keras.layers.Concatenate()([tf.keras.layers.Flatten()(emb), dense])
    h = tf.keras.layers.Dense(256, activation="relu")(h)
    h = tf.keras.layers.Dense(128, activation="relu")(h)
    return tf.keras.Model([ids, dense], tf.keras.layers.Dense(1)(h))


def main():
    parser = side.parser()
    parser.add_argument("--table", choices=("dynamic", "static"), required=True)
    args = parser.parse_args()
    trainer = tfps.Trainer(
        strategy=tfps.make_strategy(), model=lambda: build(args.table, args.num_ids),
        loss_fn=workloads.recsys_loss, optimizer=workloads.recsys_optimizer(),
        dataset_fn=workloads.recsys_dataset_fn(args.num_ids), batch_size=workloads.RECSYS_BATCH,
        options=tfps.TrainerOptions(steps_per_closure=args.steps_per_closure, log_every=0,
                                    progress_bar="off", checkpoint_every=None))
    target = trainer.train(args.warmup_steps).step
    rates, timed, meter, steps = [], [], workloads.CpuMeter(), 0
    for _ in range(args.windows):
        meter.start()
        start = time.perf_counter()
        result = trainer.train(target + args.steps)
        timed.append(time.perf_counter() - start)
        meter.stop()
        rates.append((result.step - target) / timed[-1])
        steps += result.step - target
        target = result.step
    extra = side.finish(args, trainer, args.steps_per_closure)  # graph, rows per step
    if args.table == "dynamic":
        extra["table_rows"] = sum(int(t.sizes()[:, 0].sum()) for t in tfps.layers.tables_of(
            trainer.model))
    workloads.report(rates, timed=sum(timed), steps_per_closure=args.steps_per_closure,
                     **meter.fields(steps), **extra)


if __name__ == "__main__":
    main()
