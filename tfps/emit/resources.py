"""CPU and memory of each role, for the engines' manifests (``--emit``). Pure Python.

An engine that is not told what a task needs gives it what it likes: Kubernetes schedules a
pod without requests as best-effort (first evicted, anywhere), and Slurm binds each task to
one CPU. The defaults below are sized from the job's shape and, with ``--model-bytes``, from
the model:

* **ps**: its share of the variables and optimizer slots, twice over (a checkpoint save
  serializes a copy of each shard; gRPC buffers values in flight: the same rule as
  ``--doctor``), plus 1 GiB for the TF runtime; at least 2 GiB. CPUs: one per two workers it
  serves, 2 to 8.
* **worker**: 4 CPUs, 4 GiB (a batch and the rows it touches; a large dense model needs more).
* **chief**: 2 CPUs, 2 GiB (it coordinates; the variables live on the ps tasks).
* **evaluator**: 2 CPUs, 2 GiB plus the whole model (it restores every variable).

No task is given less than `MIN_TASK_MIB` (1 GiB): TensorFlow alone takes about half of that
once imported and serving, before the task holds a variable or a batch (measured:
docs/engines/index.md, "What every Kubernetes engine shares").

>>> defaults(num_ps=2, num_workers=16)["ps"]
Resources(cpu='4', memory_mib=2048)
>>> defaults(num_ps=2, num_workers=2, model_bytes=8 << 30)["ps"].memory_mib
9216
>>> parse_cpu("500m"), parse_cpu("2")
('500m', '2')
>>> memory_mib("4Gi"), slurm_mem("16G")
(4096, '16G')
"""

from __future__ import annotations

import dataclasses
import math
import re

from tfps.cluster import ROLES
from tfps.errors import ConfigError

__all__ = ["MIN_TASK_MIB", "Resources", "check_task_memory", "defaults", "k8s_memory",
           "memory_mib", "parse_cpu", "parse_role_value", "slurm_mem", "slurm_mem_mib"]

_GIB_MIB = 1024
# TF runtime, gRPC and Python of any task, before it holds a variable.
_RUNTIME_MIB = 1024
# The least memory any task may be given: its runtime (module docstring).
MIN_TASK_MIB = _RUNTIME_MIB
# A ps holds its share of the model twice at a save (tfps/launch/doctor.py's
# _PS_MEMORY_FRACTION = 0.5).
_PS_MODEL_FACTOR = 2
_MIN_PS_MIB = 2 * _GIB_MIB
_WORKERS_PER_PS_CPU = 2
_PS_CPUS = (2, 8)
_FIXED = {"chief": ("2", 2 * _GIB_MIB), "worker": ("4", 4 * _GIB_MIB),
          "evaluator": ("2", 2 * _GIB_MIB)}
