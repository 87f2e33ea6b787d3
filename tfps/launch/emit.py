"""``tfps-launch --emit tfjob|slurm``: the flags, and the manifest for a validated `EmitConfig`.

The manifests themselves are built by `tfps.launch.tfjob` (a Kubeflow TFJob + NetworkPolicy)
and `tfps.launch.sbatch` (a Slurm batch script); `render` picks one and fills it from the
config that `tfps.launch.config.config_from_args` validated. Resource flags are checked by
their argparse types here, so a bad value is one line naming the flag and the value:

>>> role_cpu("ps=2"), role_memory("worker=16Gi"), slurm_mem("64G")
(('ps', '2'), ('worker', '16Gi'), '64G')
>>> role_cpu("ps=two")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
argparse.ArgumentTypeError: expected ROLE=CPUS (ROLE: chief, ps, ...), got 'ps=two'
"""

from __future__ import annotations

import argparse

from tfps import _cli
from tfps.errors import ConfigError
from tfps.launch import resources, sbatch, tfjob
from tfps.launch.config import DEFAULT_BACKOFF_LIMIT, EmitConfig

__all__ = ["add_arguments", "render", "role_cpu", "role_memory", "slurm_mem"]

# Most CPUs one Slurm task asks for: more than any node has.
_MAX_CPUS_PER_TASK = 1024
_ROLES = ", ".join(resources.ROLES)


def _type(expected: str, parse):
    """An argparse type calling `parse(text)`; any `ConfigError` becomes one usage line."""
    def convert(text: str):
        try:
            return parse(text)
        except ConfigError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {_cli.quote(text)}"
                                             ) from None
    return convert


def _role(parse_value):
    def parse(text):
        role, value = resources.parse_role_value("", text)
        return role, parse_value(value)
    return parse


role_cpu = _type(f"ROLE=CPUS (ROLE: {_ROLES}; CPUS such as 2, 0.5 or 500m)",
                 _role(resources.parse_cpu))
role_memory = _type(f"ROLE=SIZE (ROLE: {_ROLES}; SIZE such as 4Gi, 512Mi or 4G)",
                    _role(lambda v: (resources.memory_mib(v), v)[1]))
slurm_mem = _type("memory per node such as 16G, 4096 (MB) or 0 (all of it)",
                  resources.slurm_mem)


def add_arguments(parser) -> None:
    group = parser.add_argument_group(
        "emit for external engines",
        "print a Kubeflow TFJob (+ NetworkPolicy) or a Slurm sbatch script instead of "
        "launching; task counts come from --spec or --num-ps/--num-workers; --max-restarts "
        "and --model-bytes apply too")
    group.add_argument("--emit", choices=("tfjob", "slurm"),
                       help="print a manifest for an external engine instead of launching")
    group.add_argument("--image", help="tfjob: container image with tfps and the script")
    group.add_argument("--name", help="job name (default: tfps-<script name>)")
    group.add_argument("--namespace", help="tfjob: Kubernetes namespace (default: kubectl's)")
    group.add_argument("--backoff-limit", type=_cli.int_in(0, 10_000), metavar="N",
                       help="tfjob: restarts allowed before the job fails "
                            f"(default {DEFAULT_BACKOFF_LIMIT})")
    group.add_argument("--restart-policy", choices=tfjob.RESTART_POLICIES,
                       help="tfjob: pod restart policy (default ExitCode: recreate a pod "
                            "killed by a signal, fail on the script's own error)")
    group.add_argument("--istio-sidecar", action="store_true", default=None,
                       help='tfjob: let Istio inject its side-car (default: pods are annotated '
                            'sidecar.istio.io/inject: "false"; TFJob pods cannot talk through '
                            'it)')
    group.add_argument("--cpu", action="append", type=role_cpu, metavar="ROLE=CPUS",
                       help="tfjob: CPU request of a role, e.g. ps=4 (repeatable; default "
                            "chief 2, ps 2-8 by workers per ps, worker 4, evaluator 2)")
    group.add_argument("--memory", action="append", type=role_memory, metavar="ROLE=SIZE",
                       help="tfjob: memory request and limit of a role, e.g. ps=16Gi "
                            "(repeatable; default chief 2Gi, ps 2Gi or 1Gi + twice its share "
                            "of --model-bytes, worker 4Gi, evaluator 2Gi + the model)")
    group.add_argument("--nodes", type=_cli.int_in(1, 100_000), metavar="N",
                       help="slurm: nodes to spread the tasks over, evenly (default: one per "
                            "task)")
    group.add_argument("--port-base", type=_cli.int_in(1024, 65535), metavar="PORT",
                       help="slurm: first port on each node (default: derived from the job "
                            "id, in 10000-32767)")
    group.add_argument("--cpus-per-task", type=_cli.int_in(1, _MAX_CPUS_PER_TASK),
                       metavar="N", help="slurm: #SBATCH --cpus-per-task (default: the "
                                         "largest role's, 4 for most jobs)")
    group.add_argument("--mem", type=slurm_mem, metavar="SIZE",
                       help="slurm: #SBATCH --mem, memory per node (default: tasks per node "
                            "times the largest role's memory)")
    group.add_argument("--time", dest="slurm_time", help="slurm: #SBATCH --time")
    group.add_argument("--partition", help="slurm: #SBATCH --partition")


def render(config: EmitConfig) -> str:
    """The manifest text for `config`; raises `TfpsError` for values the engine refuses."""
    name = config.name or tfjob.default_name(config.script)
    if config.engine == "tfjob":
        sizes = resources.defaults(num_ps=config.num_ps, num_workers=config.num_workers,
                                   model_bytes=config.model_bytes)
        for role, cpu in config.cpu:
            sizes[role] = resources.Resources(cpu, sizes[role].memory_mib)
        for role, memory in config.memory:
            sizes[role] = resources.Resources(sizes[role].cpu, resources.memory_mib(memory))
        return tfjob.to_yaml(tfjob.tfjob_manifest(
            name=name, image=config.image, script=config.script,
            script_args=config.script_args, num_ps=config.num_ps,
            num_workers=config.num_workers, evaluator=config.evaluator,
            gpus_per_worker=config.gpus_per_worker, namespace=config.namespace,
            backoff_limit=config.backoff_limit, restart_policy=config.restart_policy,
            istio_sidecar=config.istio_sidecar, resources=sizes,
            model_bytes=config.model_bytes, max_restarts=config.max_restarts))
    return sbatch.sbatch_script(
        script=config.script, script_args=config.script_args, num_ps=config.num_ps,
        num_workers=config.num_workers, evaluator=config.evaluator,
        gpus_per_worker=config.gpus_per_worker, name=name, nodes=config.nodes,
        port_base=config.port_base, time=config.time, partition=config.partition,
        cpus_per_task=config.cpus_per_task, mem=config.mem, model_bytes=config.model_bytes,
        max_restarts=config.max_restarts)
