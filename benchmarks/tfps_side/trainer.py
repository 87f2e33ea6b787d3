"""tfps side: `tfps.Trainer` on a running cluster (TF_CONFIG), timed in the steady state.

``--steps_per_closure 0`` keeps the Trainer's default (measured packing); ``--accumulate K``,
``--local_steps H`` and ``--read_every S`` pick a mode; ``--levers off`` turns the exact
traffic levers off. Each timed window is one ``trainer.train(target)`` call, timed from
outside, after a warm-up call that traces the closures. Prints ``bench: steps_per_sec=...``
(and, with ``--graph_out``, writes the traced closure graph for the traffic counts).
"""

import time

import side  # first: it imports tfps, which sets up TensorFlow's environment

# isort: split
import workloads


def main():
    args = side.parser().parse_args()
    trainer = side.trainer(args)
    target = trainer.train(args.warmup_steps).step
    rates, timed, per_closure = [], [], None
    meter, steps = workloads.CpuMeter(), 0
    for _ in range(args.windows):
        meter.start()
        start = time.perf_counter()
        result = trainer.train(target + args.steps)
        timed.append(time.perf_counter() - start)
        meter.stop()
        rates.append((result.step - target) / timed[-1])
        steps += result.step - target
        target, per_closure = result.step, result.steps_per_closure
    workloads.report(rates, timed=sum(timed), steps_per_closure=per_closure,
                     **meter.fields(steps), **side.finish(args, trainer, per_closure))


if __name__ == "__main__":
    main()