# Kubernetes quantities tfps accepts: CPUs as cores ("2", "0.5") or millicores ("500m");
# memory in bytes with a binary or decimal suffix ("4Gi", "512Mi", "4G").
_CPU = re.compile(r"(?:[0-9]{1,5}(?:\.[0-9]{1,3})?|[0-9]{1,8}m)")
_MEMORY = re.compile(r"([0-9]{1,9})(Ki|Mi|Gi|Ti|k|M|G|T)?")
_K8S_FACTORS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
# Slurm's --mem: an integer with an optional unit, megabytes by default (K, M, G, T: powers of
# 1024); 0 means all the memory of the node.
_SLURM_MEM = re.compile(r"([0-9]{1,9})([KMGT]?)")
_SLURM_FACTORS_MIB = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}
_MAX_MIB = 1 << 30  # a PiB: more than any node


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one task of a role asks for: CPUs (a Kubernetes quantity) and memory in MiB."""

    cpu: str
    memory_mib: int


def defaults(*, num_ps: int, num_workers: int,
             model_bytes: int | None = None) -> dict[str, Resources]:
    """The default `Resources` of every role (module docstring), for a job of this shape."""
    share_mib = math.ceil(model_bytes / num_ps / (1 << 20)) if model_bytes else 0
    ps_mib = max(_MIN_PS_MIB, _RUNTIME_MIB + _PS_MODEL_FACTOR * share_mib)
    ps_cpus = min(_PS_CPUS[1], max(_PS_CPUS[0], math.ceil(num_workers / num_ps /
                                                          _WORKERS_PER_PS_CPU)))
    out = {role: Resources(cpu, mib) for role, (cpu, mib) in _FIXED.items()}
    out["ps"] = Resources(str(ps_cpus), _round_gib(ps_mib))
    model_mib = math.ceil(model_bytes / (1 << 20)) if model_bytes else 0
    out["evaluator"] = Resources("2", _round_gib(2 * _GIB_MIB + model_mib))
    return {role: out[role] for role in ROLES}


def _round_gib(mib: int) -> int:
    return math.ceil(mib / _GIB_MIB) * _GIB_MIB


def parse_role_value(flag: str, text: str) -> tuple[str, str]:
    """``"ps=4Gi"`` -> ``("ps", "4Gi")``; raises `ConfigError` naming `flag` and `text`."""
    role, sep, value = str(text).partition("=")
    if not sep or role not in ROLES or not value:
        raise ConfigError(f"{flag} {str(text)[:40]!r}: expected ROLE=VALUE with ROLE one of "
                          f"{', '.join(ROLES)} (e.g. {flag} ps=4Gi)")
    return role, value


def parse_cpu(text: str, flag: str = "--cpu") -> str:
    """A Kubernetes CPU quantity (``"2"``, ``"0.5"``, ``"500m"``), > 0, returned as given."""
    if not isinstance(text, str) or not _CPU.fullmatch(text) or _millicores(text) == 0:
        raise ConfigError(f"{flag}: expected CPUs such as 2, 0.5 or 500m, got "
                          f"{str(text)[:40]!r}")
    return text


def _millicores(text: str) -> float:
    return float(text[:-1]) if text.endswith("m") else float(text) * 1000


def memory_mib(text: str, flag: str = "--memory") -> int:
    """A Kubernetes memory quantity (``"4Gi"``, ``"512Mi"``, ``"4G"``) in MiB, rounded up."""
    m = _MEMORY.fullmatch(text) if isinstance(text, str) else None
    mib = math.ceil(int(m.group(1)) * _K8S_FACTORS[m.group(2)] / (1 << 20)) if m else 0
    if not 1 <= mib <= _MAX_MIB:
        raise ConfigError(f"{flag}: expected memory such as 4Gi, 512Mi or 4G (at least 1Mi), "
                          f"got {str(text)[:40]!r}")
    return mib


def check_task_memory(mib: int, what: str) -> None:
    """`ConfigError` naming `what` when `mib` is below `MIN_TASK_MIB` (module docstring)."""
    if mib < MIN_TASK_MIB:
        raise ConfigError(f"{what}: {mib} MiB is less than any task needs: at least "
                          f"{k8s_memory(MIN_TASK_MIB)} (TensorFlow alone takes ~580 MiB once "
                          f"imported)")


def k8s_memory(mib: int) -> str:
    """MiB as a Kubernetes quantity: ``4096`` -> ``"4Gi"``, ``1536`` -> ``"1536Mi"``."""
    return f"{mib // _GIB_MIB}Gi" if mib % _GIB_MIB == 0 else f"{mib}Mi"


def slurm_mem(text: str, flag: str = "--mem") -> str:
    """Slurm's ``--mem`` value (``"16G"``, ``"4096"`` MB, ``"0"``: all of the node's), as given."""
    slurm_mem_mib(text, flag)
    return text


def slurm_mem_mib(text: str, flag: str = "--mem") -> int:
    """Slurm's ``--mem`` value in MiB, rounded up (0: all of the node's)."""
    m = _SLURM_MEM.fullmatch(text) if isinstance(text, str) else None
    if m is None or int(m.group(1)) * _SLURM_FACTORS_MIB[m.group(2)] > _MAX_MIB:
        raise ConfigError(f"{flag}: expected Slurm's memory per node such as 16G, 4096 (MB) "
                          f"or 0 (all of it), got {str(text)[:40]!r}")
    return math.ceil(int(m.group(1)) * _SLURM_FACTORS_MIB[m.group(2)])
