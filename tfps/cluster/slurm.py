"""A Slurm job step as a tfps cluster: pure Python, no TensorFlow import.

Every task of one ``srun`` step runs ``tfps-launch --from-env``; each reads the step from the
variables slurmd sets and computes the same cluster:

* ranks fill the step's nodes in Slurm's node-list order (srun's block distribution), each task
  on port ``TFPS_PORT_BASE + its local index`` on its node. Without ``TFPS_PORT_BASE`` the
  base comes from the job id (`job_port_base`), so that two jobs sharing a node do not
  collide (a fixed 8888 also collides with Jupyter's);
* rank 0 is the chief, ranks ``1..TFPS_NUM_PS`` the ps tasks, the rest workers (the sorted job
  order `SlurmClusterResolver` uses). ``TFPS_NUM_PS`` must be set: a missing one would
  silently turn a 2-ps job into a 1-ps job with one more worker.

TF's own `SlurmClusterResolver` is not used: it sorts hosts by name (``node10`` before
``node9``, against srun's placement) and lists no task on a host without GPUs; and importing
it imports all of TensorFlow before the task server can start (docs/tensorflow-notes.md,
"Slurm", has the times).

>>> expand_hostlist("n[1-2],m5,o[08-10]")
['n1', 'n2', 'm5', 'o08', 'o09', 'o10']
>>> expand_tasks_per_node("3(x2),1")
[3, 3, 1]
>>> slurm_jobs(5, 2)
{'chief': 1, 'ps': 2, 'worker': 2}
>>> job_port_base("4242", 3), job_port_base("4243", 3)
(22726, 22729)
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping

from tfps.cluster.address import split_address
from tfps.errors import ClusterSpecError

__all__ = ["DEFAULT_PORT_BASE", "MIN_PORT_BASE", "PORT_RANGE", "evaluator_tf_config",
           "expand_hostlist", "expand_tasks_per_node", "highest_port_base", "job_port_base",
           "read_step", "slurm_jobs"]

# SlurmClusterResolver's default first port: used only outside a job (no SLURM_JOB_ID).
DEFAULT_PORT_BASE = 8888
# The lowest TFPS_PORT_BASE (and --emit slurm --port-base): below it are the privileged
# ports. One rule for the emitter and the launcher (`highest_port_base` is the other end).
MIN_PORT_BASE = 1024
# Per-job ports: slots of `tasks per node` ports in this range, below Linux's ephemeral range
# (32768-60999), where outgoing connections take their ports.
PORT_RANGE = (10000, 32767)
# More hosts than any Slurm cluster has: a hostlist such as ``n[1-999999999]`` must fail fast
# instead of building a billion strings.
_MAX_HOSTS = 100_000
# Longest variable value read (Slurm's own lists are far shorter; anything longer is not Slurm).
_MAX_VALUE = 1 << 16
_SOURCE = "Slurm"
_RANGE_PART = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_TASKS_PART = re.compile(r"([0-9]+)(?:\(x([0-9]+)\))?")
_HOST_CHARS = re.compile(r"[A-Za-z0-9._-]*")


def _error(message: str) -> ClusterSpecError:
    return ClusterSpecError(message, _SOURCE)


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _split_top(text: str) -> list[str]:
    """Splits at commas outside brackets."""
    parts, depth, current = [], 0, ""
    for c in text:
        if c == "[":
            depth += 1
            if depth > 1:
                raise ValueError("nested '['")
        elif c == "]":
            depth -= 1
            if depth < 0:
                raise ValueError("']' without '['")
        elif c == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += c
    if depth:
        raise ValueError("'[' without ']'")
    return parts + [current]


def _expand_range(expression: str, budget: int) -> list[str]:
    """``"1-3,08"`` -> ``['1', '2', '3', '08']`` (zero padding kept)."""
    out: list[str] = []
    for part in expression.split(","):
        m = _RANGE_PART.fullmatch(part)
        if m is None:
            raise ValueError(f"bad range {part!r}")
        first, last = m.group(1), m.group(2) or m.group(1)
        lo, hi = int(first), int(last)
        if hi < lo:
            raise ValueError(f"range {part!r} runs backwards")
        if len(out) + hi - lo + 1 > budget:
            raise ValueError(f"more than {_MAX_HOSTS} hosts")
        out += [str(i).zfill(len(first)) for i in range(lo, hi + 1)]
    return out


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compressed host list, in order: ``"n[1-2],m5"`` -> ``['n1', 'n2', 'm5']``.

    Several bracket groups in one name (``r[1-2]n[1-2]``) expand left to right, as Slurm does.

    Raises:
      ValueError: the list is not Slurm's format, or names more than 100 000 hosts.
    """
    if not isinstance(hostlist, str) or not hostlist or len(hostlist) > _MAX_VALUE:
        raise ValueError(f"Invalid hostlist format {_short(str(hostlist))}")
    hosts: list[str] = []
    try:
        for part in _split_top(hostlist):
            if not part:
                raise ValueError("empty name")
            names = [""]
            for piece in re.split(r"(\[[^\]]*\])", part):
                if piece.startswith("["):
                    values = _expand_range(piece[1:-1], _MAX_HOSTS)
                    if len(names) * len(values) + len(hosts) > _MAX_HOSTS:
                        raise ValueError(f"more than {_MAX_HOSTS} hosts")
                    names = [n + v for n in names for v in values]
                elif piece:
                    if not _HOST_CHARS.fullmatch(piece):
                        raise ValueError(f"bad character in {piece!r}")
                    names = [n + piece for n in names]
            hosts += names
            if len(hosts) > _MAX_HOSTS:
                raise ValueError(f"more than {_MAX_HOSTS} hosts")
    except ValueError as e:
        raise ValueError(f"Invalid hostlist format {_short(hostlist)}: {e}") from None
    return hosts


