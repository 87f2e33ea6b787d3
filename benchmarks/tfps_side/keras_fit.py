"""tfps side of `fit_overhead`: tf_keras `fit` through the `tfps.keras` helpers.

`tfps.keras.make_strategy`, `steps_per_execution` (the helper's choice), `dataset_creator`
(via `tfps.keras.fit`) and `tfps.keras.fit` (with its per-epoch `ProgressLogger`). Epoch 1
traces; the other epochs are the timed windows. Prints ``bench: steps_per_sec=...
steps_per_execution=N`` (the baseline is then run with the same N).
"""

import argparse
import os
import sys

import tfps  # first: binds tf.keras to tf_keras

# isort: split
import tfps.keras

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tensorflow as tf
import workloads


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps_per_epoch", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    strategy = tfps.keras.make_strategy()
    spe = tfps.keras.steps_per_execution(args.steps_per_epoch, strategy)
    with strategy.scope():
        model = workloads.build_recsys()
        model.compile(optimizer=workloads.recsys_optimizer(),
                      loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
                      steps_per_execution=spe)
    timer = workloads.EpochTimer()
    tfps.keras.fit(model, workloads.recsys_dataset_fn(), epochs=args.epochs,
                   steps_per_epoch=args.steps_per_epoch, callbacks=[timer],
                   progress=True)
    ends = timer.ends
    rates = [args.steps_per_epoch / (b - a) for a, b in zip(ends, ends[1:])]
    workloads.report(rates, timed=ends[-1] - ends[0], steps_per_execution=spe,
                     **timer.meter.fields(args.steps_per_epoch * (len(ends) - 1)))


if __name__ == "__main__":
    main()
