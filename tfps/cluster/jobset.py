"""A pod of a JobSet (Kubeflow Trainer v2's TrainJob) as a tfps task. Pure Python.

Kubeflow Trainer v2 runs a TrainJob as a JobSet and writes no ``TF_CONFIG`` (it has no
TensorFlow runtime): each pod computes its own from what JobSet gives it. JobSet
(sigs.k8s.io/jobset v0.12.0) names each pod's host ``<jobset>-<replicatedJob>-<jobIndex>-
<podIndex>`` under the headless Service ``<subdomain>`` (by default the JobSet's name, which
is the TrainJob's), and labels and annotates each pod with its JobSet's name, its
replicated job's name and its Job's index; Kubernetes gives every pod of an Indexed Job its
``JOB_COMPLETION_INDEX``. The runtime that ``tfps-launch --emit trainjob`` writes has one
replicated job per role (``chief``, ``ps``, ``worker``, ``evaluator``), one Job each, whose
pods are that role's tasks, and hands each container (downward API and plain values):

=======================  =============================================================
``JOBSET_NAME``          the pod's ``jobset.sigs.k8s.io/jobset-name`` annotation
``REPLICATED_JOB_NAME``  ``jobset.sigs.k8s.io/replicatedjob-name``: the role
``JOB_INDEX``            ``jobset.sigs.k8s.io/job-index``: 0 (one Job per role)
``JOB_COMPLETION_INDEX`` set by Kubernetes: the task's index in its role
``TFPS_NUM_PS``          ps tasks (the ``ps`` Job's parallelism)
``TFPS_NUM_WORKERS``     worker tasks
``TFPS_EVALUATOR``       ``1`` with an evaluator, else ``0``
``TFPS_PORT``            the port of every task (optional; 2222)
``TFPS_SUBDOMAIN``       the headless Service (optional; the JobSet's name)
=======================  =============================================================

>>> env = {"JOBSET_NAME": "mnist", "REPLICATED_JOB_NAME": "worker", "JOB_INDEX": "0",
...        "JOB_COMPLETION_INDEX": "1", "TFPS_NUM_PS": "1", "TFPS_NUM_WORKERS": "2",
...        "TFPS_EVALUATOR": "0"}
>>> spec, task = read_pod(env)
>>> spec["worker"], task
(['mnist-worker-0-0.mnist:2222', 'mnist-worker-0-1.mnist:2222'], ('worker', 1))
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tfps.errors import ClusterSpecError

__all__ = ["DEFAULT_PORT", "ENV", "NAME_ENV", "POD_ANNOTATIONS", "hostname", "read_pod"]

# The variable whose presence says "a JobSet pod" to `tfps.Cluster.from_env`.
NAME_ENV = "JOBSET_NAME"
# Where each variable of the runtime comes from: JobSet's pod annotations (jobset_types.go:
# JobSetNameKey, ReplicatedJobNameKey, JobIndexKey), read through the downward API.
POD_ANNOTATIONS = {NAME_ENV: "jobset.sigs.k8s.io/jobset-name",
                   "REPLICATED_JOB_NAME": "jobset.sigs.k8s.io/replicatedjob-name",
                   "JOB_INDEX": "jobset.sigs.k8s.io/job-index"}
# Every variable the reader takes (module docstring).
ENV = (*POD_ANNOTATIONS, "JOB_COMPLETION_INDEX", "TFPS_NUM_PS", "TFPS_NUM_WORKERS",
       "TFPS_EVALUATOR", "TFPS_PORT", "TFPS_SUBDOMAIN")
DEFAULT_PORT = 2222
_ROLES = ("chief", "ps", "worker", "evaluator")
# Most tasks of one role: a JobSet's Job holds at most this many pods in practice, and a
# bound keeps a hostile count from building a huge cluster.
_MAX_TASKS = 100_000
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DIGITS = re.compile(r"[0-9]{1,9}")
_SOURCE = "JobSet"


def _error(message: str) -> ClusterSpecError:
    return ClusterSpecError(message, _SOURCE)


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _get(environ: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = environ.get(name, default)
    if value is None:
        raise _error(f"{name} is not set (a JobSet pod of the runtime that `tfps-launch --emit "
                     f"trainjob` writes has it)")
    return value


def _int(environ: Mapping[str, str], name: str, low: int, high: int,
         default: str | None = None) -> int:
    text = _get(environ, name, default)
    # ASCII digits only: int() would also take '８', '1_0' and ' 1 '.
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise _error(f"{name}: expected an integer in [{low}, {high}], got {_short(text)}")
    return int(text)


def _label(environ: Mapping[str, str], name: str, default: str | None = None) -> str:
    text = _get(environ, name, default)
    if not _DNS1035.fullmatch(text) or len(text) > 63:
        raise _error(f"{name}: expected a DNS-1035 label (lower-case letters, digits and "
                     f"'-'), got {_short(text)}")
    return text


def hostname(jobset: str, role: str, index: int, subdomain: str | None = None) -> str:
    """The name under which task `role`:`index` is reached: ``<jobset>-<role>-0-<index>.
    <subdomain>``, JobSet's pod host name under its headless Service.

    >>> hostname("mnist", "ps", 1)
    'mnist-ps-0-1.mnist'
    """
    return f"{jobset}-{role}-0-{index}.{subdomain or jobset}"


def read_pod(environ: Mapping[str, str]) -> tuple[dict[str, list[str]], tuple[str, int]]:
    """The job's cluster (``{role: [host:port]}``, evaluator included) and this pod's
    ``(role, index)``, from the variables of the module docstring.

    Raises:
      ClusterSpecError: naming the variable and the value received.
    """
    jobset = _label(environ, NAME_ENV)
    role = _get(environ, "REPLICATED_JOB_NAME")
    if role not in _ROLES:
        raise _error(f"REPLICATED_JOB_NAME: {_short(role)} is not a role (expected one of "
                     f"{', '.join(_ROLES)}: the runtime has one replicated job per role)")
    job_index = _int(environ, "JOB_INDEX", 0, _MAX_TASKS)
    if job_index != 0:
        raise _error(f"JOB_INDEX={job_index}: the runtime has one Job per role (replicas: 1); "
                     f"its pods are the role's tasks")
    counts = {"chief": 1, "ps": _int(environ, "TFPS_NUM_PS", 1, _MAX_TASKS),
              "worker": _int(environ, "TFPS_NUM_WORKERS", 1, _MAX_TASKS),
              "evaluator": _int(environ, "TFPS_EVALUATOR", 0, 1)}
    index = _int(environ, "JOB_COMPLETION_INDEX", 0, _MAX_TASKS)
    if index >= counts[role]:
        raise _error(f"JOB_COMPLETION_INDEX={index}: the job has {counts[role]} {role} "
                     f"task{'s' if counts[role] != 1 else ''} (was the {role} Job's "
                     f"parallelism changed without TFPS_NUM_*? emit the job again)")
    port = _int(environ, "TFPS_PORT", 1, 65535, str(DEFAULT_PORT))
    subdomain = _label(environ, "TFPS_SUBDOMAIN", jobset)
    spec = {r: [f"{hostname(jobset, r, i, subdomain)}:{port}" for i in range(n)]
            for r, n in counts.items() if n}
    return spec, (role, index)
