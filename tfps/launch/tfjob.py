"""A Kubeflow ``TFJob`` (+ a ``NetworkPolicy``) for a tfps job: ``tfps-launch --emit tfjob``.

Every pod runs ``tfps-launch --from-env SCRIPT ARGS``, which reads the ``TF_CONFIG`` the TFJob
controller writes and runs the task server (ps, worker) or the script (chief, evaluator).
The builders are pure and return plain dicts.

>>> docs = tfjob_manifest(name="mnist", image="registry/tfps:1", script="train.py",
...                       num_ps=2, num_workers=4)
>>> [d["kind"] for d in docs]
['TFJob', 'NetworkPolicy']
>>> sorted(docs[0]["spec"]["tfReplicaSpecs"])
['Chief', 'PS', 'Worker']

`to_yaml` writes every string so that Kubernetes reads it back as that string: its YAML
reader (go-yaml, YAML 1.1 rules) types unquoted ``1e-3``, ``08``, ``0o17`` as numbers and
``y``/``n``/``on`` as booleans, and the API server then rejects a ``command`` holding one.

>>> text = to_yaml([{"command": ["train.py", "--lr", "1e-3", "--flag", "y"]}])
>>> [line for line in text.splitlines() if line.startswith("- ")]
['- train.py', '- --lr', '- "1e-3"', '- --flag', '- "y"']
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Sequence

from tfps import validate
from tfps._env import TASK_ENV
from tfps.errors import ConfigError
from tfps.launch import resources as _resources

__all__ = ["RESTART_POLICIES", "TFJOB_PORT", "default_name", "network_policy",
           "tfjob_manifest", "to_yaml"]

# What the TFJob controller looks for (training-operator, pkg/apis/kubeflow.org/v1/
# tensorflow_types.go): the container named "tensorflow" and its port named "tfjob-port";
# without that port it assumes 2222, and TF_CONFIG lists <job>-<type>-<i>.<ns>.svc:<port>.
TFJOB_API_VERSION = "kubeflow.org/v1"
TFJOB_CONTAINER = "tensorflow"
TFJOB_PORT_NAME = "tfjob-port"
TFJOB_PORT = 2222
# The label the controller puts on every pod of a job (training.kubeflow.org/job-name). The
# emitted templates set it too, so the NetworkPolicy selects the pods whatever the
# operator's version.
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
_REPLICA_TYPES = {"chief": "Chief", "ps": "PS", "worker": "Worker", "evaluator": "Evaluator"}
# The TFJob's restart policies (training-operator common_types.go).
RESTART_POLICIES = ("ExitCode", "OnFailure", "Never", "Always")
# ExitCode: the operator recreates a pod whose container exited 128-255 (killed by a signal:
# OOM killer 137, eviction or preemption 143) and fails the job on 1-127. Inside the pod the
# launcher already restarts its task in place (a worker rejoins; a chief resumes from its
# checkpoint; a lost ps makes the chief's launcher restart the chief), so what reaches the
# pod's exit code is either 0 (done, or the chief is done), the chief script's own error
# (1, or its sys.exit code: permanent, a rerun fails the same way), 1 when the launcher's
# --max-restarts budget is spent, or 128+N when the launcher itself was signalled. OnFailure
# (the previous default) re-ran a chief whose script raised until backoffLimit.
_DEFAULT_RESTART_POLICY = "ExitCode"
# Pods of an Istio-injected namespace get an Envoy side-car that intercepts the TF gRPC
# ports, and the tasks cannot talk (kubeflow/kubeflow#3935): opt out unless asked.
_ISTIO_INJECT = "sidecar.istio.io/inject"
# Restarts allowed over the whole job before it is marked Failed: enough for a few preempted
# workers, few enough that a crash-looping script stops within minutes.
_DEFAULT_BACKOFF_LIMIT = 10
# ps and worker tasks never exit on their own: when the chief succeeds the job has succeeded,
# and "Running" deletes the pods still running (ps, workers, evaluator) but keeps the chief's
# pod and its logs.
_CLEAN_POD_POLICY = "Running"
# Kubernetes object and Service names are DNS-1035 labels of at most 63 characters, and the
# controller names each replica's Service <job>-<type>-<index>.
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_MAX_DNS_LABEL = 63
# Defaults of the counts form (no --spec): the launcher's own.
_DEFAULT_NUM_PS = 2
_DEFAULT_NUM_WORKERS = 2


# ------------------------------------------------------------------------------ validation
def _check_name(name: Any, counts: dict[str, int]) -> str:
    if not isinstance(name, str) or not _DNS1035.fullmatch(name):
        raise ConfigError(
            f"Argument `name` must be a DNS-1035 label (lower-case letters, digits and '-', "
            f"starting with a letter, not ending with '-'). Received: name={name!r}")
    longest = max((f"{name}-{role}-{n - 1}" for role, n in counts.items() if n),
                  key=len)
    if len(longest) > _MAX_DNS_LABEL:
        raise ConfigError(
            f"Argument `name` is too long: the TFJob controller would name a Service "
            f"{longest!r} ({len(longest)} characters; Kubernetes allows {_MAX_DNS_LABEL}). "
            f"Received: name={name!r}")
    return name


def default_name(script: str) -> str:
    """A job name from the script's file name: ``train_mnist.py`` -> ``tfps-train-mnist``."""
    stem = os.path.splitext(os.path.basename(script or ""))[0].lower()
    stem = re.sub(r"[^a-z0-9]+", "-", stem).strip("-")
    return ("tfps-" + stem)[:40].rstrip("-") if stem else "tfps-job"


