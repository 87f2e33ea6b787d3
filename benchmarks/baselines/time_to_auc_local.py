"""Baseline of ``time_to_auc``: the clicks workload in one process, no strategy (no tfps),
trained until the held-out AUC reaches ``--target`` x the oracle's; evaluation not counted.

Same model, optimizer, batch and data stream as the tfps side; ``--steps`` steps per timed
chunk (one ``tf.function`` call of ``--steps_per_closure`` steps at a time), the clock started
after a first call (its tracing). Prints ``bench: seconds=... steps=... auc=... oracle=...``.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import workloads  # first: sets TF_USE_LEGACY_KERAS before TensorFlow loads

# isort: split
import tensorflow as tf


def main():
    p = workloads.add_common_flags(argparse.ArgumentParser())
    p.add_argument("--target", type=float, default=0.97)
    p.add_argument("--max_steps", type=int, default=20_000)
    args = p.parse_args()
    work = workloads.WORKLOADS[args.workload]
    model = work["model"](args.num_ids)
    optimizer = work["optimizer"]()
    iterator = iter(work["dataset_fn"](args.num_ids)(None))
    variables = model.trainable_variables

    @tf.function
    def train_steps(num_steps):
        for _ in tf.range(num_steps):
            batch = next(iterator)
            with tf.GradientTape() as tape:
                loss = work["loss"](model, batch)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    k = args.steps_per_closure

    def run(steps):
        for _ in range(max(1, steps // k)):
            train_steps(tf.constant(k))
        float(optimizer.iterations.numpy())  # waits for the last call
        return max(1, steps // k) * k

    def predict(ids, dense):
        return tf.squeeze(model([ids, dense]), 1)

    step = run(args.warmup_steps)
    first = step
    seconds, auc, oracle, meter = 0.0, 0.0, 1.0, workloads.CpuMeter()
    while step < args.max_steps:
        meter.start()
        start = time.perf_counter()
        step += run(args.steps)
        seconds += time.perf_counter() - start
        meter.stop()
        auc, oracle = workloads.clicks_auc(predict, args.num_ids)
        print(f"time_to_auc: step={step} seconds={seconds:.2f} auc={auc:.4f}", flush=True)
        if auc >= args.target * oracle:
            break
    print(f"bench: seconds={seconds:.2f} steps={step} auc={auc:.4f} oracle={oracle:.4f} "
          f"reached={int(auc >= args.target * oracle)} " + " ".join(
              f"{k}={v}" for k, v in meter.fields(step - first).items()), flush=True)


if __name__ == "__main__":
    main()
