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

>>> text = SlurmSpec(script="train.py", num_ps=2, num_workers=2, nodes=2).render()
>>> [l for l in text.splitlines() if l.startswith("#SBATCH --n")]
['#SBATCH --nodes=2', '#SBATCH --ntasks=5', '#SBATCH --ntasks-per-node=3']
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from typing import ClassVar

from tfps import _cli, validate
from tfps._env import TASK_ENV
from tfps.cluster.slurm import PORT_RANGE
from tfps.emit import resources as _resources
from tfps.emit.job import JobSpec
from tfps.errors import ConfigError

__all__ = ["FLAGS", "SPEC", "SlurmSpec", "add_arguments", "spec_from_args"]

# Most CPUs one Slurm task asks for: more than any node has.
_MAX_CPUS_PER_TASK = 1024
# The lowest port --port-base may fix: below it are the privileged ports.
_MIN_PORT_BASE = 1024
# Seconds the batch script lets the evaluator's step end on its own once training is done
# (its launcher ends it when the chief's launcher says the chief is done) before ending it.
_EVALUATOR_STOP_S = 30
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
      mem: ``--mem`` (memory per node, Slurm's syntax); None: sized from the roles.

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
        highest = 65535 - self.tasks_per_node
        if self.port_base is not None and (
                isinstance(self.port_base, bool) or not isinstance(self.port_base, int)
                or not _MIN_PORT_BASE <= self.port_base <= highest):
            raise ConfigError(f"Argument `port_base` must be an integer in {_MIN_PORT_BASE}-"
                              f"{highest}. Received: port_base={self.port_base!r}")
        for arg in ("name", "time", "partition"):
            value = getattr(self, arg)
            if value is not None and (not isinstance(value, str) or not value or any(
                    c.isspace() or c in _NOT_IN_WORD for c in value)):
                raise ConfigError(f"Argument `{arg}` must be a non-empty word without spaces "
                                  f"or quotes. Received: {arg}={value!r}")
        if self.mem is not None:
            try:
                _resources.slurm_mem(self.mem)
            except ConfigError:
                raise validate.fail("mem", self.mem, "Slurm's memory per node, such as 16G, "
                                                     "4096 (MB) or 0 (all of it)") from None
        sizes = self.default_resources()
        training = [sizes[role] for role in ("chief", "ps", "worker")]
        if self.cpus_per_task is None:
            object.__setattr__(self, "cpus_per_task",
                               max(math.ceil(float(r.cpu)) for r in training))
        if self.mem is None:
            # Steps are homogeneous: every task may be the largest role; the evaluator
            # overlaps on the first node.
            mib = self.tasks_per_node * max(r.memory_mib for r in training)
            mib += sizes["evaluator"].memory_mib if self.evaluator else 0
            object.__setattr__(self, "mem", f"{math.ceil(mib / 1024)}G")

    @property
    def tasks_per_node(self) -> int:
        """At most this many tasks per node, so that block distribution spreads them evenly
        instead of filling the first node's CPUs."""
        return math.ceil(self.num_tasks / self.nodes)

    def _port_base_line(self) -> str:
        if self.port_base is not None:
            return f"export TFPS_PORT_BASE={self.port_base}"
        # tfps.cluster.slurm.job_port_base, spelled out: jobs sharing a node do not collide.
        slots = (PORT_RANGE[1] + 1 - PORT_RANGE[0]) // self.tasks_per_node
        return (f"export TFPS_PORT_BASE=$(( {PORT_RANGE[0]} + SLURM_JOB_ID % {slots} * "
                f"{self.tasks_per_node} ))  # this job's slot")

    def render(self) -> str:
        """The batch script (``sbatch`` it)."""
        run = " ".join(shlex.quote(a) for a in (*self.launcher_args(), self.script,
                                                *self.script_args))
        lines = [
            "#!/bin/bash",
            f"# Generated by tfps-launch --emit slurm: 1 chief + {self.num_ps} ps + "
            f"{self.num_workers} "
            f"worker{'s' if self.num_workers != 1 else ''}"
            f"{' + 1 evaluator' if self.evaluator else ''}. Submit with: sbatch THIS_FILE",
            f"#SBATCH --job-name={self.name}",
            f"#SBATCH --nodes={self.nodes}",
            f"#SBATCH --ntasks={self.num_tasks}",
            # At most this many per node, so block distribution spreads the tasks evenly instead
            # of filling the first node's CPUs.
            f"#SBATCH --ntasks-per-node={self.tasks_per_node}",
            f"#SBATCH --cpus-per-task={self.cpus_per_task}",
            f"#SBATCH --mem={self.mem}",
        ]
        if self.gpus_per_worker:
            lines.append(f"#SBATCH --gpus-per-task={self.gpus_per_worker}")
        if self.time:
            lines.append(f"#SBATCH --time={self.time}")
        if self.partition:
            lines.append(f"#SBATCH --partition={self.partition}")
        lines.append(f"#SBATCH --output={self.name}-%j.out")
        hide_gpus = 'export CUDA_VISIBLE_DEVICES=""; ' if self.gpus_per_worker else ""
        lines += [
            "",
            "# Make tfps-launch available on every node here "
            "(e.g. source /path/to/venv/bin/activate).",
            "",
            "# tfps.Cluster.from_env reads this step: rank 0 is the chief, ranks 1..TFPS_NUM_PS "
            "the ps",
            "# tasks, the rest workers; each listens on TFPS_PORT_BASE + its index on its node.",
            f"export TFPS_NUM_PS={self.num_ps}",
            self._port_base_line(),
            *(f"export {k}={v}" for k, v in TASK_ENV.items()),
            "unset TF_CONFIG  # one from the submitting shell would win over Slurm's layout",
            "# Rank 0 runs on this (the first) node and leaves its exit status here.",
            'export TFPS_CHIEF_STATUS="${TMPDIR:-/tmp}/tfps-${SLURM_JOB_ID:-$$}.chief-status"',
            'rm -f "$TFPS_CHIEF_STATUS"',
            "",
        ]
        if self.evaluator:
            lines += [
                "# The evaluator runs beside the training step, as a one-task step of its own. "
                "Its",
                "# TF_CONFIG lists the training cluster (as Kubeflow's does); tfps-launch strips "
                "the",
                "# evaluator from what chief, ps and workers see (a coordinator that lists it "
                "hangs).",
                "evaluator_tf_config=$(python -c 'from tfps.cluster.slurm import "
                "evaluator_tf_config as c; print(c())') || exit 1",
                'srun --overlap --nodes=1 --ntasks=1 env TF_CONFIG="$evaluator_tf_config" '
                f"tfps-launch --from-env {run} &",
                "evaluator_pid=$!",
                "",
            ]
        lines += [
            "# --distribution=block: ranks fill the nodes in order, as tfps maps them. Each "
            "launcher",
            "# restarts its own task: a worker rejoins; after a lost ps, the chief's launcher",
            "# restarts the chief from its checkpoint once the ps is back. When the chief is done,",
            "# the other launchers hear it on the chief's port and exit 0: the step ends cleanly.",
            "srun --distribution=block --kill-on-bad-exit=0 bash -c '",
            '  if [ "$SLURM_PROCID" -eq 0 ]; then',
            "    trap \"\" TERM  # the launcher ends the chief on SIGTERM; this shell records how",
            f'    {hide_gpus}tfps-launch --from-env "$@"; status=$?',
            '    echo "$status" > "$TFPS_CHIEF_STATUS"; exit "$status"',
            *(['  elif [ "$SLURM_PROCID" -le "$TFPS_NUM_PS" ]; then',
               f'    {hide_gpus}exec tfps-launch --from-env "$@"'] if hide_gpus else []),
            "  fi",
            '  exec tfps-launch --from-env "$@"',
            f"' tfps-task {run}",
            "step_status=$?",
            "",
        ]
        if self.evaluator:
            lines += [
                "# The evaluator's launcher ends it when the chief is done; should it miss that,",
                f"# its step is ended {_EVALUATOR_STOP_S}s after training.",
                f"for _ in $(seq {_EVALUATOR_STOP_S}); do "
                'kill -0 "$evaluator_pid" 2>/dev/null || break; sleep 1; done',
                'kill "$evaluator_pid" 2>/dev/null',
                'wait "$evaluator_pid"',
                "",
            ]
        lines += [
            "# The job succeeds when the chief does.",
            'if [ -s "$TFPS_CHIEF_STATUS" ]; then',
            '  status=$(cat "$TFPS_CHIEF_STATUS"); rm -f "$TFPS_CHIEF_STATUS"; exit "$status"',
            "fi",
            'echo "tfps: the chief left no exit status (srun exited with $step_status)" >&2',
            'exit "$(( step_status ? step_status : 1 ))"',
        ]
        return "\n".join(lines) + "\n"



# ------------------------------------------------------------------------------ flags
# What `tfps.emit.cli` reads of an engine: its spec, the flags (argparse dests) only it
# takes, `add_arguments` and `spec_from_args`.
SPEC = SlurmSpec
FLAGS = frozenset({"nodes", "port_base", "slurm_time", "partition", "cpus_per_task", "mem"})

slurm_mem = _cli.arg_type("memory per node such as 16G, 4096 (MB) or 0 (all of it)",
                          _resources.slurm_mem)


def add_arguments(group) -> None:
    """Adds this engine's flags to the argparse `group` of ``--emit``."""
    group.add_argument("--nodes", type=_cli.int_in(1, validate.MAX_COUNT), metavar="N",
                       help="slurm: nodes to spread the tasks over, evenly (default: one per "
                            "task)")
    group.add_argument("--port-base", type=_cli.int_in(_MIN_PORT_BASE, 65535), metavar="PORT",
                       help=f"slurm: first port on each node (default: derived from the job "
                            f"id, in {PORT_RANGE[0]}-{PORT_RANGE[1]})")
    group.add_argument("--cpus-per-task", type=_cli.int_in(1, _MAX_CPUS_PER_TASK),
                       metavar="N", help="slurm: #SBATCH --cpus-per-task (default: the "
                                         "largest role's, 4 for most jobs)")
    group.add_argument("--mem", type=slurm_mem, metavar="SIZE",
                       help="slurm: #SBATCH --mem, memory per node (default: tasks per node "
                            "times the largest role's memory)")
    group.add_argument("--time", dest="slurm_time", help="slurm: #SBATCH --time")
    group.add_argument("--partition", help="slurm: #SBATCH --partition")


def spec_from_args(args, **job) -> SlurmSpec:
    """The `SlurmSpec` of parsed flags; `job`: `JobSpec`'s fields, already read.

    Raises:
      ConfigError: naming the field and the value.
    """
    given = {"nodes": args.nodes, "port_base": args.port_base, "time": args.slurm_time,
             "partition": args.partition, "cpus_per_task": args.cpus_per_task,
             "mem": args.mem}
    return SlurmSpec(**job, **{k: v for k, v in given.items() if v is not None})