# ------------------------------------------------------------------------------ Kubernetes
def _container(image: str, command: list[str], gpus: int,
               res: _resources.Resources) -> dict:
    # Memory: request = limit, so a ps is never evicted for using what it asked for, and a
    # leak ends in its own OOM kill (137, retried) instead of the node's. CPU: a request only;
    # a CPU limit throttles gRPC threads mid-step without protecting anyone.
    memory = _resources.k8s_memory(res.memory_mib)
    limits: dict[str, Any] = {"memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    return {
        "name": TFJOB_CONTAINER,
        "image": image,
        "command": command,
        "ports": [{"name": TFJOB_PORT_NAME, "containerPort": TFJOB_PORT, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in TASK_ENV.items()],
        "resources": {"requests": {"cpu": res.cpu, "memory": memory}, "limits": limits},
    }


def tfjob_manifest(*, name: str, image: str, script: str, script_args: Sequence[str] = (),
                   num_ps: int = _DEFAULT_NUM_PS, num_workers: int = _DEFAULT_NUM_WORKERS,
                   evaluator: bool = False, gpus_per_worker: int = 0,
                   namespace: str | None = None,
                   backoff_limit: int = _DEFAULT_BACKOFF_LIMIT,
                   restart_policy: str = _DEFAULT_RESTART_POLICY,
                   istio_sidecar: bool = False,
                   resources: Mapping[str, _resources.Resources] | None = None,
                   model_bytes: int | None = None,
                   max_restarts: int | None = None) -> list[dict]:
    """A Kubeflow ``TFJob`` (chief, ps, workers, optional evaluator) and its ``NetworkPolicy``.

    Every pod runs ``tfps-launch --from-env SCRIPT ARGS`` in a container named ``tensorflow``
    listening on port 2222 (``tfjob-port``), annotated ``sidecar.istio.io/inject: "false"``.
    Restart policy ``ExitCode`` recreates pods killed by a signal and fails the job on the
    script's own error; each role asks for CPU and memory (`tfps.launch.resources`); workers
    with ``gpus_per_worker`` get ``nvidia.com/gpu`` limits.

    Args:
      name: the TFJob's name (a DNS-1035 label; the controller derives Service names from it).
      image: container image with tfps, TensorFlow, tf-keras and the script.
      script: path of the training script inside the image.
      script_args: its arguments.
      num_ps: parameter-server replicas (>= 1).
      num_workers: worker replicas (>= 1).
      evaluator: add one ``Evaluator`` replica (runs the script with task type evaluator).
      gpus_per_worker: GPUs per worker pod (0: none).
      namespace: metadata.namespace of both objects; None leaves it to ``kubectl -n``.
      backoff_limit: restarts allowed over the job before it is marked Failed.
      restart_policy: one of `RESTART_POLICIES` (default ``ExitCode``).
      istio_sidecar: let Istio inject its side-car (default: opt out, kubeflow/kubeflow#3935).
      resources: per-role `Resources` overriding the defaults (``{"ps": Resources(...)}``).
      model_bytes: bytes of all variables and optimizer slots, to size ps and evaluator
        memory; None when unknown.
      max_restarts: the launcher's ``--max-restarts`` in every pod; None: its default.

    Returns:
      ``[tfjob, network_policy]`` as plain dicts (``yaml.safe_dump_all`` them).

    Raises:
      ConfigError: naming the argument and the value received.
    """
    validate.count("num_ps", num_ps, 1)
    validate.count("num_workers", num_workers, 1)
    validate.count("gpus_per_worker", gpus_per_worker, 0)
    validate.count("backoff_limit", backoff_limit, 0)
    validate.choice("restart_policy", restart_policy, RESTART_POLICIES)
    validate.boolean("istio_sidecar", istio_sidecar)
    validate.integer("model_bytes", model_bytes, low=1, allow_none=True)
    validate.integer("max_restarts", max_restarts, low=0, high=10_000, allow_none=True)
    sizes = _resources.defaults(num_ps=num_ps, num_workers=num_workers,
                                model_bytes=model_bytes)
    for role, res in (resources or {}).items():
        validate.choice("resources", role, _resources.ROLES)
        if not isinstance(res, _resources.Resources):
            raise validate.fail(f"resources[{role!r}]", res, "a tfps.launch.resources.Resources")
        sizes[role] = res
    counts = {"chief": 1, "ps": num_ps, "worker": num_workers, "evaluator": int(bool(evaluator))}
    _check_name(name, counts)
    if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
        raise ConfigError(f"Argument `image` must be a container image reference such as "
                          f"'registry.example.com/team/trainer:1.0'. Received: image={image!r}")
    if not isinstance(script, str) or not script:
        raise ConfigError(f"Argument `script` must be the path of the training script in the "
                          f"image. Received: script={script!r}")
    if namespace is not None and (not isinstance(namespace, str)
                                  or not _DNS1123.fullmatch(namespace)
                                  or len(namespace) > _MAX_DNS_LABEL):
        raise ConfigError(f"Argument `namespace` must be a DNS-1123 label (lower-case letters, "
                          f"digits and '-'). Received: namespace={namespace!r}")
    # --gpus-per-worker makes the launcher hide GPUs from chief, ps and evaluator: CUDA images
    # set NVIDIA_VISIBLE_DEVICES=all, so a pod without a GPU limit can still see the node's.
    gpu_flag = ["--gpus-per-worker", str(gpus_per_worker)] if gpus_per_worker else []
    restarts_flag = ["--max-restarts", str(max_restarts)] if max_restarts is not None else []
    command = ["tfps-launch", "--from-env", *gpu_flag, *restarts_flag, script,
               *map(str, script_args)]
    pod_metadata: dict[str, Any] = {"labels": {JOB_NAME_LABEL: name}}
    if not istio_sidecar:
        pod_metadata["annotations"] = {_ISTIO_INJECT: "false"}
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    replica_specs = {}
    for role, count in counts.items():
        if not count:
            continue
        gpus = gpus_per_worker if role == "worker" else 0
        replica_specs[_REPLICA_TYPES[role]] = {
            "replicas": count,
            "restartPolicy": restart_policy,
            "template": {
                "metadata": pod_metadata,
                "spec": {"containers": [_container(image, list(command), gpus, sizes[role])]},
            },
        }
    tfjob = {
        "apiVersion": TFJOB_API_VERSION,
        "kind": "TFJob",
        "metadata": dict(metadata, labels={"app.kubernetes.io/managed-by": "tfps"}),
        "spec": {
            "runPolicy": {"cleanPodPolicy": _CLEAN_POD_POLICY, "backoffLimit": backoff_limit},
            "tfReplicaSpecs": replica_specs,
        },
    }
    return [tfjob, network_policy(name=name, namespace=namespace)]


def network_policy(*, name: str, namespace: str | None = None,
                   port: int = TFJOB_PORT) -> dict:
    """A NetworkPolicy: the job's pods accept TCP `port` only from the job's own pods.

    TF's gRPC servers are unauthenticated and run any op they are sent; this keeps every other
    pod of the cluster (and anything outside it) away from them. It needs a network plugin
    that enforces NetworkPolicy (Calico, Cilium, ...); egress is left open.
    """
    selector = {"matchLabels": {JOB_NAME_LABEL: name}}
    metadata: dict[str, Any] = {"name": f"{name}-tfps-isolation"}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": selector,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": selector}],
                         "ports": [{"protocol": "TCP", "port": port}]}],
        },
    }



