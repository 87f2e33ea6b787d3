"""Baseline of ``closure_vs_loop``: a plain training loop, scheduled on worker 0 of a running
cluster (TF_CONFIG) with its variables on that worker (`workloads.variables_on_worker`).

Everything but the step is what the tfps side gets: the same model, optimizer and data, the
same placement (no ps traffic on either side), the same scheduling (one
`ClusterCoordinator.schedule` of ``--steps_per_closure`` steps) and the same input (a
per-worker dataset whose elements stack one closure's batches, fetched once per closure). The
step is the plain one: tape, gradients, ``optimizer.apply_gradients``. Prints
``bench: steps_per_sec=...``.
"""

import argparse
import operator
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import workloads  # first: sets TF_USE_LEGACY_KERAS before TensorFlow loads

# isort: split
import tensorflow as tf


def main():
    args = workloads.add_common_flags(argparse.ArgumentParser()).parse_args()
    work = workloads.WORKLOADS[args.workload]
    k = args.steps_per_closure
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        tf.distribute.cluster_resolver.TFConfigClusterResolver())
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
    workloads.variables_on_worker(strategy)
    with strategy.scope():
        model = work["model"](args.num_ids)
        optimizer = work["optimizer"]()
    loss_fn = work["loss"]
    dataset_fn = work["dataset_fn"](args.num_ids)

    def stacked(context):
        return dataset_fn(context).batch(k, drop_remainder=True)

    iterator = iter(coordinator.create_per_worker_dataset(
        lambda: strategy.distribute_datasets_from_function(stacked)))
    variables = model.trainable_variables
    traced = {}

    def replica_fn(batch):
        with tf.GradientTape() as tape:
            loss = loss_fn(model, batch)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    @tf.function
    def closure(iterator):
        traced["graph"] = tf.compat.v1.get_default_graph()  # for the op counts
        batches = next(iterator)
        loss = tf.constant(0.0)
        for i in tf.range(k):
            loss = strategy.run(replica_fn,
                                args=(tf.nest.map_structure(operator.itemgetter(i), batches),))
        return loss

    def run(steps):
        for _ in range(max(1, steps // k)):
            coordinator.schedule(closure, args=(iterator,))
        coordinator.join()
        return max(1, steps // k) * k

    def graph():
        if args.graph_out:
            workloads.save_graph(traced["graph"], args.graph_out)
        return k

    workloads.measure_windows(run, args.warmup_steps, args.steps, args.windows,
                              steps_per_closure=graph)


if __name__ == "__main__":
    main()
