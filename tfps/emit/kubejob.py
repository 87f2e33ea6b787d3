"""What every Kubernetes engine's job shares: `KubeJobSpec`, and its flags. Pure Python.

The TFJob, the Volcano Job and the TrainJob run the same pods: one container per task, running
``tfps-launch --from-env SCRIPT ARGS`` from ``image``, listening on port 2222, asking for the
CPU and memory of its role (`tfps.emit.resources`), annotated so that Istio leaves it alone,
beside a NetworkPolicy that admits the port from the job's own pods only. Each engine derives
its spec from `KubeJobSpec` and says how it names pods (`KubeJobSpec.derived_names`) and
which label its controller puts on every pod of the job (`KubeJobSpec.job_label`).

>>> spec = KubeJobSpec(image="img:1", script="t.py", num_ps=1, num_workers=2)
>>> spec.command()
['tfps-launch', '--from-env', 't.py']
>>> spec.sizes()["worker"]
Resources(cpu='4', memory_mib=4096)
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, ClassVar

from tfps import _cli, validate
from tfps._env import TASK_ENV
from tfps.cluster import ROLES
from tfps.emit import data_service, kube
from tfps.emit import resources as _resources
from tfps.emit.job import JobSpec
from tfps.errors import ConfigError

__all__ = ["CONTAINER_PORT", "DEFAULT_BACKOFF_LIMIT", "FLAGS", "KubeJobSpec", "add_arguments",
           "job_fields"]

# The port every engine's TF_CONFIG names (TFJob's and Volcano's default; the TrainJob's
# runtime sets it): one port per pod, so every pod can use the same.
CONTAINER_PORT = 2222
# Restarts allowed over the whole job before it is marked failed: enough for a few preempted
# workers, few enough that a crash-looping script stops within minutes.
DEFAULT_BACKOFF_LIMIT = 10
# Pods of an Istio-injected namespace get an Envoy side-car that intercepts the TF gRPC
# ports, and the tasks cannot talk (kubeflow/kubeflow#3935): opt out unless asked.
_ISTIO_INJECT = "sidecar.istio.io/inject"
_MANAGED_BY = {"app.kubernetes.io/managed-by": "tfps"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class KubeJobSpec(JobSpec):
    """A tfps job as Kubernetes pods: the settings every Kubernetes engine shares.

    Attributes (beyond `JobSpec`'s; ``name`` must be a DNS-1035 label, from which the
    engine derives pod and Service names, each at most 63 characters):
      image: container image with tfps, TensorFlow, tf-keras and the script.
      namespace: metadata.namespace of every object; None leaves it to ``kubectl -n``.
      backoff_limit: restarts allowed over the job before it is marked failed.
      istio_sidecar: let Istio inject its side-car (default: opt out, kubeflow/kubeflow#3935).
      resources: per-role `tfps.emit.resources.Resources` replacing the defaults
        (``{"ps": Resources("8", 32768)}``); only roles the job has, each with at least
        `tfps.emit.resources.MIN_TASK_MIB` of memory.

    Raises:
      ConfigError: naming the field and the value received.
    """

    script_location: ClassVar[str] = " in the image"
    # The label the engine's controller puts on every pod of the job (its value: the job's
    # name): the NetworkPolicy selects the job's pods by it.
    job_label: ClassVar[str] = "app.kubernetes.io/name"

    image: str
    namespace: str | None = None
    backoff_limit: int = DEFAULT_BACKOFF_LIMIT
    istio_sidecar: bool = False
    resources: Mapping[str, _resources.Resources] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        validate.count("backoff_limit", self.backoff_limit, 0)
        validate.boolean("istio_sidecar", self.istio_sidecar)
        if not isinstance(self.resources, Mapping):
            raise validate.fail("resources", self.resources, "a mapping of role to Resources")
        for role, res in self.resources.items():
            validate.choice("resources", role, ROLES)
            if not isinstance(res, _resources.Resources):
                raise validate.fail(f"resources[{role!r}]", res,
                                    "a tfps.emit.resources.Resources")
            if not self.counts[role]:
                raise ConfigError(f"Argument `resources` sizes the {role}, but the job has "
                                  f"no {role} (evaluator=False). Received: resources="
                                  f"{{{role!r}: {res}}}")
            _resources.check_task_memory(res.memory_mib, f"resources[{role!r}]")
        object.__setattr__(self, "resources", types.MappingProxyType(dict(self.resources)))
        kube.check_name(self.name)
        longest = max(self.derived_names(), key=len)
        if len(longest) > kube.MAX_DNS_LABEL:
            raise ConfigError(
                f"Argument `name` is too long: the {self.engine or 'engine'} would name a pod "
                f"or Service {longest!r} ({len(longest)} characters; Kubernetes allows "
                f"{kube.MAX_DNS_LABEL}). Received: name={self.name!r}")
        if not isinstance(self.image, str) or not self.image.strip() or any(
                c.isspace() for c in self.image):
            raise ConfigError(f"Argument `image` must be a container image reference such as "
                              f"'registry.example.com/team/trainer:1.0'. Received: "
                              f"image={self.image!r}")
        kube.check_namespace(self.namespace)

    # ------------------------------------------------------------------------- for engines
    def derived_names(self) -> list[str]:
        """The names the engine derives from ``name`` (pods, Services): the longest of each
        role. TFJob's and Volcano's: ``<name>-<role>-<index>``."""
        return [f"{self.name}-{role}-{n - 1}" for role, n in self.counts.items() if n]

    def sizes(self) -> dict[str, _resources.Resources]:
        """What each role's pods ask for: the defaults, with `resources` replacing some."""
        return {**self.default_resources(), **self.resources}

    def roles(self) -> list[tuple[str, int]]:
        """``(role, tasks)`` of every role the job has, chief first."""
        return [(role, n) for role, n in self.counts.items() if n]

    def command(self) -> list[str]:
        """Every container's command: ``tfps-launch --from-env [FLAGS] SCRIPT ARGS``."""
        # --gpus-per-worker makes the launcher hide GPUs from chief, ps and evaluator: CUDA
        # images set NVIDIA_VISIBLE_DEVICES=all, so a pod without a GPU limit can still see
        # the node's.
        gpu_flag = ["--gpus-per-worker", str(self.gpus_per_worker)] if self.gpus_per_worker \
            else []
        return ["tfps-launch", "--from-env", *gpu_flag, *self.launcher_args(), self.script,
                *self.script_args]

    def container(self, role: str, *, name: str, port_name: str = "tfps",
                  env: list[dict] | None = None) -> dict:
        """The container of `role`'s pods: image, command, port, environment, resources."""
        gpus = self.gpus_per_worker if role == "worker" else 0
        if self.data_workers and role in ("chief", "evaluator"):  # tfps.data's service mode
            env = [*(env or ()), {"name": "TFPS_DATA_SERVICE",
                                  "value": data_service.address(self.name)}]
        return {
            "name": name,
            "image": self.image,
            "command": self.command(),
            "ports": [{"name": port_name, "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
            "env": [{"name": k, "value": v} for k, v in TASK_ENV.items()] + list(env or ()),
            "resources": kube.container_resources(self.sizes()[role], gpus),
        }

    def pod_metadata(self, labels: Mapping[str, str] | None = None) -> dict:
        """A pod template's metadata: the job label (and `labels`), the Istio opt-out."""
        out: dict[str, Any] = {"labels": {self.job_label: self.name, **(labels or {})}}
        if not self.istio_sidecar:
            out["annotations"] = {_ISTIO_INJECT: "false"}
        return out

    def metadata(self, name: str | None = None) -> dict:
        """An object's metadata: its name (the job's by default), namespace, managed-by."""
        out: dict[str, Any] = {"name": name or self.name}
        if self.namespace:
            out["namespace"] = self.namespace
        out["labels"] = dict(_MANAGED_BY)
        return out

    def data_service(self) -> list[dict]:
        """The tf.data service's objects beside the job (`tfps.emit.data_service`), or []."""
        if not self.data_workers:
            return []
        env = [{"name": k, "value": v} for k, v in TASK_ENV.items()]
        return data_service.kubernetes_objects(
            name=self.name, namespace=self.namespace, image=self.image,
            workers=self.data_workers, job_label=self.job_label,
            pod_metadata={k: v for k, v in self.pod_metadata().items() if k != "labels"},
            env=env)

    def network_policy(self) -> dict:
        """The job's pods accept `CONTAINER_PORT` only from each other (`kube.network_policy`)."""
        return kube.network_policy(name=self.name, namespace=self.namespace,
                                   port=CONTAINER_PORT, label=self.job_label)


# ------------------------------------------------------------------------------ flags
# The flags (argparse dests) every Kubernetes engine takes; `tfps.emit.cli` adds them once.
FLAGS = frozenset({"image", "namespace", "backoff_limit", "istio_sidecar", "cpu", "memory"})
_ROLES = ", ".join(ROLES)
_ENGINES = "tfjob, volcano, trainjob"
_MIN_MEMORY = _resources.k8s_memory(_resources.MIN_TASK_MIB)


def _role(parse_value):
    def parse(text):
        role, value = _resources.parse_role_value("", text)
        return role, parse_value(value)
    return parse


role_cpu = _cli.arg_type(f"ROLE=CPUS (ROLE: {_ROLES}; CPUS such as 2, 0.5 or 500m)",
                         _role(_resources.parse_cpu))
role_memory = _cli.arg_type(f"ROLE=SIZE (ROLE: {_ROLES}; SIZE such as 4Gi, 512Mi or 4G)",
                            _role(lambda v: (_resources.memory_mib(v), v)[1]))


def add_arguments(group) -> None:
    """Adds the Kubernetes engines' shared flags to the argparse `group` of ``--emit``."""
    group.add_argument("--image", help=f"{_ENGINES}: container image with tfps and the script")
    group.add_argument("--namespace", help=f"{_ENGINES}: Kubernetes namespace (default: "
                                           f"kubectl's)")
    group.add_argument("--backoff-limit", type=_cli.int_in(0, 10_000), metavar="N",
                       help=f"{_ENGINES}: restarts allowed before the job fails "
                            f"(default {DEFAULT_BACKOFF_LIMIT})")
    group.add_argument("--istio-sidecar", action="store_true", default=None,
                       help=f'{_ENGINES}: let Istio inject its side-car (default: pods are '
                            f'annotated sidecar.istio.io/inject: "false"; the tasks cannot '
                            f'talk through it)')
    group.add_argument("--cpu", action="append", type=role_cpu, metavar="ROLE=CPUS",
                       help=f"{_ENGINES}: CPU request of a role, e.g. ps=4 (once per role; "
                            f"default chief 2, ps 2-8 by workers per ps, worker 4, evaluator 2)")
    group.add_argument("--memory", action="append", type=role_memory, metavar="ROLE=SIZE",
                       help=f"{_ENGINES}: memory request and limit of a role, e.g. ps=16Gi "
                            f"(once per role, at least {_MIN_MEMORY}; "
                            f"default chief 2Gi, ps 2Gi or 1Gi + twice its share of "
                            f"--model-bytes, worker 4Gi, evaluator 2Gi + the model)")


def _once_per_role(flag: str, pairs, evaluator: bool) -> dict[str, str]:
    """``{role: value}`` of a repeatable ROLE=VALUE flag: each role once, roles the job has."""
    out: dict[str, str] = {}
    for role, value in pairs or ():
        if role in out:
            raise _cli.UsageError(f"{flag} {role}={value}: {role} is already given "
                                  f"({flag} {role}={out[role]}); give each role once")
        if role == "evaluator" and not evaluator:
            raise _cli.UsageError(f"{flag} {role}={value}: the job has no evaluator (add "
                                  f"--evaluator, or drop {flag} {role}=...)")
        out[role] = value
    return out


def job_fields(args, engine: str, **job) -> dict:
    """`KubeJobSpec`'s fields from the parsed flags, beyond `JobSpec`'s (`job`).

    Raises:
      UsageError: ``--image`` is missing, a role given twice to ``--cpu``/``--memory``, a
        role the job does not have, or memory below the floor; naming the flag and value.
    """
    if args.image is None:
        raise _cli.UsageError(f"--emit {engine} needs --image IMAGE (a container image with "
                              f"tfps, TensorFlow, tf-keras and the script)")
    cpus = _once_per_role("--cpu", args.cpu, job["evaluator"])
    memories = _once_per_role("--memory", args.memory, job["evaluator"])
    # --cpu and --memory each change one half of a role's default.
    sizes = _resources.defaults(num_ps=job["num_ps"], num_workers=job["num_workers"],
                                model_bytes=job.get("model_bytes"))
    for role, memory in memories.items():
        mib = _resources.memory_mib(memory)
        _resources.check_task_memory(mib, f"--memory {role}={memory}")
        sizes[role] = _resources.Resources(sizes[role].cpu, mib)
    for role, cpu in cpus.items():
        sizes[role] = _resources.Resources(cpu, sizes[role].memory_mib)
    given = {"namespace": args.namespace, "backoff_limit": args.backoff_limit,
             "istio_sidecar": args.istio_sidecar}
    return dict(job, image=args.image,
                resources={role: sizes[role] for role in (*cpus, *memories)},
                **{k: v for k, v in given.items() if v is not None})