# ------------------------------------------------------------------------------ YAML
# A plain (unquoted) scalar that go-yaml's YAML 1.1 resolver reads as a string whatever its
# letters: an optional "-"/"--" (options), then a letter, "_" or "/", then name characters.
# Anything else (a leading digit, ".", "+", a lone "-", spaces, ...) is quoted.
_PLAIN_SAFE = re.compile(r"(?:--?)?[A-Za-z_/][A-Za-z0-9_./:@=+-]*")
# Words YAML 1.1 reads as booleans or null (go-yaml resolve.go), and the forms of infinity
# and NaN that Go's strconv.ParseFloat takes after a sign (go-yaml tries it on "+"/"-").
_YAML11_WORDS = re.compile(
    r"y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF"
    r"|null|Null|NULL|-?(?i:inf|infinity|nan)")


def needs_quotes(text: str) -> bool:
    """Whether Kubernetes' YAML reader could read `text`, written plain, as a non-string.

    >>> [needs_quotes(t) for t in ("train.py", "--lr", "1e-3", "y", "08", "0o17", "-inf")]
    [False, False, True, True, True, True, True]
    """
    return not _PLAIN_SAFE.fullmatch(text) or bool(_YAML11_WORDS.fullmatch(text))


def _no_alias_dumper():
    import yaml

    class Dumper(yaml.SafeDumper):
        # Repeated lists would otherwise print as &id001 / *id001 anchors: valid YAML, but
        # unreadable in a manifest meant to be reviewed and edited.
        def ignore_aliases(self, data):
            return True

    def represent_str(dumper, text):
        # PyYAML quotes only what its own resolver would type, which misses "1e-3", "y",
        # "08", "0o17", "5e4": go-yaml types those (module docstring).
        style = '"' if needs_quotes(text) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)

    Dumper.add_representer(str, represent_str)
    return Dumper


def to_yaml(docs: Sequence[dict]) -> str:
    """The documents as one YAML stream, with a header saying how to apply them."""
    import yaml

    header = ("# Generated by tfps-launch --emit tfjob. Apply with: kubectl apply -f FILE\n"
              "# The NetworkPolicy admits traffic to the job's pods only from its own pods\n"
              "# (TF's gRPC servers are unauthenticated); it needs a CNI that enforces it.\n")
    return header + yaml.dump_all(docs, Dumper=_no_alias_dumper(), sort_keys=False,
                                  default_flow_style=False)
