"""The cluster model: who runs where, and the `TF_CONFIG` each task must get.

A parameter-server cluster has four roles:

* ``chief`` (0 or 1): runs the user's script and the `ClusterCoordinator`;
* ``ps`` (>= 1): holds the variables;
* ``worker`` (>= 1): runs the scheduled training functions;
* ``evaluator`` (0 or 1): a side-car that evaluates checkpoints.

A `Cluster` is built from a spec file (`Cluster.from_file`), from counts on loopback
(`Cluster.local`), or from the environment an external engine sets up (`Cluster.from_env`:
`TF_CONFIG` as Kubeflow writes it, or Slurm through TF's `SlurmClusterResolver`).

The evaluator runs no TF server, and a coordinator whose cluster lists one hangs waiting for it
(tensorflow#46169), so `Cluster.tf_config` never shows the evaluator to chief, ps or worker.

Example:

>>> from tfps import Cluster
>>> c = Cluster.from_dict({"chief": ["h0:2222"], "ps": ["h1:2222"], "worker": ["h2:2222"]})
>>> c.tf_config("worker", 0)["task"]
{'type': 'worker', 'index': 0}
>>> c.num_ps, c.num_workers
(1, 1)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
from typing import Any, Iterator, Mapping

from tfps.errors import ClusterSpecError, ConfigError

__all__ = ["Cluster", "TaskId", "ROLES", "task_from_env"]

ROLES = ("chief", "ps", "worker", "evaluator")
# The roles that run a TF server and make up the cluster the coordinator connects to.
TRAINING_ROLES = ("chief", "ps", "worker")
# (min, max) tasks per role; None means unbounded.
_ROLE_COUNTS = {"chief": (0, 1), "ps": (1, None), "worker": (1, None), "evaluator": (0, 1)}
# SlurmClusterResolver's own default, kept so that `--emit slurm` and `from_env` agree.
_SLURM_PORT_BASE = 8888


@dataclasses.dataclass(frozen=True, order=True)
class TaskId:
    """One task of a cluster, written ``type:index`` (``chief`` alone means ``chief:0``).

    >>> TaskId.parse("worker:1")
    TaskId(type='worker', index=1)
    >>> str(TaskId("ps", 0))
    'ps:0'
    """

    type: str
    index: int = 0

    def __str__(self) -> str:
        return f"{self.type}:{self.index}"

    @classmethod
    def parse(cls, text: str) -> "TaskId":
        """Parses ``"worker:1"`` or ``"chief"``; raises `ConfigError` naming the text."""
        role, sep, index = str(text).partition(":")
        if role not in ROLES:
            raise ConfigError(
                f"task {text!r}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if not sep:
            return cls(role, 0)
        try:
            value = int(index)
        except ValueError:
            value = -1
        if value < 0:
            raise ConfigError(f"task {text!r}: index {index!r} is not a non-negative integer")
        return cls(role, value)


def _check_address(address: Any, field: str, source: str | None) -> str:
    if not isinstance(address, str):
        raise ClusterSpecError(
            f"{field}: expected a 'host:port' string, got {type(address).__name__} {address!r}",
            source)
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ClusterSpecError(f"{field}: address {address!r} has no port (expected 'host:port')",
                               source)
    if not host.strip("[]").strip():
        raise ClusterSpecError(f"{field}: empty host in address {address!r}", source)
    try:
        number = int(port)
    except ValueError:
        raise ClusterSpecError(f"{field}: port {port!r} is not an integer", source) from None
    if not 1 <= number <= 65535:
        raise ClusterSpecError(f"{field}: port {number} is out of range 1-65535", source)
    return address


@dataclasses.dataclass(frozen=True)
class Cluster:
    """An immutable, validated parameter-server cluster: role -> tuple of ``host:port``.

    Construct with `from_dict`, `from_file`, `local` or `from_env`; the constructor itself
    validates too. Raises `tfps.errors.ClusterSpecError` naming the field and the value.
    """

    chief: tuple[str, ...] = ()
    ps: tuple[str, ...] = ()
    worker: tuple[str, ...] = ()
    evaluator: tuple[str, ...] = ()
    source: str | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        seen: dict[str, str] = {}
        for role in ROLES:
            addresses = getattr(self, role)
            if isinstance(addresses, (str, bytes)) or not isinstance(addresses, (list, tuple)):
                raise ClusterSpecError(
                    f"{role}: expected a list of 'host:port' strings, got "
                    f"{type(addresses).__name__} {addresses!r}", self.source)
            object.__setattr__(self, role, tuple(addresses))
            low, high = _ROLE_COUNTS[role]
            if len(addresses) < low:
                raise ClusterSpecError(
                    f"{role}: at least {low} task required, got {len(addresses)}", self.source)
            if high is not None and len(addresses) > high:
                raise ClusterSpecError(
                    f"{role}: at most {high} task allowed, got {len(addresses)}", self.source)
            for i, address in enumerate(addresses):
                field = f"{role}[{i}]"
                _check_address(address, field, self.source)
                if address in seen:
                    raise ClusterSpecError(
                        f"{field}: address {address!r} is already used by {seen[address]}",
                        self.source)
                seen[address] = field

    # ----------------------------------------------------------------------------- builders
    @classmethod
    def from_dict(cls, spec: Any, source: str | None = None) -> "Cluster":
        """Builds a cluster from ``{"chief": [...], "ps": [...], "worker": [...]}``.

        A ``TF_CONFIG``-shaped dict (``{"cluster": {...}, "task": ...}``) is accepted too.
        """
        if isinstance(spec, Mapping) and "cluster" in spec:
            spec = spec["cluster"]
        if not isinstance(spec, Mapping):
            raise ClusterSpecError(
                f"expected a mapping of role to a list of 'host:port', got "
                f"{type(spec).__name__} {spec!r}", source)
        for role in spec:
            if role not in ROLES:
                raise ClusterSpecError(
                    f"unknown role {role!r} (expected one of {', '.join(ROLES)})", source)
        return cls(**{role: spec.get(role) or () for role in ROLES}, source=source)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Cluster":
        """Loads a YAML or JSON spec file (format: ``cluster_specs/README.md``)."""
        import yaml  # only needed here; YAML is a superset of JSON

        source = os.fspath(path)
        try:
            with open(source, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ClusterSpecError(f"cannot read file: {e.strerror or e}", source) from None
        except UnicodeDecodeError as e:
            raise ClusterSpecError(f"cannot read file: not UTF-8 text (byte {e.start} is "
                                   f"{e.object[e.start:e.start + 1]!r})", source) from None
        try:
            spec = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            kind = "JSON" if source.endswith(".json") else "YAML"
            raise ClusterSpecError(f"not valid {kind}: {first}", source) from None
        if spec is None:
            raise ClusterSpecError("file is empty", source)
        return cls.from_dict(spec, source=source)

    @classmethod
    def local(cls, num_ps: int = 2, num_workers: int = 2, chief: bool = True,
              evaluator: bool = False, host: str = "localhost") -> "Cluster":
        """All tasks on this machine, on free ports chosen by the OS.

        >>> c = Cluster.local(num_ps=1, num_workers=3)
        >>> (c.num_ps, c.num_workers, len(c.chief))
        (1, 3, 1)
        """
        for name, value, low in (("num_ps", num_ps, 1), ("num_workers", num_workers, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"Argument `{name}` must be an integer >= {low}. "
                                  f"Received: {name}={value!r}")
        counts = {"chief": int(bool(chief)), "ps": num_ps, "worker": num_workers,
                  "evaluator": int(bool(evaluator))}
        ports = iter(free_ports(sum(counts.values()), host))
        return cls(**{role: tuple(f"{host}:{next(ports)}" for _ in range(n))
                      for role, n in counts.items()}, source="local")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Cluster":
        """The cluster described by ``TF_CONFIG`` or, failing that, by Slurm's environment."""
        return _read_env(os.environ if environ is None else environ)[0]

    # ----------------------------------------------------------------------------- queries
    @property
    def num_ps(self) -> int:
        return len(self.ps)

    @property
    def num_workers(self) -> int:
        return len(self.worker)

    def tasks(self) -> Iterator[tuple[TaskId, str]]:
        """Every task and its address, chief first, evaluator last."""
        for role in ROLES:
            for i, address in enumerate(getattr(self, role)):
                yield TaskId(role, i), address

    def address(self, task: TaskId | str) -> str:
        task = self._check_task(task)
        return getattr(self, task.type)[task.index]

    def as_dict(self, training_only: bool = False) -> dict[str, list[str]]:
        """``{role: [addresses]}`` for the roles that have tasks (TF's ClusterSpec shape)."""
        roles = TRAINING_ROLES if training_only else ROLES
        return {r: list(getattr(self, r)) for r in roles if getattr(self, r)}

    def tf_config(self, task_type: str, index: int = 0) -> dict:
        """The exact ``TF_CONFIG`` (as a dict) that task ``task_type:index`` must get.

        Chief, ps and worker see the training cluster without the evaluator: it runs no server
        and a coordinator that lists it hangs. The evaluator sees the whole cluster, itself
        included (as under Kubeflow), so its script can read the cluster's shape with
        `Cluster.from_env`; it starts no server and connects to nothing.
        """
        task = self._check_task(TaskId(task_type, index))
        cluster = self.as_dict(training_only=task.type != "evaluator")
        return {"cluster": cluster, "task": {"type": task.type, "index": task.index}}

    def _check_task(self, task: TaskId | str) -> TaskId:
        task = TaskId.parse(task if isinstance(task, str) else str(task))
        count = len(getattr(self, task.type, ())) if task.type in ROLES else 0
        if task.type not in ROLES or not 0 <= task.index < count:
            raise ConfigError(f"task '{task}' is not in the cluster "
                              f"(it has {count} {task.type} task{'s' if count != 1 else ''})")
        return task

    def describe(self) -> str:
        """A short multi-line table of the cluster, for start-up logs."""
        lines = [f"cluster ({self.source or 'dict'}): " + ", ".join(
            f"{len(getattr(self, r))} {r}" for r in ROLES if getattr(self, r))]
        lines += [f"  {str(t):<12} {a}" for t, a in self.tasks()]
        return "\n".join(lines)


