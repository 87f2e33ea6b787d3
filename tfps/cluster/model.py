"""The cluster model: who runs where, and the `TF_CONFIG` each task must get.

A parameter-server cluster has four roles:

* ``chief`` (0 or 1): runs the user's script and the `ClusterCoordinator`;
* ``ps`` (>= 1): holds the variables;
* ``worker`` (>= 1): runs the scheduled training functions;
* ``evaluator`` (0 or 1): a side-car that evaluates checkpoints.

and two roles of TF's tf.data service (`tfps.data`), which preprocess input off the workers:

* ``dispatcher`` (0 or 1) and ``data_worker`` (0 or more; at least one with a dispatcher).
  They run ``python -m tfps.data.service``, no TF server of the training cluster: they are in
  no task's ``TF_CONFIG`` (a coordinator that lists a task which runs no server hangs); the
  chief and the evaluator learn the dispatcher's address from ``TFPS_DATA_SERVICE``.

A `Cluster` is built from a spec file (`Cluster.from_file`), from counts on loopback
(`Cluster.local`), or from the environment an external engine sets up (`Cluster.from_env`:
`TF_CONFIG` as Kubeflow's TFJob or Volcano's tensorflow plugin writes it, a Slurm job step,
`tfps.cluster.slurm`, or a JobSet pod of a Kubeflow TrainJob, `tfps.cluster.jobset`).
Everything here is pure Python: the launcher and the task servers read clusters without
importing TensorFlow.

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

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from tfps import validate
from tfps.cluster import jobset, slurm, specio
from tfps.cluster.address import check_address, check_host, is_loopback_host
from tfps.cluster.ports import free_ports
from tfps.errors import ClusterSpecError, ConfigError

__all__ = ["ALL_ROLES", "DATA_ROLES", "DEFAULT_NUM_PS", "DEFAULT_NUM_WORKERS",
           "MAX_LOCAL_TASKS", "ROLES", "TRAINING_ROLES", "Cluster", "TaskId", "task_from_env",
           "tf_config_task"]

ROLES = ("chief", "ps", "worker", "evaluator")
# The tf.data service's roles (`tfps.data.service`): in spec files and the launcher's plan,
# never in a TF_CONFIG.
DATA_ROLES = ("dispatcher", "data_worker")
ALL_ROLES = ROLES + DATA_ROLES
# The environment variable that gives the chief (and evaluator) the dispatcher's address.
DATA_SERVICE_ENV = "TFPS_DATA_SERVICE"
# The roles that run a TF server and make up the cluster the coordinator connects to.
TRAINING_ROLES = ("chief", "ps", "worker")
# (min, max) tasks per role; None means unbounded (a spec file is size-capped anyway).
_ROLE_COUNTS = {"chief": (0, 1), "ps": (1, None), "worker": (1, None), "evaluator": (0, 1),
                "dispatcher": (0, 1), "data_worker": (0, None)}
# Most ps or workers `Cluster.local` puts on one machine: each is a process with a TF runtime.
MAX_LOCAL_TASKS = 64
# The counts of a cluster given by counts alone (`Cluster.local`, `tfps-launch` without
# --spec, the manifests of --emit): the smallest cluster that shards variables and shows a
# worker's failure being absorbed by another.
DEFAULT_NUM_PS = 2
DEFAULT_NUM_WORKERS = 2
_INDEX = re.compile(r"[0-9]{1,6}")
# The only TF_CONFIG "rpc_layer" tfps serves: every task server is a gRPC server.
_RPC_LAYER = "grpc"


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
    def parse(cls, text: str) -> TaskId:
        """Parses ``"worker:1"`` or ``"chief"``; raises `ConfigError` naming the text."""
        shown = validate.describe(text, 40)
        role, sep, index = str(text).partition(":")
        if role not in ALL_ROLES:
            raise ConfigError(f"task {shown}: unknown role {validate.describe(role, 30)} "
                              f"(expected one of {', '.join(ALL_ROLES)})")
        if not sep:
            return cls(role, 0)
        if not _INDEX.fullmatch(index):  # ASCII digits only: int() takes '１' and '1_0' too
            raise ConfigError(f"task {shown}: index {validate.describe(index, 20)} is not a "
                              f"non-negative integer")
        return cls(role, int(index))


@dataclasses.dataclass(frozen=True)
class Cluster:
    """An immutable, validated parameter-server cluster: role -> tuple of ``host:port``.

    Construct with `from_dict`, `from_file`, `local` or `from_env`; the constructor itself
    validates too. Raises `tfps.errors.ClusterSpecError` naming the field and the value.
    Two tasks may not share an address, and loopback names are one host: ``localhost:2222``
    and ``127.0.0.1:2222`` are the same address (TF would fail to bind the second).
    """

    chief: tuple[str, ...] = ()
    ps: tuple[str, ...] = ()
    worker: tuple[str, ...] = ()
    evaluator: tuple[str, ...] = ()
    source: str | None = dataclasses.field(default=None, compare=False)
    dispatcher: tuple[str, ...] = ()
    data_worker: tuple[str, ...] = ()

    def __post_init__(self):
        seen: dict[tuple[str, int], str] = {}
        for role in ALL_ROLES:
            addresses = getattr(self, role)
            if isinstance(addresses, (str, bytes)) or not isinstance(addresses, (list, tuple)):
                raise ClusterSpecError(
                    f"{role}: expected a list of 'host:port' strings, got "
                    f"{type(addresses).__name__} {validate.describe(addresses)}", self.source)
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
                host, port = check_address(address, field, self.source)
                key = ("loopback" if is_loopback_host(host) else host.lower(), port)
                if key in seen:
                    same = "" if seen[key][1] == address else f" ({seen[key][1]!r}: same host)"
                    raise ClusterSpecError(f"{field}: address {address!r} is already used by "
                                           f"{seen[key][0]}{same}", self.source)
                seen[key] = (field, address)
        if bool(self.dispatcher) != bool(self.data_worker):
            have, lack = ("dispatcher", "data_worker") if self.dispatcher else \
                ("data_worker", "dispatcher")
            raise ClusterSpecError(f"{lack}: the tf.data service needs a dispatcher and at "
                                   f"least one data_worker; {have} is given without", self.source)

    # ----------------------------------------------------------------------------- builders
    @classmethod
    def from_dict(cls, spec: Any, source: str | None = None) -> Cluster:
        """Builds a cluster from ``{"chief": [...], "ps": [...], "worker": [...]}``.

        A ``TF_CONFIG``-shaped dict (``{"cluster": {...}, "task": ...}``) is accepted too.
        A role that is present must hold a list (``chief: false`` is an error, not "none").
        """
        if isinstance(spec, Mapping) and "cluster" in spec:
            _no_role_beside_cluster(spec, source)
            spec = spec["cluster"]
        if not isinstance(spec, Mapping):
            raise ClusterSpecError(
                f"expected a mapping of role to a list of 'host:port', got "
                f"{type(spec).__name__} {validate.describe(spec)}", source)
        for role in spec:
            if role not in ALL_ROLES:
                raise ClusterSpecError(f"unknown role {validate.describe(role, 40)} (expected "
                                       f"one of {', '.join(ALL_ROLES)})", source)
        return cls(**{role: spec.get(role, ()) for role in ALL_ROLES}, source=source)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Cluster:
        """Loads a YAML or JSON spec file (format: ``cluster_specs/README.md``).

        The reader is bounded (`tfps.cluster.specio`): a regular file of at most 1 MiB, no duplicate
        keys, no deep nesting, no alias expansion beyond a small budget.
        """
        source = os.fspath(path)
        spec = specio.load_file(source)
        if spec is None:
            raise ClusterSpecError("file is empty", source)
        return cls.from_dict(spec, source=source)

    @classmethod
    def local(cls, num_ps: int = DEFAULT_NUM_PS, num_workers: int = DEFAULT_NUM_WORKERS,
              chief: bool = True,
              evaluator: bool = False, host: str = "localhost",
              data_workers: int = 0) -> Cluster:
        """All tasks on this machine, on free ports chosen by the OS.

        >>> c = Cluster.local(num_ps=1, num_workers=3)
        >>> (c.num_ps, c.num_workers, len(c.chief))
        (1, 3, 1)
        """
        validate.integer("num_ps", num_ps, low=1, high=MAX_LOCAL_TASKS)
        validate.integer("num_workers", num_workers, low=1, high=MAX_LOCAL_TASKS)
        validate.boolean("chief", chief)
        validate.boolean("evaluator", evaluator)
        validate.integer("data_workers", data_workers, low=0, high=MAX_LOCAL_TASKS)
        if not isinstance(host, str) or not check_host(host):
            raise validate.fail("host", host, "a host name or an IP address of this machine "
                                              "(IPv6 in brackets)")
        counts = {"chief": int(chief), "ps": num_ps, "worker": num_workers,
                  "evaluator": int(evaluator), "dispatcher": int(data_workers > 0),
                  "data_worker": data_workers}
        try:
            ports = iter(free_ports(sum(counts.values()), host))
        except (OSError, TypeError, UnicodeError) as e:
            raise validate.fail("host", host, f"a host name of this machine ({e})") from None
        return cls(**{role: tuple(f"{host}:{next(ports)}" for _ in range(n))
                      for role, n in counts.items()}, source="local")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Cluster:
        """The cluster an engine describes: ``TF_CONFIG`` (Kubeflow's TFJob, Volcano's
        tensorflow plugin), else a Slurm job step (`tfps.cluster.slurm`), else a JobSet pod
        (Kubeflow Trainer's TrainJob, `tfps.cluster.jobset`). The evaluator is in it when the
        engine lists one; `tf_config` keeps it from chief, ps and workers."""
        return _read_env(os.environ if environ is None else environ)[0]

    # ----------------------------------------------------------------------------- queries
    @property
    def num_ps(self) -> int:
        return len(self.ps)

    @property
    def num_workers(self) -> int:
        return len(self.worker)

    @property
    def data_service(self) -> str | None:
        """The tf.data service's dispatcher as ``grpc://host:port``, or None."""
        return f"grpc://{self.dispatcher[0]}" if self.dispatcher else None

    def tasks(self) -> Iterator[tuple[TaskId, str]]:
        """Every task and its address, chief first, evaluator, then the data service's."""
        for role in ALL_ROLES:
            for i, address in enumerate(getattr(self, role)):
                yield TaskId(role, i), address

    def address(self, task: TaskId | str) -> str:
        task = self.check_task(task)
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
        task = self.check_task(TaskId(task_type, index))
        if task.type in DATA_ROLES:
            raise ConfigError(f"task '{task}' gets no TF_CONFIG: the tf.data service's tasks "
                              f"are in no TF cluster")
        cluster = self.as_dict(training_only=task.type != "evaluator")
        return {"cluster": cluster, "task": {"type": task.type, "index": task.index}}

    def check_task(self, task: TaskId | str) -> TaskId:
        """`task` as a `TaskId`, if the cluster has it; else `ConfigError` naming it."""
        task = TaskId.parse(task if isinstance(task, str) else str(task))
        count = len(getattr(self, task.type))
        if not 0 <= task.index < count:
            raise ConfigError(f"task '{task}' is not in the cluster "
                              f"(it has {count} {task.type} task{'s' if count != 1 else ''})")
        return task

    def describe(self) -> str:
        """A short multi-line table of the cluster, for start-up logs."""
        lines = [f"cluster ({self.source or 'dict'}): " + ", ".join(
            f"{len(getattr(self, r))} {r}" for r in ALL_ROLES if getattr(self, r))]
        lines += [f"  {str(t):<12} {a}" for t, a in self.tasks()]
        return "\n".join(lines)


def task_from_env(environ: Mapping[str, str] | None = None) -> TaskId:
    """This process's task, from ``TF_CONFIG`` or Slurm (see `Cluster.from_env`)."""
    return _read_env(os.environ if environ is None else environ)[1]


def _read_env(environ: Mapping[str, str]) -> tuple[Cluster, TaskId]:
    for key, value in environ.items():  # a dict passed to from_env may hold anything
        engine_key = key == "TF_CONFIG" or key in jobset.ENV or str(key).startswith(
            ("SLURM", "TFPS_"))
        if engine_key and not isinstance(value, str):
            raise ClusterSpecError(f"{key}: expected a string, got {type(value).__name__} "
                                   f"{validate.describe(value, 40)}", "environment")
    if environ.get("TF_CONFIG"):
        return _read_tf_config(environ["TF_CONFIG"])
    if "SLURM_PROCID" in environ:
        spec, (job, index) = slurm.read_step(environ)
        cluster = Cluster.from_dict(spec, source="Slurm")
        return cluster, cluster.check_task(TaskId(job, index))
    if jobset.NAME_ENV in environ:
        spec, (role, index) = jobset.read_pod(environ)
        cluster = Cluster.from_dict(spec, source="JobSet")
        return cluster, cluster.check_task(TaskId(role, index))
    raise ClusterSpecError(
        f"neither TF_CONFIG, a Slurm job step (SLURM_PROCID) nor a JobSet pod "
        f"({jobset.NAME_ENV}) is set", "environment")


def _tf_config(text: str) -> Mapping:
    config = specio.loads_json(text, "TF_CONFIG")
    if not isinstance(config, Mapping):
        raise ClusterSpecError(f"expected a JSON object, got {validate.describe(config)}",
                               "TF_CONFIG")
    _no_role_beside_cluster(config, "TF_CONFIG")
    if "rpc_layer" in config and config["rpc_layer"] != _RPC_LAYER:
        # TF would serve it (grpc+verbs, ...) or fail on it; tfps's task servers are gRPC
        # servers, and dropping the field would run the cluster on another layer than asked.
        raise ClusterSpecError(f"rpc_layer: {validate.describe(config['rpc_layer'], 40)} is "
                               f"not supported (tfps runs gRPC servers: omit rpc_layer or "
                               f"set '{_RPC_LAYER}')", "TF_CONFIG")
    return config


def _no_role_beside_cluster(config: Mapping, source: str | None) -> None:
    """A role next to ``cluster`` (``{"cluster": {...}, "ps": [...]}``) was meant to be in it.

    Other keys are the engine's: TF reads ``task`` and ``rpc_layer``, Kubeflow writes
    ``environment``, Vertex AI ``job``; they are left alone.
    """
    for key in config:
        if key in ROLES:
            raise ClusterSpecError(f"role {key!r} beside 'cluster' (the roles go inside "
                                   f"'cluster')", source)


def _task_of(config: Mapping) -> TaskId:
    task = config.get("task") or {}
    if not isinstance(task, Mapping) or "type" not in task:
        raise ClusterSpecError(f"task: expected {{'type': ..., 'index': ...}}, got "
                               f"{validate.describe(task)}", "TF_CONFIG")
    index = task.get("index", 0)
    # Kubeflow writes an integer; TF's resolver takes int(index), which would turn 0.9 into 0.
    if isinstance(index, str) and _INDEX.fullmatch(index):
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 10**6:
        raise ClusterSpecError(f"task: index must be an integer >= 0, got "
                               f"{validate.describe(index, 40)}", "TF_CONFIG")
    if task["type"] not in ROLES:
        raise ClusterSpecError(f"task: unknown role {validate.describe(task['type'], 40)} "
                               f"(expected one of {', '.join(ROLES)})", "TF_CONFIG")
    return TaskId(task["type"], index)


def tf_config_task(text: str) -> TaskId:
    """The task a ``TF_CONFIG`` text names, checked for shape only (not against its cluster)."""
    return _task_of(_tf_config(text))


def _read_tf_config(text: str) -> tuple[Cluster, TaskId]:
    config = _tf_config(text)
    cluster_part = config.get("cluster")
    if not isinstance(cluster_part, Mapping):
        raise ClusterSpecError(f"cluster: expected a mapping, got "
                               f"{validate.describe(cluster_part)}", "TF_CONFIG")
    # Kubeflow's TFJob writes "environment": "cloud" too; it means nothing to PSS.
    cluster = Cluster.from_dict(cluster_part, source="TF_CONFIG")
    try:
        return cluster, cluster.check_task(_task_of(config))
    except ConfigError as e:
        raise ClusterSpecError(f"task: {e}", "TF_CONFIG") from None
