"""tfps side of ``time_to_auc``: train the clicks workload on the cluster of TF_CONFIG until
the held-out AUC reaches ``--target`` x the oracle's; evaluation time is not counted.

The clock starts after a first closure (its tracing is not training); it then runs while the
Trainer trains, in chunks of ``--steps`` steps, each followed by an (untimed) evaluation on the
chief. Prints ``bench: seconds=<training seconds> steps=<trained> auc=... oracle=...``.
"""

import time

import side  # first: it imports tfps, which sets up TensorFlow's environment

# isort: split
import tensorflow as tf
import workloads


def main():
    p = side.parser()
    p.add_argument("--target", type=float, default=0.97)
    p.add_argument("--max_steps", type=int, default=20_000)
    args = p.parse_args()
    trainer = side.trainer(args)

    def predict(ids, dense):
        return tf.squeeze(trainer.model([ids, dense]), 1)

    step = trainer.train(args.warmup_steps).step
    first = step
    seconds, auc, oracle, meter = 0.0, 0.0, 1.0, workloads.CpuMeter()
    while step < args.max_steps:
        meter.start()
        start = time.perf_counter()
        result = trainer.train(step + args.steps)
        seconds += time.perf_counter() - start
        meter.stop()
        step = result.step
        auc, oracle = workloads.clicks_auc(predict, args.num_ids)
        print(f"time_to_auc: step={step} seconds={seconds:.2f} auc={auc:.4f}", flush=True)
        if auc >= args.target * oracle:
            break
    print(f"bench: seconds={seconds:.2f} steps={step} auc={auc:.4f} oracle={oracle:.4f} "
          f"reached={int(auc >= args.target * oracle)} "
          + " ".join(f"{k}={v}" for k, v in {**meter.fields(step - first), **side.finish(
              args, trainer, result.steps_per_closure)}.items()), flush=True)


if __name__ == "__main__":
    main()
