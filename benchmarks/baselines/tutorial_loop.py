"""Baseline: the official ParameterServerStrategy tutorial's custom loop, by hand (no tfps).

The chief of a running cluster (TF_CONFIG): resolver -> strategy with a MinSizePartitioner ->
ClusterCoordinator -> per-worker dataset -> ``@tf.function`` step with ``strategy.run`` ->
``coordinator.schedule`` + ``join``. ``--steps_per_closure K`` runs K steps inside each
scheduled function (K = 1 is the tutorial verbatim). Prints ``bench: steps_per_sec=...``.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import workloads  # first: sets TF_USE_LEGACY_KERAS before TensorFlow loads

# isort: split
import tensorflow as tf


def main():
    args = workloads.add_common_flags(argparse.ArgumentParser()).parse_args()
    work = workloads.WORKLOADS[args.workload]

    cluster_resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    num_ps = len(cluster_resolver.cluster_spec().as_dict().get("ps", []))
    variable_partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=(256 << 10), max_shards=num_ps)
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        cluster_resolver, variable_partitioner=variable_partitioner)
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
    if args.on_worker:
        workloads.variables_on_worker(strategy)

    with strategy.scope():
        model = work["model"](args.num_ids)
        optimizer = work["optimizer"]()
    loss_fn = work["loss"]
    dataset_fn = work["dataset_fn"](args.num_ids)

    @tf.function
    def per_worker_dataset_fn():
        return strategy.distribute_datasets_from_function(dataset_fn)

    per_worker_dataset = coordinator.create_per_worker_dataset(per_worker_dataset_fn)
    per_worker_iterator = iter(per_worker_dataset)

    variables = model.trainable_variables

    def replica_fn(batch):
        with tf.GradientTape() as tape:
            loss = loss_fn(model, batch)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    traced = {}

    @tf.function
    def step_fn(iterator, num_steps):
        traced["graph"] = tf.compat.v1.get_default_graph()  # for the traffic counts
        loss = tf.constant(0.0)
        for _ in tf.range(num_steps):
            loss = strategy.run(replica_fn, args=(next(iterator),))
        return loss

    k = args.steps_per_closure
    num_steps = tf.constant(k)

    def run(steps):
        for _ in range(max(1, steps // k)):
            coordinator.schedule(step_fn, args=(per_worker_iterator, num_steps))
        coordinator.join()
        return max(1, steps // k) * k

    def rows():
        if args.graph_out:
            workloads.save_graph(traced["graph"], args.graph_out)
        if args.workload == "linear":
            return "0,0"
        per_step, per_closure = workloads.distinct_ids(dataset_fn, 4 * k, k)
        return f"{per_step:.1f},{per_closure:.1f}"

    workloads.measure_windows(run, args.warmup_steps, args.steps, args.windows, rows=rows)


if __name__ == "__main__":
    main()
