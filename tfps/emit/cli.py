"""The flags of ``tfps-launch --emit``, and the engines it offers. Pure Python.

Each engine is a module of `tfps.emit` that provides:

* ``SPEC``: its typed spec, a frozen dataclass deriving from `tfps.emit.job.JobSpec`, whose
  ``engine`` names it on the command line and whose ``render()`` returns the text;
* ``FLAGS``: the argparse dests only it takes (every other mode refuses them);
* ``add_arguments(group)``: the flags only it declares (the Kubernetes engines' shared ones,
  `tfps.emit.kubejob.FLAGS`, are declared once, here);
* ``spec_from_args(args, **job)``: its spec from the parsed flags and `JobSpec`'s fields.

`ENGINES` lists them; adding one is its module and one entry there. The job's shape
(``--spec`` or the counts) is read by the launcher's `tfps.launch.config`, which hands it to
`spec_from_args`.
"""

from __future__ import annotations

import argparse
from types import ModuleType

from tfps import _cli
from tfps._units import parse_bytes
from tfps.emit import kubejob, slurm, tfjob, trainjob, volcano
from tfps.emit.job import JobSpec

__all__ = ["COMMON_FLAGS", "ENGINES", "add_arguments", "flags", "spec_from_args"]

ENGINES: dict[str, ModuleType] = {module.SPEC.engine: module
                                  for module in (tfjob, volcano, trainjob, slurm)}
# The flags (argparse dests) every engine takes: `JobSpec`'s. The task counts come from the
# cluster flags of the launcher (--spec, --num-ps, --num-workers, --evaluator).
COMMON_FLAGS = frozenset({"emit", "name", "gpus_per_worker", "model_bytes", "max_restarts"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--emit``, ``--name`` and every engine's flags, in one group.

    ``--gpus-per-worker``, ``--max-restarts`` and ``--model-bytes`` are the launcher's and
    the doctor's own flags, which ``--emit`` takes too.
    """
    group = parser.add_argument_group(
        "emit for external engines",
        "print a Kubeflow TFJob, a Volcano Job or a Kubeflow TrainJob (each with its "
        "NetworkPolicy), or a Slurm sbatch script, instead of launching; task counts come "
        "from --spec or --num-ps/--num-workers; --max-restarts and --model-bytes apply too")
    group.add_argument("--emit", choices=tuple(ENGINES),
                       help="print a manifest for an external engine instead of launching")
    group.add_argument("--name", help="job name (default: tfps-<script name>)")
    kubejob.add_arguments(group)
    for module in ENGINES.values():
        module.add_arguments(group)


def flags(engine: str) -> frozenset[str]:
    """The argparse dests ``--emit ENGINE`` takes beyond the cluster's."""
    return COMMON_FLAGS | ENGINES[engine].FLAGS


def spec_from_args(args: argparse.Namespace, *, script: str, num_ps: int, num_workers: int,
                   evaluator: bool, data_workers: int = 0) -> JobSpec:
    """The engine's spec, validated, from the parsed flags and the job's shape.

    Raises:
      TfpsError: naming the flag (or the spec's field) and the value; the CLI exits 2.
    """
    if args.name is not None and not args.name:
        raise _cli.UsageError("--name '': empty (leave --name out for the default, "
                              "tfps-<script name>)")
    job = dict(script=script, script_args=tuple(args.script_args), num_ps=num_ps,
               num_workers=num_workers, evaluator=evaluator,
               gpus_per_worker=args.gpus_per_worker or 0, name=args.name,
               model_bytes=None if args.model_bytes is None else parse_bytes(args.model_bytes),
               max_restarts=args.max_restarts, data_workers=data_workers)
    return ENGINES[args.emit].spec_from_args(args, **job)
