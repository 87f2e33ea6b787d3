"""A Slurm batch script for a tfps job: ``tfps-launch --emit slurm``.

One ``srun`` step runs every task; each runs ``tfps-launch --from-env SCRIPT ARGS``, which reads
the step from Slurm's environment (`tfps.cluster.slurm`). `SlurmSpec` validates the job once
and `SlurmSpec.render` returns the script's text.

What the job recovers from by itself (each launcher restarts its own task, ``--max-restarts``
times): a worker that dies is restarted in place and rejoins; a ps that dies is restarted in
place, and the chief's launcher, which watches every ps address, restarts the chief once the
ps is back, from its latest checkpoint (`tfps.launch.run.peers`); a chief killed by a signal
resumes from its checkpoint. When the chief is done, its launcher tells the others on the
chief's port and they exit 0, so the step ends cleanly; the evaluator's step is ended too.

With ``requeue``, the job survives preemption: Slurm signals the batch shell 90 s before the
end (``--signal=B:USR1@90``), the script passes SIGUSR1 to the chief's launcher, which passes
it to the chief: `tfps.Trainer` checkpoints at the next closure boundary and exits 138
(`tfps.exit_codes.PREEMPTED`); the script then requeues the job (``scontrol requeue``), which
resumes from that checkpoint, its output appended to the same file.

Where ``sinfo`` answers, the request is checked against the partition's nodes first
(`tfps.emit.slurm_nodes`): refused when no node can ever run it, defaults cut to fit.

>>> text = SlurmSpec(script="train.py", num_ps=2, num_workers=2, nodes=2).render()
>>> [l for l in text.splitlines() if l.startswith("#SBATCH --n")]
['#SBATCH --nodes=2', '#SBATCH --ntasks=5', '#SBATCH --ntasks-per-node=3']
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from tfps import _cli, validate
from tfps.cluster.slurm import MIN_PORT_BASE, PORT_RANGE, highest_port_base
from tfps.emit import resources as _resources
from tfps.emit import slurm_nodes, slurm_script
from tfps.emit.job import JobSpec
from tfps.emit.slurm_script import PREEMPTION_NOTICE_S
from tfps.errors import ConfigError

__all__ = ["FLAGS", "PREEMPTION_NOTICE_S", "SPEC", "SlurmSpec", "add_arguments",
           "spec_from_args"]

# Most CPUs one Slurm task asks for: more than any node has.
_MAX_CPUS_PER_TASK = 1024
# What sbatch reads as one word: no spaces, quotes, backslashes or shell expansions.
_NOT_IN_WORD = "'\"\\$`"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlurmSpec(JobSpec):
    """An sbatch script that runs chief, ps and workers as one ``srun`` step.

    tfps reads the step from Slurm's environment (`tfps.Cluster.from_env`): rank 0 is the
    chief, ranks ``1..num_ps`` the ps tasks, the rest workers (SlurmClusterResolver's order),
    each on port ``TFPS_PORT_BASE + local index`` of its node. The script exports
    ``TFPS_NUM_PS`` and ``TFPS_PORT_BASE`` so every task computes the same split; the job's
    exit status is the chief's (module docstring: what is recovered). With ``evaluator``, the
    evaluator runs as a second one-task step beside the first. ``gpus_per_worker`` is
    ``--gpus-per-task`` (Slurm steps are homogeneous; chief and ps hide theirs).

    Attributes (beyond `JobSpec`'s; ``name`` is the Slurm job name):
      nodes: nodes to spread the tasks over, evenly (``--ntasks-per-node``); None: one node
        per task.
      port_base: first port on each node; None: derived from the job id at run time.
      time, partition: ``#SBATCH --time`` / ``--partition`` when given.
      cpus_per_task: ``--cpus-per-task``; None: the largest role's (`tfps.emit.resources`).
      mem: ``--mem`` (memory per node, Slurm's syntax; at least
        `tfps.emit.resources.MIN_TASK_MIB` per task); None: sized from the roles.
      requeue: survive preemption (module docstring): ``--requeue``,
        ``--signal=B:USR1@90``, ``--open-mode=append``.
      partition_nodes: the nodes the job may run on (`tfps.emit.slurm_nodes`, from
        ``sinfo``), or None: the request is checked against them, and the defaults of
        ``cpus_per_task`` and ``mem`` are cut down to fit.

    After validation, ``nodes``, ``cpus_per_task`` and ``mem`` hold the values written.

    Raises:
      ConfigError: naming the field and the value received.

    >>> SlurmSpec(script="t.py", num_ps=1, num_workers=2, nodes=1).mem  # 4 tasks of 4 GiB
    '16G'
    """

    engine: ClassVar[str] = "slurm"

    nodes: int | None = None
    port_base: int | None = None
    time: str | None = None
    partition: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    requeue: bool = False
    partition_nodes: tuple[slurm_nodes.Node, ...] | None = None

    def __post_init__(self):
        super().__post_init__()
        validate.integer("cpus_per_task", self.cpus_per_task, low=1, high=_MAX_CPUS_PER_TASK,
                         allow_none=True)
        if self.nodes is None:
            object.__setattr__(self, "nodes", self.num_tasks)
        validate.count("nodes", self.nodes, 1)
        if self.nodes > self.num_tasks:
            raise ConfigError(f"Argument `nodes` must be at most the number of tasks "
                              f"({self.num_tasks}). Received: nodes={self.nodes}")
        highest = highest_port_base(self.tasks_per_node)
        if self.port_base is not None and (
                isinstance(self.port_base, bool) or not isinstance(self.port_base, int)
                or not MIN_PORT_BASE <= self.port_base <= highest):
            raise ConfigError(f"Argument `port_base` must be an integer in {MIN_PORT_BASE}-"
                              f"{highest} ({self.tasks_per_node} task"
                              f"{'s' if self.tasks_per_node != 1 else ''} per node, the last "
                              f"on port_base + {self.tasks_per_node - 1}). Received: "
                              f"port_base={self.port_base!r}")
        for arg in ("name", "time", "partition"):
            value = getattr(self, arg)
            if value is not None and (not isinstance(value, str) or not value or any(
                    c.isspace() or c in _NOT_IN_WORD for c in value)):
                raise ConfigError(f"Argument `{arg}` must be a non-empty word without spaces "
                                  f"or quotes. Received: {arg}={value!r}")
        if self.time is not None:
            slurm_nodes.check_time(self.time, "Argument `time`")
        validate.boolean("requeue", self.requeue)
        mem_mib = None
        if self.mem is not None:
            try:
                mem_mib = _resources.slurm_mem_mib(self.mem)
            except ConfigError:
                raise validate.fail("mem", self.mem, "Slurm's memory per node, such as 16G, "
                                                     "4096 (MB) or 0 (all of it)") from None
            if mem_mib and mem_mib < self._least_mib():
                raise validate.fail("mem", self.mem, f"at least {self._least_mib()} MB: "
                                    f"{self._tasks_on_first_node()} tasks on a node, each "
                                    f"needing {_resources.MIN_TASK_MIB} MB, or 0 (all of it)")
        sizes = self.default_resources()
        training = [sizes[role] for role in ("chief", "ps", "worker")]
        default_cpus = max(math.ceil(float(r.cpu)) for r in training)
        # Steps are homogeneous: every task may be the largest role; the evaluator overlaps
        # on the first node.
        default_mib = self.tasks_per_node * max(r.memory_mib for r in training)
        default_mib += sizes["evaluator"].memory_mib if self.evaluator else 0
        default_mem = f"{math.ceil(default_mib / 1024)}G"
        if self.partition_nodes:
            cpus, mib = slurm_nodes.fit(
                self.partition_nodes, nodes=self.nodes, tasks_per_node=self.tasks_per_node,
                cpus_per_task=self.cpus_per_task, mem_mib=mem_mib, default_cpus=default_cpus,
                default_mib=math.ceil(default_mib / 1024) * 1024,
                least_mib=self._least_mib(), partition=self.partition)
            default_cpus = cpus
            if mib < default_mib:
                default_mem = f"{mib}M"
        if self.cpus_per_task is None:
            object.__setattr__(self, "cpus_per_task", default_cpus)
        if self.mem is None:
            object.__setattr__(self, "mem", default_mem)

    def _tasks_on_first_node(self) -> int:
        return self.tasks_per_node + int(self.evaluator)

    def _least_mib(self) -> int:
        """The least memory per node the job runs with: `MIN_TASK_MIB` a task."""
        return self._tasks_on_first_node() * _resources.MIN_TASK_MIB

    @property
    def tasks_per_node(self) -> int:
        """At most this many tasks per node, so that block distribution spreads them evenly
        instead of filling the first node's CPUs."""
        return math.ceil(self.num_tasks / self.nodes)

    def render(self) -> str:
        """The batch script (``sbatch`` it): `tfps.emit.slurm_script`."""
        return slurm_script.render(self)


# ------------------------------------------------------------------------------ flags
# What `tfps.emit.cli` reads of an engine: its spec, the flags (argparse dests) only it
# takes, `add_arguments` and `spec_from_args`.
SPEC = SlurmSpec
FLAGS = frozenset({"nodes", "port_base", "slurm_time", "partition", "cpus_per_task", "mem",
                   "requeue"})

slurm_mem = _cli.arg_type("memory per node such as 16G, 4096 (MB) or 0 (all of it)",
                          _resources.slurm_mem)
slurm_time = _cli.arg_type("Slurm's time limit such as 90 (minutes), 4:00:00 or 2-12:00:00",
                           slurm_nodes.check_time)


def add_arguments(group) -> None:
    """Adds this engine's flags to the argparse `group` of ``--emit``."""
    group.add_argument("--nodes", type=_cli.int_in(1, validate.MAX_COUNT), metavar="N",
                       help="slurm: nodes to spread the tasks over, evenly (default: one per "
                            "task)")
    group.add_argument("--port-base", type=_cli.int_in(MIN_PORT_BASE, 65535), metavar="PORT",
                       help=f"slurm: first port on each node, the last task's port at most "
                            f"65535 (default: derived from the job id, in "
                            f"{PORT_RANGE[0]}-{PORT_RANGE[1]})")
    group.add_argument("--cpus-per-task", type=_cli.int_in(1, _MAX_CPUS_PER_TASK),
                       metavar="N", help="slurm: #SBATCH --cpus-per-task (default: the "
                                         "largest role's, 4 for most jobs)")
    group.add_argument("--mem", type=slurm_mem, metavar="SIZE",
                       help="slurm: #SBATCH --mem, memory per node, at least 1 GiB per task "
                            "(default: tasks per node times the largest role's memory)")
    group.add_argument("--time", dest="slurm_time", type=slurm_time, metavar="TIME",
                       help="slurm: #SBATCH --time (90, 4:00:00, 2-12:00:00, ...)")
    group.add_argument("--partition", help="slurm: #SBATCH --partition")
    group.add_argument("--requeue", action="store_true", default=None,
                       help=f"slurm: survive preemption: SIGUSR1 {PREEMPTION_NOTICE_S} s before "
                            f"the end, the chief checkpoints and the job requeues itself and "
                            f"resumes")


def spec_from_args(args, **job) -> SlurmSpec:
    """The `SlurmSpec` of parsed flags; `job`: `JobSpec`'s fields, already read.

    Where ``sinfo`` answers, the request is checked against the partition's nodes, once
    every flag has passed its own checks (`tfps.emit.slurm_nodes`).

    Raises:
      ConfigError: naming the field and the value; or no node can ever run the job.
    """
    given = {"nodes": args.nodes, "port_base": args.port_base, "time": args.slurm_time,
             "partition": args.partition, "cpus_per_task": args.cpus_per_task,
             "mem": args.mem, "requeue": args.requeue}
    fields = dict(job, **{k: v for k, v in given.items() if v is not None})
    SlurmSpec(**fields)  # every flag's own checks, before sinfo is asked
    nodes = slurm_nodes.query(args.partition)
    candidates = slurm_nodes.in_partition(nodes or (), args.partition)
    if nodes is not None and not candidates:
        raise ConfigError(f"--partition {args.partition!r}: sinfo lists no node in it")
    return SlurmSpec(**fields, partition_nodes=tuple(candidates) or None)