def expand_tasks_per_node(text: str) -> list[int]:
    """``"3(x2),2"`` -> ``[3, 3, 2]`` (SLURM_STEP_TASKS_PER_NODE's format)."""
    out: list[int] = []
    for part in (text.split(",") if isinstance(text, str) and len(text) <= _MAX_VALUE else [""]):
        m = _TASKS_PART.fullmatch(part)
        repeat = int(m.group(2) or 1) if m else 0
        if m is None or repeat < 1 or len(out) + repeat > _MAX_HOSTS:
            raise ValueError(f"Invalid tasks-per-node list format {_short(str(text))}")
        out += [int(m.group(1))] * repeat
    return out


def slurm_jobs(num_tasks: int, num_ps: int) -> dict[str, int]:
    """How a step of ``num_tasks`` splits into chief (1), ps and workers (rank order)."""
    num_workers = num_tasks - 1 - num_ps
    if num_ps < 1 or num_workers < 1:
        raise _error(f"a step of {num_tasks} tasks cannot hold 1 chief, {num_ps} ps and at "
                     f"least 1 worker (TFPS_NUM_PS={num_ps})")
    return {"chief": 1, "ps": num_ps, "worker": num_workers}


def job_port_base(job_id: str | None, per_node: int) -> int:
    """The first port of job `job_id`'s slot: ``10000 + job_id % slots * per_node``.

    Jobs whose ids are less than ``slots`` apart get disjoint ports on a node; every task of
    the job computes the same base. `DEFAULT_PORT_BASE` without a job id.
    """
    if not job_id or not job_id.isdigit() or not 1 <= per_node <= PORT_RANGE[1] - PORT_RANGE[0]:
        return DEFAULT_PORT_BASE
    slots = (PORT_RANGE[1] + 1 - PORT_RANGE[0]) // per_node
    return PORT_RANGE[0] + int(job_id) % slots * per_node


def highest_port_base(per_node: int) -> int:
    """The highest port base for `per_node` tasks on a node: its last task gets 65535."""
    return 65535 - per_node + 1


def _get(environ: Mapping[str, str], name: str, fallback: str | None = None) -> str:
    value = environ.get(name, environ.get(fallback) if fallback else None)
    if value is None:
        raise _error(f"{name} is not set (not inside a job step? run under srun)")
    return value


def _int(name: str, text: str, low: int, high: int) -> int:
    # ASCII digits only: int() would also take '８', '1_0' and ' 1 '.
    if not isinstance(text, str) or not re.fullmatch(r"[0-9]{1,9}", text) or \
            not low <= int(text) <= high:
        raise _error(f"{name}: expected an integer in [{low}, {high}], got {_short(str(text))}")
    return int(text)


