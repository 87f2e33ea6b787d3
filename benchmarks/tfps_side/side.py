"""What every tfps-side benchmark program shares: its flags and its Trainer."""

import argparse
import os
import sys

import tfps  # first: binds tf.keras to tf_keras

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import workloads


def parser() -> argparse.ArgumentParser:
    p = workloads.add_common_flags(argparse.ArgumentParser())
    p.add_argument("--accumulate", type=int, default=1)
    p.add_argument("--local_steps", type=int, default=1)
    p.add_argument("--read_every", type=int, default=1)
    p.add_argument("--outer_momentum", type=float, default=0.0)
    p.add_argument("--transfer", choices=("float32", "bfloat16"), default="float32",
                   help="local steps: the type pulls and pushes travel in")
    p.add_argument("--staleness_aware", action="store_true")
    p.add_argument("--levers", choices=("on", "off"), default="on",
                   help="off: stack_steps, dedup_lookups and fuse_dense all False")
    p.add_argument("--log_every", type=int, default=None, help="default: Trainer's")
    p.add_argument("--checkpoint_every", type=int, default=-1,
                   help="-1: Trainer's default; 0: None")
    return p


def mode(args) -> "tfps.train.modes.Mode":
    """The Trainer mode the flags choose."""
    from tfps.train import modes

    if args.local_steps > 1:
        return modes.LocalSteps(args.local_steps, outer_momentum=args.outer_momentum,
                                transfer_dtype=args.transfer)
    if args.accumulate > 1:
        return modes.Accumulate(args.accumulate)
    if args.read_every > 1:
        return modes.StaleReads(args.read_every)
    return modes.PerStep(args.steps_per_closure or None)


def trainer(args) -> "tfps.Trainer":
    """`tfps.Trainer` of the workload on the cluster of TF_CONFIG, with the flags' options."""
    work = workloads.WORKLOADS[args.workload]
    options = {"mode": mode(args), "progress_bar": "off"}
    if args.staleness_aware:
        options["staleness_aware"] = True
    if args.levers == "off":
        options.update(stack_steps=False, dedup_lookups=False, fuse_dense=False)
    if args.log_every is not None:
        options["log_every"] = args.log_every
    if args.checkpoint_every >= 0:
        options["checkpoint_every"] = args.checkpoint_every or None
    strategy = tfps.make_strategy()
    if args.on_worker:
        workloads.variables_on_worker(strategy)
    return tfps.Trainer(
        strategy=strategy, model=lambda: work["model"](args.num_ids),
        loss_fn=work["loss"], optimizer=work["optimizer"](),
        dataset_fn=work["dataset_fn"](args.num_ids), batch_size=work["batch"],
        options=tfps.TrainerOptions(**options))


def finish(args, trainer, steps_per_closure: int) -> dict:
    """The traffic fields of the ``bench:`` line; writes the traced graph if asked."""
    work = workloads.WORKLOADS[args.workload]
    if args.graph_out:
        workloads.save_graph(trainer.traced_graph, args.graph_out)
    if args.workload == "linear":
        return {}
    per_step, per_closure = workloads.distinct_ids(work["dataset_fn"](args.num_ids),
                                                   batches=4 * steps_per_closure,
                                                   group=steps_per_closure)
    return {"rows": f"{per_step:.1f},{per_closure:.1f}"}
