"""Baseline: one process's training loop, run on worker 0 of a running cluster (TF_CONFIG).

The same ``@tf.function`` as ``local.py`` (``--steps_per_closure`` steps per call, one local
dataset iterator, the optimizer's own kernels), with the model, the optimizer's slots and the
iterator created on worker 0 and every call executed there: no strategy scope, no ps, no
per-worker dataset. What a closure of the Trainer should cost when its variables are on its own device
(`closure_vs_loop`). Prints ``bench: steps_per_sec=...``.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import workloads  # noqa: E402  (plain TF; sets TF_USE_LEGACY_KERAS before TF loads)

import tensorflow as tf  # noqa: E402


def main():
    args = workloads.add_common_flags(argparse.ArgumentParser()).parse_args()
    work = workloads.WORKLOADS[args.workload]
    # Connected as the strategies connect (with their device filters: a bare
    # `experimental_connect_to_cluster` waits for every task to see every other); the strategy
    # itself is not used.
    tf.distribute.experimental.ParameterServerStrategy(
        tf.distribute.cluster_resolver.TFConfigClusterResolver())
    k = args.steps_per_closure
    traced = {}
    with tf.device(workloads.WORKER0):
        model = work["model"](args.num_ids)
        optimizer = work["optimizer"]()
        loss_fn = work["loss"]
        iterator = iter(work["dataset_fn"](args.num_ids)(None))
        variables = model.trainable_variables

        @tf.function
        def train_steps(num_steps):
            traced["graph"] = tf.compat.v1.get_default_graph()  # for the op counts
            loss = tf.constant(0.0)
            for _ in tf.range(num_steps):
                batch = next(iterator)
                with tf.GradientTape() as tape:
                    loss = loss_fn(model, batch)
                grads = tape.gradient(loss, variables)
                optimizer.apply_gradients(zip(grads, variables))
            return loss

        num_steps = tf.constant(k)

        def run(steps):
            for _ in range(max(1, steps // k)):
                loss = train_steps(num_steps)
            float(loss)  # waits for the last call
            return max(1, steps // k) * k

        def graph():
            if args.graph_out:
                workloads.save_graph(traced["graph"], args.graph_out)
            return k

        workloads.measure_windows(run, args.warmup_steps, args.steps, args.windows,
                                  steps_per_closure=graph)


if __name__ == "__main__":
    main()
