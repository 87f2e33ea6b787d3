"""tfps side of ``quality_guard``: train the clicks workload for ``--steps`` steps in the mode
the flags pick, then print the held-out AUC (``bench: auc=... oracle=...``)."""

import side  # first: it imports tfps, which sets up TensorFlow's environment

# isort: split
import tensorflow as tf
import workloads


def main():
    args = side.parser().parse_args()
    trainer = side.trainer(args)
    meter = workloads.CpuMeter()  # the whole run: tracing included
    meter.start()
    trainer.train(args.steps)
    meter.stop()
    auc, oracle = workloads.clicks_auc(
        lambda ids, dense: tf.squeeze(trainer.model([ids, dense]), 1), args.num_ids)
    print(f"bench: auc={auc:.5f} oracle={oracle:.5f} steps={trainer.step} " + " ".join(
        f"{k}={v}" for k, v in meter.fields(trainer.step).items()), flush=True)


if __name__ == "__main__":
    main()
