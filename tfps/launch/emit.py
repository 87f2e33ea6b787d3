"""``tfps-launch --emit tfjob|slurm``: the flags, and the manifest for a validated `EmitConfig`.

The manifests themselves are built by `tfps.launch.tfjob` (a Kubeflow TFJob + NetworkPolicy)
and `tfps.launch.sbatch` (a Slurm batch script); `render` picks one and fills it from the
config that `tfps.launch.config.config_from_args` validated.
"""

from __future__ import annotations

from tfps import _cli
from tfps.launch import sbatch, tfjob
from tfps.launch.config import DEFAULT_BACKOFF_LIMIT, EmitConfig
from tfps.slurm import DEFAULT_PORT_BASE

__all__ = ["add_arguments", "render"]


def add_arguments(parser) -> None:
    group = parser.add_argument_group(
        "emit for external engines",
        "print a Kubeflow TFJob (+ NetworkPolicy) or a Slurm sbatch script instead of "
        "launching; task counts come from --spec or --num-ps/--num-workers")
    group.add_argument("--emit", choices=("tfjob", "slurm"),
                       help="print a manifest for an external engine instead of launching")
    group.add_argument("--image", help="tfjob: container image with tfps and the script")
    group.add_argument("--name", help="job name (default: tfps-<script name>)")
    group.add_argument("--namespace", help="tfjob: Kubernetes namespace (default: kubectl's)")
    group.add_argument("--backoff-limit", type=_cli.int_in(0, 10_000), metavar="N",
                       help="tfjob: restarts allowed before the job fails "
                            f"(default {DEFAULT_BACKOFF_LIMIT})")
    group.add_argument("--nodes", type=_cli.int_in(1, 100_000), metavar="N",
                       help="slurm: nodes to spread the tasks over (default: one per task)")
    group.add_argument("--port-base", type=_cli.int_in(1024, 65535), metavar="PORT",
                       help=f"slurm: first port on each node (default {DEFAULT_PORT_BASE})")
    group.add_argument("--time", dest="slurm_time", help="slurm: #SBATCH --time")
    group.add_argument("--partition", help="slurm: #SBATCH --partition")


def render(config: EmitConfig) -> str:
    """The manifest text for `config`; raises `TfpsError` for values the engine refuses."""
    name = config.name or tfjob.default_name(config.script)
    if config.engine == "tfjob":
        return tfjob.to_yaml(tfjob.tfjob_manifest(
            name=name, image=config.image, script=config.script,
            script_args=config.script_args, num_ps=config.num_ps,
            num_workers=config.num_workers, evaluator=config.evaluator,
            gpus_per_worker=config.gpus_per_worker, namespace=config.namespace,
            backoff_limit=config.backoff_limit))
    return sbatch.sbatch_script(
        script=config.script, script_args=config.script_args, num_ps=config.num_ps,
        num_workers=config.num_workers, evaluator=config.evaluator,
        gpus_per_worker=config.gpus_per_worker, name=name, nodes=config.nodes,
        port_base=DEFAULT_PORT_BASE if config.port_base is None else config.port_base,
        time=config.time,
        partition=config.partition)
