"""Task planning: the command, environment and ``TF_CONFIG`` of every task. Pure: no I/O.

This is exactly what ``tfps-launch --dry-run`` prints, one JSON object per task:

>>> from tfps import Cluster
>>> cluster = Cluster.from_dict({"chief": ["localhost:2220"], "ps": ["localhost:2221"],
...                              "worker": ["localhost:2222"]})
>>> plans = plan_tasks(cluster, [t for t, _ in cluster.tasks()], script="train.py",
...                    python="python")
>>> [p.label for p in plans]
['chief', 'ps:0', 'worker:0']
>>> plans[1].command
('python', '-m', 'tfps.server')
>>> plans[0].env["GRPC_FAIL_FAST"]
'use_caller'

GPUs (``gpus_per_worker=G``): only workers compute, so only workers get GPUs. When every task
runs on this machine, worker ``i`` gets devices ``i*G .. i*G+G-1``; with one task per host
(``--task``, ``--from-env``) a worker gets ``0 .. G-1`` of its own host. ps, chief and evaluator get
``CUDA_VISIBLE_DEVICES=""``: a ps that sees a GPU puts variables there, and a chief that sees one
lets TensorFlow reserve its memory, which the workers on the same machine then lack.
With ``G=0`` (the default) tfps leaves ``CUDA_VISIBLE_DEVICES`` alone.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Iterable, Sequence

from tfps import policy
from tfps._env import QUIET_TF_LOGS, TASK_ENV
from tfps.cluster import DATA_ROLES, Cluster, TaskId
from tfps.cluster.model import DATA_SERVICE_ENV
from tfps.errors import ConfigError

__all__ = ["Fault", "TaskPlan", "label", "parse_fault", "plan_tasks"]

# Roles that run the user's script; ps and worker run the task server only.
SCRIPT_ROLES = ("chief", "evaluator")
# Roles that have at most one task: shown without an index ("chief", not "chief:0").
_SINGLE_ROLES = ("chief", "evaluator")
# Task output goes through a pipe; unbuffered Python keeps it in step with the other tasks.
_UNBUFFERED = {"PYTHONUNBUFFERED": "1"}


def label(task: TaskId) -> str:
    """How the launcher names a task: ``chief``, ``evaluator``, ``ps:0``, ``worker:1``."""
    return task.type if task.type in _SINGLE_ROLES and task.index == 0 else str(task)


@dataclasses.dataclass(frozen=True)
class TaskPlan:
    """Everything needed to start one task (and restart it, identically)."""

    task: TaskId
    address: str
    tf_config: dict
    command: tuple[str, ...]
    env: dict  # only the variables tfps sets; the rest is inherited from the launcher

    @property
    def label(self) -> str:
        return label(self.task)

    @property
    def runs_script(self) -> bool:
        return self.task.type in SCRIPT_ROLES

    def to_json(self) -> str:
        """One ``--dry-run`` line."""
        return json.dumps({"task": self.label, "tf_config": self.tf_config,
                           "command": list(self.command), "env": self.env})


def gpu_devices(task: TaskId, gpus_per_worker: int, one_per_host: bool) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` of `task`, or None to leave it alone (see module doc)."""
    if gpus_per_worker <= 0:
        return None
    if task.type != "worker":
        return ""
    first = 0 if one_per_host else task.index * gpus_per_worker
    return ",".join(str(d) for d in range(first, first + gpus_per_worker))


def script_command(script: str, script_args: Sequence[str], python: str) -> tuple[str, ...]:
    """A ``.py`` script runs under the launcher's Python; anything else is executed directly."""
    head = (python, script) if script.endswith(".py") else (script,)
    return head + tuple(script_args)


def plan_tasks(cluster: Cluster, tasks: Iterable[TaskId], *, script: str,
               script_args: Sequence[str] = (), gpus_per_worker: int = 0,
               verbose: bool = False, one_per_host: bool = False,
               python: str = sys.executable) -> list[TaskPlan]:
    """The plan of each of `tasks` (tasks of `cluster` that this launcher runs)."""
    plans, tasks = [], list(tasks)
    for task in tasks:
        if task.type in DATA_ROLES:  # the tf.data service: no TF_CONFIG, no script
            plans.append(_data_service_plan(cluster, task, python, verbose))
            continue
        tf_config = cluster.tf_config(task.type, task.index)
        if task.type in SCRIPT_ROLES:
            command = script_command(script, script_args, python)
        else:
            command = (python, "-m", "tfps.server")
        env = {"TF_CONFIG": json.dumps(tf_config), **TASK_ENV, **_UNBUFFERED,
               policy.TASKS_ON_HOST_ENV: str(len(tasks))}  # TF's thread spinning
        if not verbose:
            env.update(QUIET_TF_LOGS)
        if task.type in SCRIPT_ROLES and cluster.data_service:
            env[DATA_SERVICE_ENV] = cluster.data_service  # tfps.data's service mode reads it
        devices = gpu_devices(task, gpus_per_worker, one_per_host)
        if devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = devices
        plans.append(TaskPlan(task, cluster.address(task), tf_config, command, env))
    return plans


def _data_service_plan(cluster: Cluster, task: TaskId, python: str, verbose: bool) -> TaskPlan:
    """A dispatcher or data worker of TF's tf.data service (``python -m tfps.data.service``):
    it serves at its address; a data worker registers there with the dispatcher."""
    address = cluster.address(task)
    command = (python, "-m", "tfps.data.service", task.type, "--address", address)
    if task.type == "data_worker":
        command += ("--dispatcher", cluster.dispatcher[0])
    env = {**TASK_ENV, **_UNBUFFERED, **({} if verbose else QUIET_TF_LOGS)}
    return TaskPlan(task, address, {}, command, env)


@dataclasses.dataclass(frozen=True)
class Fault:
    """``--inject-fault worker:0@30s``: SIGKILL `task` `at` seconds after the cluster started."""

    task: TaskId
    at: float

    def __str__(self) -> str:
        return f"{label(self.task)}@{self.at:g}s"


# ASCII digits only (`\d` also matches other scripts' digits, which float() then accepts).
_DURATION = re.compile(r"([0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})(ms|s|m)?")
# A fault later than this is a typo: a drill is minutes long.
_MAX_FAULT_S = 7 * 24 * 3600
_UNIT_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}


def parse_fault(text: str) -> Fault:
    """Parses ``TASK@TIME``; TIME is seconds, or has a unit ``ms``, ``s``, ``m``.

    >>> parse_fault("ps:0@1.5s")
    Fault(task=TaskId(type='ps', index=0), at=1.5)
    >>> parse_fault("chief@2m").at
    120.0
    """
    task_text, sep, when = text.partition("@")
    match = _DURATION.fullmatch(when)
    at = float(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else -1.0
    if not sep or not 0 <= at <= _MAX_FAULT_S:
        raise ConfigError(f"--inject-fault {text[:60]!r}: expected TASK@TIME with TIME at most "
                          f"7 days, e.g. worker:0@30s")
    return Fault(TaskId.parse(task_text), at)
