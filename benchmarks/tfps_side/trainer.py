"""tfps side: `tfps.Trainer` on a running cluster (TF_CONFIG), timed in the steady state.

``--steps_per_closure 0`` keeps the Trainer's default (measured packing); ``--accumulate K``
turns on local gradient accumulation. Everything else is `TrainerOptions`' defaults unless a
flag says otherwise. Each timed window is one ``trainer.train(target)`` call, timed from
outside, after a warm-up call that traces the closures. Prints ``bench: steps_per_sec=...``.
"""

import argparse
import os
import sys
import time

import tfps  # first: binds tf.keras to tf_keras

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import workloads  # noqa: E402


def main():
    parser = workloads.add_common_flags(argparse.ArgumentParser())
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--log_every", type=int, default=None, help="default: Trainer's")
    parser.add_argument("--checkpoint_every", type=int, default=-1,
                        help="-1: Trainer's default; 0: None")
    args = parser.parse_args()
    work = workloads.WORKLOADS[args.workload]

    options = {"steps_per_closure": args.steps_per_closure or None,
               "accumulate_steps": args.accumulate, "progress_bar": "off"}
    if args.log_every is not None:
        options["log_every"] = args.log_every
    if args.checkpoint_every >= 0:
        options["checkpoint_every"] = args.checkpoint_every or None
    trainer = tfps.Trainer(
        strategy=tfps.make_strategy(), model=lambda: work["model"](args.num_ids),
        loss_fn=work["loss"], optimizer=work["optimizer"](),
        dataset_fn=work["dataset_fn"](args.num_ids), batch_size=work["batch"],
        options=tfps.TrainerOptions(**options))

    target = trainer.train(args.warmup_steps).step
    rates, timed, per_closure = [], [], None
    for _ in range(args.windows):
        start = time.perf_counter()
        result = trainer.train(target + args.steps)
        timed.append(time.perf_counter() - start)
        rates.append((result.step - target) / timed[-1])
        target, per_closure = result.step, result.steps_per_closure
    workloads.report(rates, timed=sum(timed), steps_per_closure=per_closure)


if __name__ == "__main__":
    main()