def read_step(environ: Mapping[str, str]) -> tuple[dict[str, list[str]], tuple[str, int]]:
    """The step's cluster (``{job: [host:port]}``) and this task's ``(job, index)``.

    Raises:
      ClusterSpecError: naming the Slurm or tfps variable and the value received.
    """
    rank = _int("SLURM_PROCID", _get(environ, "SLURM_PROCID"), 0, _MAX_HOSTS * 64)
    num_tasks = _int("SLURM_STEP_NUM_TASKS",
                     _get(environ, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"), 1, _MAX_HOSTS * 64)
    if "TFPS_NUM_PS" not in environ:
        raise _error("TFPS_NUM_PS is not set: say how many of the step's tasks are ps tasks "
                     "(`tfps-launch --emit slurm` exports it; with your own srun, run "
                     "`TFPS_NUM_PS=2 srun ...`)")
    jobs = slurm_jobs(num_tasks, _int("TFPS_NUM_PS", environ["TFPS_NUM_PS"], 0, num_tasks))
    nodelist = _get(environ, "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST")
    per_node_text = _get(environ, "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
    try:
        hosts = expand_hostlist(nodelist)
        per_node = expand_tasks_per_node(per_node_text)
    except ValueError as e:
        raise _error(str(e)) from None
    if len(hosts) != len(per_node) or sum(per_node) != num_tasks:
        raise _error(f"SLURM_STEP_NODELIST={_short(nodelist)} ({len(hosts)} hosts) and "
                     f"SLURM_STEP_TASKS_PER_NODE={_short(per_node_text)} ({sum(per_node)} tasks "
                     f"on {len(per_node)} hosts) do not describe a step of {num_tasks} tasks")
    if "TFPS_PORT_BASE" in environ:
        port_base = _int("TFPS_PORT_BASE", environ["TFPS_PORT_BASE"], MIN_PORT_BASE, 65535)
    else:
        port_base = job_port_base(environ.get("SLURM_JOB_ID"), max(per_node))
    if port_base > highest_port_base(max(per_node)):
        raise _error(f"TFPS_PORT_BASE={port_base}: {max(per_node)} tasks on one node need ports "
                     f"up to {port_base + max(per_node) - 1}, beyond 65535")
    if not 0 <= rank < num_tasks:
        raise _error(f"SLURM_PROCID={rank} is not in 0..{num_tasks - 1}")
    places = [(host, local) for host, n in zip(hosts, per_node) for local in range(n)]
    # slurmd tells each task where it really runs: catch a cyclic or arbitrary distribution,
    # which would give this task another task's address.
    node, local = environ.get("SLURMD_NODENAME"), environ.get("SLURM_LOCALID")
    host, expected_local = places[rank]
    if (node is not None and node != host) or (
            local is not None and local.isdigit() and int(local) != expected_local):
        raise _error(f"rank {rank} runs on {node} (local id {local}) but block distribution "
                     f"puts it on {host} (local id {expected_local}): run srun with "
                     f"--distribution=block")
    addresses = [f"{h}:{port_base + i}" for h, i in places]
    spec, start, task = {}, 0, None
    for job, count in jobs.items():
        spec[job] = addresses[start:start + count]
        if start <= rank < start + count:
            task = (job, rank - start)
        start += count
    return spec, task


def evaluator_tf_config(environ: Mapping[str, str] | None = None) -> str:
    """The evaluator step's ``TF_CONFIG``: the job's training step, as tfps reads it, plus
    the evaluator (on this host, on a port no training task uses; it runs no server).

    The batch script of ``tfps-launch --emit slurm --evaluator`` runs it where Slurm
    describes the allocation (``SLURM_JOB_NODELIST``, ``SLURM_TASKS_PER_NODE``,
    ``SLURM_NTASKS``) that the training step fills.

    Raises:
      ClusterSpecError: naming the Slurm or tfps variable and the value received.
    """
    env = os.environ if environ is None else environ
    step = {"SLURM_PROCID": "0"}
    for step_var, job_var in (("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"),
                              ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST"),
                              ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")):
        if job_var in env:
            step[step_var] = env[job_var]
    for var in ("TFPS_NUM_PS", "TFPS_PORT_BASE", "SLURM_JOB_ID"):
        if var in env:
            step[var] = env[var]
    spec, _ = read_step(step)
    # Listed only (the evaluator runs no server): a port after the first node's tasks.
    chief_port = split_address(spec["chief"][0])[1]
    spec["evaluator"] = [f"{socket.gethostname()}:{chief_port + sum(map(len, spec.values()))}"]
    return json.dumps({"cluster": spec, "task": {"type": "evaluator", "index": 0}})