def free_ports(count: int, host: str = "localhost") -> list[int]:
    """``count`` distinct ports that are free on ``host`` right now (all held until chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((socket.gethostbyname(host), 0))
            ports.append(s.getsockname()[1])
        return ports


def task_from_env(environ: Mapping[str, str] | None = None) -> TaskId:
    """This process's task, from ``TF_CONFIG`` or Slurm (see `Cluster.from_env`)."""
    return _read_env(os.environ if environ is None else environ)[1]


def _read_env(environ: Mapping[str, str]) -> tuple[Cluster, TaskId]:
    if environ.get("TF_CONFIG"):
        return _read_tf_config(environ["TF_CONFIG"])
    if "SLURM_PROCID" in environ:
        return _read_slurm(environ)
    raise ClusterSpecError(
        "neither TF_CONFIG nor a Slurm job step (SLURM_PROCID) is set", "environment")


def _read_tf_config(text: str) -> tuple[Cluster, TaskId]:
    try:
        config = json.loads(text)
    except ValueError as e:
        raise ClusterSpecError(f"not valid JSON: {e}", "TF_CONFIG") from None
    if not isinstance(config, Mapping) or not isinstance(config.get("cluster"), Mapping):
        raise ClusterSpecError(f"cluster: expected a mapping, got {config!r:.80}", "TF_CONFIG")
    # Kubeflow's TFJob writes "environment": "cloud" too; it means nothing to PSS.
    cluster = Cluster.from_dict(config["cluster"], source="TF_CONFIG")
    task = config.get("task") or {}
    if not isinstance(task, Mapping) or "type" not in task:
        raise ClusterSpecError(f"task: expected {{'type': ..., 'index': ...}}, got {task!r}",
                               "TF_CONFIG")
    try:
        task_id = cluster._check_task(TaskId(str(task["type"]), int(task.get("index", 0))))
    except (ValueError, TypeError) as e:
        raise ClusterSpecError(f"task: {e}", "TF_CONFIG") from None
    return cluster, task_id


