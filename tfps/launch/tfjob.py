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
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

from tfps import validate
from tfps._env import TASK_ENV
from tfps.errors import ConfigError

__all__ = ["TFJOB_PORT", "default_name", "network_policy", "tfjob_manifest", "to_yaml"]

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
# OnFailure: kubelet restarts a failed container in the same pod, under the same DNS name and
# port. A restarted worker rejoins and the coordinator reschedules its closures on it; a
# restarted ps comes back empty, the chief fails on it, restarts, and restores its latest
# checkpoint. (Never, the TFJob default, would leave a dead worker dead.)
_RESTART_POLICY = "OnFailure"
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
def _container(image: str, command: list[str], gpus: int) -> dict:
    container: dict[str, Any] = {
        "name": TFJOB_CONTAINER,
        "image": image,
        "command": command,
        "ports": [{"name": TFJOB_PORT_NAME, "containerPort": TFJOB_PORT, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in TASK_ENV.items()],
    }
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    return container


def tfjob_manifest(*, name: str, image: str, script: str, script_args: Sequence[str] = (),
                   num_ps: int = _DEFAULT_NUM_PS, num_workers: int = _DEFAULT_NUM_WORKERS,
                   evaluator: bool = False, gpus_per_worker: int = 0,
                   namespace: str | None = None,
                   backoff_limit: int = _DEFAULT_BACKOFF_LIMIT) -> list[dict]:
    """A Kubeflow ``TFJob`` (chief, ps, workers, optional evaluator) and its ``NetworkPolicy``.

    Every pod runs ``tfps-launch --from-env SCRIPT ARGS`` in a container named ``tensorflow``
    listening on port 2222 (``tfjob-port``). Restart policy ``OnFailure`` brings failed tasks
    back; workers with ``gpus_per_worker`` get ``nvidia.com/gpu`` limits.

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

    Returns:
      ``[tfjob, network_policy]`` as plain dicts (``yaml.safe_dump_all`` them).

    Raises:
      ConfigError: naming the argument and the value received.
    """
    validate.count("num_ps", num_ps, 1)
    validate.count("num_workers", num_workers, 1)
    validate.count("gpus_per_worker", gpus_per_worker, 0)
    validate.count("backoff_limit", backoff_limit, 0)
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
    command = ["tfps-launch", "--from-env", *gpu_flag, script, *map(str, script_args)]
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
            "restartPolicy": _RESTART_POLICY,
            "template": {
                "metadata": {"labels": {JOB_NAME_LABEL: name}},
                "spec": {"containers": [_container(image, list(command), gpus)]},
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



def _no_alias_dumper():
    import yaml

    class Dumper(yaml.SafeDumper):
        # Repeated lists would otherwise print as &id001 / *id001 anchors: valid YAML, but
        # unreadable in a manifest meant to be reviewed and edited.
        def ignore_aliases(self, data):
            return True

    return Dumper


def to_yaml(docs: Sequence[dict]) -> str:
    """The documents as one YAML stream, with a header saying how to apply them."""
    import yaml

    header = ("# Generated by tfps-launch --emit tfjob. Apply with: kubectl apply -f FILE\n"
              "# The NetworkPolicy admits traffic to the job's pods only from its own pods\n"
              "# (TF's gRPC servers are unauthenticated); it needs a CNI that enforces it.\n")
    return header + yaml.dump_all(docs, Dumper=_no_alias_dumper(), sort_keys=False,
                                  default_flow_style=False)
