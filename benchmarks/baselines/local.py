"""Baseline: the same model and data trained in one process, no strategy, no cluster.

A plain ``@tf.function`` that runs ``--steps_per_closure`` training steps per call (the same
packing the distributed side gets), one dataset iterator. Prints ``bench: steps_per_sec=...``.
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
    model = work["model"](args.num_ids)
    optimizer = work["optimizer"]()
    loss_fn = work["loss"]
    iterator = iter(work["dataset_fn"](args.num_ids)(None))
    variables = model.trainable_variables

    @tf.function
    def train_steps(num_steps):
        loss = tf.constant(0.0)
        for _ in tf.range(num_steps):
            batch = next(iterator)
            with tf.GradientTape() as tape:
                loss = loss_fn(model, batch)
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables))
        return loss

    k = args.steps_per_closure
    num_steps = tf.constant(k)

    def run(steps):
        for _ in range(max(1, steps // k)):
            loss = train_steps(num_steps)
        float(loss)  # waits for the last call
        return max(1, steps // k) * k

    workloads.measure_windows(run, args.warmup_steps, args.steps, args.windows)


if __name__ == "__main__":
    main()