def slurm_jobs(num_tasks: int, num_ps: int) -> dict[str, int]:
    """How tfps splits a Slurm step of ``num_tasks`` into chief (1), ps and workers.

    Ranks go to jobs in sorted name order, as `SlurmClusterResolver` hands them out: rank 0 is
    the chief, ranks ``1..num_ps`` the ps tasks, the rest workers.

    >>> slurm_jobs(5, 2)
    {'chief': 1, 'ps': 2, 'worker': 2}
    """
    num_workers = num_tasks - 1 - num_ps
    if num_ps < 1 or num_workers < 1:
        raise ClusterSpecError(
            f"a step of {num_tasks} tasks cannot hold 1 chief, {num_ps} ps and at least 1 worker "
            f"(TFPS_NUM_PS={num_ps})", "Slurm")
    return {"chief": 1, "ps": num_ps, "worker": num_workers}


def _read_slurm(environ: Mapping[str, str]) -> tuple[Cluster, TaskId]:
    # TF's parsers of Slurm's compressed lists ('n[1-2],m5', '3(x2),2'); pure Python.
    from tensorflow.python.distribute.cluster_resolver.slurm_cluster_resolver import (
        expand_hostlist, expand_tasks_per_node)

    def _get(name: str, fallback: str | None = None) -> str:
        value = environ.get(name, environ.get(fallback) if fallback else None)
        if value is None:
            raise ClusterSpecError(f"{name} is not set (not inside a job step? run under srun)",
                                   "Slurm")
        return value

    def _int(name: str, value: Any) -> int:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ClusterSpecError(f"{name}: expected an integer, got {value!r}",
                                   "Slurm") from None

    rank = _int("SLURM_PROCID", _get("SLURM_PROCID"))
    num_tasks = _int("SLURM_STEP_NUM_TASKS", _get("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"))
    jobs = slurm_jobs(num_tasks, _int("TFPS_NUM_PS", environ.get("TFPS_NUM_PS", 1)))
    port_base = _int("TFPS_PORT_BASE", environ.get("TFPS_PORT_BASE", _SLURM_PORT_BASE))
    nodelist = _get("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST")
    per_node_text = _get("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
    try:
        hosts = expand_hostlist(nodelist)
        per_node = expand_tasks_per_node(per_node_text)
    except ValueError as e:
        raise ClusterSpecError(str(e), "Slurm") from None
    if len(hosts) != len(per_node) or sum(per_node) != num_tasks:
        raise ClusterSpecError(
            f"SLURM_STEP_NODELIST={nodelist!r} ({len(hosts)} hosts) and "
            f"SLURM_STEP_TASKS_PER_NODE={per_node_text!r} ({sum(per_node)} tasks on "
            f"{len(per_node)} hosts) do not describe a step of {num_tasks} tasks", "Slurm")
    # Ranks fill the hosts in Slurm's node-list order (srun's block distribution), port_base +
    # local index on each host. SlurmClusterResolver.cluster_spec() instead walks the hosts
    # *sorted by name* (`sorted(self._task_configuration.items())`), which for node[9-10] puts
    # rank 0 on node10 while Slurm runs it on node9, and it lists no task at all on a host
    # without GPUs (it steps through range(0, gpus_per_node, gpus_per_task)). So tfps uses the
    # resolver's list parsers but places the ranks itself.
    places = [(host, local) for host, n in zip(hosts, per_node) for local in range(n)]
    addresses = [f"{host}:{port_base + local}" for host, local in places]
    if not 0 <= rank < num_tasks:
        raise ClusterSpecError(f"SLURM_PROCID={rank} is not in 0..{num_tasks - 1}", "Slurm")
    # slurmd tells each task where it really runs: catch a cyclic or arbitrary distribution,
    # which would give this task another task's address.
    node, local = environ.get("SLURMD_NODENAME"), environ.get("SLURM_LOCALID")
    host, expected_local = places[rank]
    if (node is not None and node != host) or (
            local is not None and local.isdigit() and int(local) != expected_local):
        raise ClusterSpecError(
            f"rank {rank} runs on {node} (local id {local}) but block distribution puts it on "
            f"{host} (local id {expected_local}): run srun with --distribution=block", "Slurm")
    spec, start = {}, 0
    for job, count in jobs.items():
        spec[job] = addresses[start:start + count]
        if start <= rank < start + count:
            task = TaskId(job, rank - start)
        start += count
    cluster = Cluster.from_dict(spec, source="Slurm")
    return cluster, cluster._check_task(task)
