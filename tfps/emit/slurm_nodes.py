"""What a Slurm job may ask: the nodes of its partition, as ``sinfo`` reports them, and the
time limits sbatch reads.

Slurm accepts a job whose per-node request no node of its partition can meet and leaves it
PENDING forever, saying nothing (5 tasks x 4 CPUs on an 8-CPU node). Where ``sinfo`` answers
(a login node), ``tfps-launch --emit slurm`` reads the partition's nodes (`query`) and
`fit` checks the request against them before anything is submitted: a request no node can
ever meet is refused (exit 2, one line naming the request and the largest node), and the
defaults (``--cpus-per-task``, ``--mem``) are cut down to what the nodes have. Only CPUs
and memory are checked (``sinfo``'s ``%c`` and ``%m``); GPUs and node features are not.

>>> nodes = parse("n1|8|20000|debug*\\nn2|64|256000|big\\n")
>>> [n.name for n in in_partition(nodes, None)], nodes[1].partition
(['n1'], 'big')
>>> fit(in_partition(nodes, None), nodes=1, tasks_per_node=5, cpus_per_task=None,
...     mem_mib=None, default_cpus=4, default_mib=20480, least_mib=5120)
(1, 20000)
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from collections.abc import Sequence

from tfps import validate
from tfps.errors import ConfigError

__all__ = ["Node", "check_time", "fit", "in_partition", "parse", "query"]

# sinfo, one line per node and partition: name, CPUs, memory (MB, Slurm's RealMemory),
# partition ("*" after the default one).
_FORMAT = "%N|%c|%m|%P"
# Seconds to wait for sinfo: a login node whose controller is down must not hang the emitter.
_TIMEOUT_S = 10
# Most lines read: more nodes than any cluster has.
_MAX_LINES = 100_000
# Slurm's --time formats (sbatch(1)): minutes, minutes:seconds, hours:minutes:seconds,
# days-hours, days-hours:minutes, days-hours:minutes:seconds; and no limit (-1 too).
_TIME = re.compile(r"[0-9]{1,9}(?::[0-9]{1,9}){0,2}|[0-9]{1,9}-[0-9]{1,9}(?::[0-9]{1,9}){0,2}")
_NO_LIMIT = ("UNLIMITED", "INFINITE", "-1")


@dataclasses.dataclass(frozen=True)
class Node:
    """One node of one partition: CPUs, memory in MB (MiB, as Slurm counts them)."""

    name: str
    cpus: int
    memory_mb: int
    partition: str
    default: bool = False

    def __str__(self) -> str:
        return f"{self.name} ({self.cpus} CPUs, {self.memory_mb} MB)"


def parse(text: str) -> list[Node]:
    """Nodes from ``sinfo -h -N -o '%N|%c|%m|%P'``; lines that are not that are skipped."""
    nodes = []
    for line in text.splitlines()[:_MAX_LINES]:
        parts = line.strip().split("|")
        if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        partition = parts[3]
        nodes.append(Node(parts[0], int(parts[1]), int(parts[2]), partition.rstrip("*"),
                          partition.endswith("*")))
    return nodes


def query(partition: str | None = None) -> list[Node] | None:
    """The nodes ``sinfo`` lists (of `partition`, or all); None where it does not answer
    (not installed, no controller, an error): the request is then not checked."""
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return None
    argv = [sinfo, "-h", "-N", "-o", _FORMAT] + (["-p", partition] if partition else [])
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    nodes = parse(out.stdout) if out.returncode == 0 else []
    return nodes or None


def in_partition(nodes: Sequence[Node], partition: str | None) -> list[Node]:
    """The nodes of `partition`, or of the default partition (``*`` in sinfo) when None."""
    if partition is None:
        return [n for n in nodes if n.default] or list(nodes)
    return [n for n in nodes if n.partition == partition]


def fit(candidates: Sequence[Node], *, nodes: int, tasks_per_node: int,
        cpus_per_task: int | None, mem_mib: int | None, default_cpus: int, default_mib: int,
        least_mib: int, partition: str | None = None) -> tuple[int, int]:
    """``(cpus_per_task, mem_mib)`` to write: those given, if `nodes` of `candidates` can
    meet them; for those not given (None), the defaults, cut down to what `nodes` nodes have.

    `mem_mib` is memory per node (0: all of it); `least_mib` is the least memory per node
    the job can run with (`tfps.emit.resources.MIN_TASK_MIB` per task).

    Raises:
      ConfigError: fewer than `nodes` nodes can ever meet the request: one line naming the
        request and the largest node.
    """
    least_cpus = tasks_per_node * (cpus_per_task or 1)
    least_mem = mem_mib or least_mib
    able = [n for n in candidates if n.cpus >= least_cpus and n.memory_mb >= least_mem]
    if len(able) < nodes:
        largest = max(candidates, key=lambda n: (n.cpus, n.memory_mb))
        cpus = f"{cpus_per_task} CPUs" if cpus_per_task else "at least 1 CPU"
        mem = ("all of its memory" if mem_mib == 0 else f"{mem_mib} MB" if mem_mib
               else f"at least {least_mib} MB")
        where = f"partition {partition!r}" if partition else "the default partition"
        raise ConfigError(
            f"--emit slurm: no {'node' if nodes == 1 else f'{nodes} nodes'} of {where} can "
            f"ever run this job: it asks {tasks_per_node} task{'s' if tasks_per_node != 1 else ''}"
            f" x {cpus} and {mem} on each of {nodes} node{'s' if nodes != 1 else ''}; the "
            f"largest is {largest} (sinfo)")
    # The largest request that `nodes` able nodes meet: for each CPU count a node has, the
    # memory of the nodes-th largest node with that many CPUs or more.
    best = (0, 0)
    for node_cpus in {n.cpus for n in able}:
        cpus = cpus_per_task or max(1, min(default_cpus, node_cpus // tasks_per_node))
        enough = sorted((n.memory_mb for n in able if n.cpus >= tasks_per_node * cpus),
                        reverse=True)
        if len(enough) >= nodes:
            mem = mem_mib if mem_mib is not None else max(least_mib,
                                                           min(default_mib, enough[nodes - 1]))
            best = max(best, (cpus, mem))
    return best


def check_time(text: str, what: str = "--time") -> str:
    """`text` if it is one of Slurm's time limits (``90``, ``30:00``, ``4:00:00``,
    ``2-12``, ``2-12:30``, ``2-12:30:00``, ``UNLIMITED``); else `ConfigError` naming `what`.

    >>> check_time("2-00:00:00")
    '2-00:00:00'
    """
    if not isinstance(text, str) or not (_TIME.fullmatch(text) or text.upper() in _NO_LIMIT):
        raise ConfigError(f"{what}: expected Slurm's time limit such as 90 (minutes), 4:00:00 "
                          f"or 2-12:00:00 (days-hours:minutes:seconds), got "
                          f"{validate.describe(text, 40)}")
    return text
