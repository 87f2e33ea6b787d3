"""Baseline of `fit_overhead`: raw tf_keras `Model.fit` under ParameterServerStrategy.

As the official tutorial does it: TFConfigClusterResolver, ParameterServerStrategy with a
MinSizePartitioner, model compiled under ``strategy.scope()`` with ``steps_per_execution``,
``fit(DatasetCreator(dataset_fn), epochs=..., steps_per_epoch=...)``. No tfps. Epoch 1 traces;
the other epochs are the timed windows. Prints ``bench: steps_per_sec=...``.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import workloads  # first: sets TF_USE_LEGACY_KERAS before TensorFlow loads

# isort: split
import tensorflow as tf


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps_per_epoch", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps_per_execution", type=int, required=True)
    args = parser.parse_args()

    cluster_resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    num_ps = len(cluster_resolver.cluster_spec().as_dict().get("ps", []))
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        cluster_resolver,
        variable_partitioner=tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=(256 << 10), max_shards=num_ps))
    with strategy.scope():
        model = workloads.build_recsys()
        model.compile(optimizer=workloads.recsys_optimizer(),
                      loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
                      steps_per_execution=args.steps_per_execution)
    timer = workloads.EpochTimer()
    model.fit(tf.keras.utils.experimental.DatasetCreator(workloads.recsys_dataset_fn()),
              epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, callbacks=[timer],
              verbose=0)
    ends = timer.ends
    rates = [args.steps_per_epoch / (b - a) for a, b in zip(ends, ends[1:])]
    workloads.report(rates, timed=ends[-1] - ends[0], steps_per_execution=args.steps_per_execution,
                     **timer.meter.fields(args.steps_per_epoch * (len(ends) - 1)))


if __name__ == "__main__":
    main()
