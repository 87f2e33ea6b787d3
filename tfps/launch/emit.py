"""Manifests for external engines: a Kubeflow TFJob (+ NetworkPolicy), a Slurm sbatch script.

``tfps-launch --emit tfjob --spec F --image IMG train.py`` prints a ``kubeflow.org/v1`` TFJob
and a NetworkPolicy; ``tfps-launch --emit slurm --num-ps 2 --num-workers 4 train.py`` prints an
sbatch script. Every task runs ``tfps-launch --from-env SCRIPT ARGS``, which reads the
``TF_CONFIG`` the TFJob controller writes (or Slurm's environment) and runs the task server
(ps, worker) or the script (chief, evaluator).

The builders are pure (`tfjob_manifest`, `network_policy`, `sbatch_script`); `run` prints.

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
import shlex
from typing import Any, Sequence

from tfps._env import TASK_ENV
from tfps.cluster import _SLURM_PORT_BASE, Cluster
from tfps.errors import ConfigError

__all__ = ["TFJOB_PORT", "network_policy", "sbatch_script", "slurm_evaluator_tf_config",
           "tfjob_manifest", "run", "add_arguments"]

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
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_DNS_LABEL = 63
# Defaults of the counts form (no --spec): the launcher's own defaults if it set none.
_DEFAULT_NUM_PS = 2
_DEFAULT_NUM_WORKERS = 2
# Slurm: how long srun lets the other tasks run after the first one (normally the chief, done
# training) exits. ps and worker tasks never exit on their own; this is what ends them.
_SLURM_STOP_GRACE_S = 10
# Slurm: seconds before a dead worker task is started again (it then rejoins the cluster).
_SLURM_WORKER_RESTART_DELAY_S = 5


# ------------------------------------------------------------------------------ validation
def _check_count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"Argument `{name}` must be an integer >= {low}. "
                          f"Received: {name}={value!r}")
    return value


def _check_name(name: Any, counts: dict[str, int]) -> str:
    if not isinstance(name, str) or not _DNS1035.match(name):
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
    _check_count("num_ps", num_ps, 1)
    _check_count("num_workers", num_workers, 1)
    _check_count("gpus_per_worker", gpus_per_worker, 0)
    _check_count("backoff_limit", backoff_limit, 0)
    counts = {"chief": 1, "ps": num_ps, "worker": num_workers, "evaluator": int(bool(evaluator))}
    _check_name(name, counts)
    if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
        raise ConfigError(f"Argument `image` must be a container image reference such as "
                          f"'registry.example.com/team/trainer:1.0'. Received: image={image!r}")
    if not isinstance(script, str) or not script:
        raise ConfigError(f"Argument `script` must be the path of the training script in the "
                          f"image. Received: script={script!r}")
    if namespace is not None and (not isinstance(namespace, str)
                                  or not _DNS1123.match(namespace)
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


# ------------------------------------------------------------------------------ Slurm
def sbatch_script(*, script: str, script_args: Sequence[str] = (),
                  num_ps: int = _DEFAULT_NUM_PS, num_workers: int = _DEFAULT_NUM_WORKERS,
                  evaluator: bool = False, gpus_per_worker: int = 0,
                  name: str = "tfps-job", nodes: int | None = None,
                  port_base: int = _SLURM_PORT_BASE, time: str | None = None,
                  partition: str | None = None,
                  stop_grace_s: int = _SLURM_STOP_GRACE_S) -> str:
    """An sbatch script that runs chief, ps and workers as one ``srun`` step.

    tfps reads the step from Slurm's environment (`tfps.Cluster.from_env`): rank 0 is the
    chief, ranks ``1..num_ps`` the ps tasks, the rest workers (SlurmClusterResolver's order),
    each on port ``port_base + local index`` of its node. The script exports ``TFPS_NUM_PS``
    and ``TFPS_PORT_BASE`` so every task computes the same split. Worker tasks that die are
    restarted in place (they rejoin); when the chief exits, srun stops the rest after
    `stop_grace_s` and the job's exit status is the chief's.

    Args:
      script, script_args: the training script and its arguments, as paths on the nodes.
      num_ps, num_workers: task counts (the step has ``1 + num_ps + num_workers`` tasks).
      evaluator: also run an evaluator, as a second one-task step beside the first.
      gpus_per_worker: GPUs per task (Slurm steps are homogeneous; chief and ps hide theirs).
      name: the Slurm job name.
      nodes: nodes to spread the tasks over; default one node per task.
      port_base: first port on each node.
      time, partition: ``#SBATCH --time`` / ``--partition`` when given.
      stop_grace_s: seconds srun waits after the chief exits before ending the other tasks.

    Raises:
      ConfigError: naming the argument and the value received.
    """
    _check_count("num_ps", num_ps, 1)
    _check_count("num_workers", num_workers, 1)
    _check_count("gpus_per_worker", gpus_per_worker, 0)
    _check_count("stop_grace_s", stop_grace_s, 1)
    num_tasks = 1 + num_ps + num_workers
    nodes = num_tasks if nodes is None else nodes
    _check_count("nodes", nodes, 1)
    if nodes > num_tasks:
        raise ConfigError(f"Argument `nodes` must be at most the number of tasks "
                          f"({num_tasks}). Received: nodes={nodes}")
    if isinstance(port_base, bool) or not isinstance(port_base, int) or not (
            1024 <= port_base <= 65535 - num_tasks):
        raise ConfigError(f"Argument `port_base` must be an integer in 1024-{65535 - num_tasks}. "
                          f"Received: port_base={port_base!r}")
    if not isinstance(script, str) or not script:
        raise ConfigError(f"Argument `script` must be the path of the training script. "
                          f"Received: script={script!r}")
    for arg, value in (("name", name), ("time", time), ("partition", partition)):
        if value is not None and (not isinstance(value, str) or not value
                                  or any(c.isspace() or c in "'\"\\$`" for c in value)):
            raise ConfigError(f"Argument `{arg}` must be a non-empty word without spaces or "
                              f"quotes. Received: {arg}={value!r}")
    run = " ".join(shlex.quote(a) for a in (script, *map(str, script_args)))
    lines = [
        "#!/bin/bash",
        f"# Generated by tfps-launch --emit slurm: 1 chief + {num_ps} ps + {num_workers} "
        f"worker{'s' if num_workers != 1 else ''}"
        f"{' + 1 evaluator' if evaluator else ''}. Submit with: sbatch THIS_FILE",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={nodes}",
        f"#SBATCH --ntasks={num_tasks}",
    ]
    if nodes == num_tasks:
        lines.append("#SBATCH --ntasks-per-node=1")
    if gpus_per_worker:
        lines.append(f"#SBATCH --gpus-per-task={gpus_per_worker}")
    if time:
        lines.append(f"#SBATCH --time={time}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines.append(f"#SBATCH --output={name}-%j.out")
    hide_gpus = 'export CUDA_VISIBLE_DEVICES=""; ' if gpus_per_worker else ""
    lines += [
        "",
        "# Make tfps-launch available on every node here (e.g. source /path/to/venv/bin/activate).",
        "",
        "# tfps.Cluster.from_env reads this step: rank 0 is the chief, ranks 1..TFPS_NUM_PS the ps",
        "# tasks, the rest workers; each listens on TFPS_PORT_BASE + its index on its node.",
        f"export TFPS_NUM_PS={num_ps}",
        f"export TFPS_PORT_BASE={port_base}",
        *(f"export {k}={v}" for k, v in TASK_ENV.items()),
        "unset TF_CONFIG  # one from the submitting shell would win over Slurm's layout",
        "# Rank 0 runs on this (the first) node and leaves its exit status here.",
        'export TFPS_CHIEF_STATUS="${TMPDIR:-/tmp}/tfps-${SLURM_JOB_ID:-$$}.chief-status"',
        'rm -f "$TFPS_CHIEF_STATUS"',
        "",
    ]
    if evaluator:
        lines += [
            "# The evaluator runs beside the training step, as a one-task step of its own. Its",
            "# TF_CONFIG lists the training cluster (as Kubeflow's does); tfps-launch strips the",
            "# evaluator from what chief, ps and workers see (a coordinator that lists it hangs).",
            "evaluator_tf_config=$(python -c 'from tfps.launch.emit import "
            "slurm_evaluator_tf_config as c; print(c())') || exit 1",
            'srun --overlap --nodes=1 --ntasks=1 env TF_CONFIG="$evaluator_tf_config" '
            f"tfps-launch --from-env {run} &",
            "evaluator_pid=$!",
            "",
        ]
    lines += [
        "# --distribution=block: ranks fill the nodes in order, as tfps maps them.",
        "# --wait: ps and workers never exit on their own; srun ends them once the chief is done.",
        "# Workers that die are restarted in place and rejoin; the coordinator reschedules",
        "# their work.",
        f"srun --distribution=block --kill-on-bad-exit=0 --wait={stop_grace_s} bash -c '",
        '  if [ "$SLURM_PROCID" -eq 0 ]; then',
        f'    {hide_gpus}tfps-launch --from-env "$@"; status=$?',
        '    echo "$status" > "$TFPS_CHIEF_STATUS"; exit "$status"',
        '  elif [ "$SLURM_PROCID" -le "$TFPS_NUM_PS" ]; then',
        f'    {hide_gpus}exec tfps-launch --from-env "$@"',
        "  fi",
        '  until tfps-launch --from-env "$@"; do',
        f'    echo "tfps: worker rank $SLURM_PROCID exited; restarting" >&2; '
        f'sleep {_SLURM_WORKER_RESTART_DELAY_S}',
        "  done",
        f"' tfps-task {run}",
        "step_status=$?",
        "",
    ]
    if evaluator:
        lines += [
            '[ -s "$TFPS_CHIEF_STATUS" ] && [ "$(cat "$TFPS_CHIEF_STATUS")" -eq 0 ] || '
            'kill "$evaluator_pid" 2>/dev/null',
            'wait "$evaluator_pid"',
            "",
        ]
    lines += [
        "# The job succeeds when the chief does (srun's own status counts the stopped tasks).",
        'if [ -s "$TFPS_CHIEF_STATUS" ]; then',
        '  status=$(cat "$TFPS_CHIEF_STATUS"); rm -f "$TFPS_CHIEF_STATUS"; exit "$status"',
        "fi",
        'echo "tfps: the chief left no exit status (srun exited with $step_status)" >&2',
        'exit "$(( step_status ? step_status : 1 ))"',
    ]
    return "\n".join(lines) + "\n"


def slurm_evaluator_tf_config(environ=None) -> str:
    """The evaluator step's ``TF_CONFIG``: the job's training step, as tfps reads it, plus
    the evaluator (on this host, on a port no training task uses; it runs no server).

    Runs in the batch script, where Slurm describes the allocation (``SLURM_JOB_NODELIST``,
    ``SLURM_TASKS_PER_NODE``, ``SLURM_NTASKS``) that the training step fills.
    """
    import json
    import socket

    from tfps.cluster import _read_slurm

    env = os.environ if environ is None else environ
    step = {"SLURM_PROCID": "0"}
    for step_var, job_var in (("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"),
                              ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST"),
                              ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")):
        if job_var in env:
            step[step_var] = env[job_var]
    for var in ("TFPS_NUM_PS", "TFPS_PORT_BASE"):
        if var in env:
            step[var] = env[var]
    cluster, _ = _read_slurm(step)
    spec = cluster.as_dict(training_only=True)
    port = int(env.get("TFPS_PORT_BASE", _SLURM_PORT_BASE)) + sum(len(v) for v in spec.values())
    spec["evaluator"] = [f"{socket.gethostname()}:{port}"]
    return json.dumps({"cluster": spec, "task": {"type": "evaluator", "index": 0}})


# ------------------------------------------------------------------------------ CLI
def add_arguments(parser) -> None:
    group = parser.add_argument_group(
        "emit for external engines",
        "print a Kubeflow TFJob (+ NetworkPolicy) or a Slurm sbatch script instead of "
        "launching; task counts come from --spec or --num-ps/--num-workers")
    group.add_argument("--emit", choices=("tfjob", "slurm"), default=None,
                       help="print a manifest for an external engine instead of launching")
    group.add_argument("--image", help="tfjob: container image with tfps and the script")
    group.add_argument("--name", help="job name (default: tfps-<script name>)")
    group.add_argument("--namespace", help="tfjob: Kubernetes namespace (default: kubectl's)")
    group.add_argument("--backoff-limit", type=int, default=_DEFAULT_BACKOFF_LIMIT,
                       help="tfjob: restarts allowed before the job fails "
                            f"(default {_DEFAULT_BACKOFF_LIMIT})")
    group.add_argument("--nodes", type=int, default=None,
                       help="slurm: nodes to spread the tasks over (default: one per task)")
    group.add_argument("--port-base", type=int, default=_SLURM_PORT_BASE,
                       help=f"slurm: first port on each node (default {_SLURM_PORT_BASE})")
    group.add_argument("--time", dest="slurm_time", help="slurm: #SBATCH --time")
    group.add_argument("--partition", help="slurm: #SBATCH --partition")


def _counts(args) -> tuple[int, int, bool]:
    spec = getattr(args, "spec", None)
    evaluator = bool(getattr(args, "evaluator", False))
    if spec:
        cluster = Cluster.from_file(spec)
        if not cluster.chief:
            from tfps.errors import ClusterSpecError
            raise ClusterSpecError("chief: --emit needs a chief task (it runs the "
                                   "coordinator), got 0", spec)
        return cluster.num_ps, cluster.num_workers, evaluator or bool(cluster.evaluator)
    num_ps = getattr(args, "num_ps", None)
    num_workers = getattr(args, "num_workers", None)
    return (_DEFAULT_NUM_PS if num_ps is None else num_ps,
            _DEFAULT_NUM_WORKERS if num_workers is None else num_workers, evaluator)


def _no_alias_dumper():
    import yaml

    class Dumper(yaml.SafeDumper):
        # Repeated lists would otherwise print as &id001 / *id001 anchors: valid YAML, but
        # unreadable in a manifest meant to be reviewed and edited.
        def ignore_aliases(self, data):
            return True

    return Dumper


def render(args) -> str:
    """The text `run` prints for parsed arguments; raises `TfpsError` for bad input."""
    import yaml

    script = getattr(args, "script", None)
    if not script:
        raise ConfigError(f"--emit {args.emit} needs the SCRIPT each task runs")
    script_args = list(getattr(args, "script_args", None) or ())
    num_ps, num_workers, evaluator = _counts(args)
    name = getattr(args, "name", None) or default_name(script)
    gpus = getattr(args, "gpus_per_worker", None) or 0
    if args.emit == "tfjob":
        if not getattr(args, "image", None):
            raise ConfigError("--emit tfjob needs --image IMAGE (a container image with tfps, "
                              "TensorFlow, tf-keras and the script)")
        docs = tfjob_manifest(name=name, image=args.image, script=script,
                              script_args=script_args, num_ps=num_ps,
                              num_workers=num_workers, evaluator=evaluator,
                              gpus_per_worker=gpus, namespace=getattr(args, "namespace", None),
                              backoff_limit=getattr(args, "backoff_limit",
                                                    _DEFAULT_BACKOFF_LIMIT))
        header = ("# Generated by tfps-launch --emit tfjob. Apply with: kubectl apply -f FILE\n"
                  "# The NetworkPolicy admits traffic to the job's pods only from its own pods\n"
                  "# (TF's gRPC servers are unauthenticated); it needs a CNI that enforces it.\n")
        return header + yaml.dump_all(docs, Dumper=_no_alias_dumper(), sort_keys=False,
                                      default_flow_style=False)
    if args.emit == "slurm":
        return sbatch_script(script=script, script_args=script_args, num_ps=num_ps,
                             num_workers=num_workers, evaluator=evaluator,
                             gpus_per_worker=gpus, name=name,
                             nodes=getattr(args, "nodes", None),
                             port_base=getattr(args, "port_base", _SLURM_PORT_BASE),
                             time=getattr(args, "slurm_time", None),
                             partition=getattr(args, "partition", None))
    raise ConfigError(f"--emit: unknown engine {args.emit!r} (expected tfjob or slurm)")


def run(args) -> int:
    """Prints the manifest for ``args.emit``; returns 0. Bad input raises `TfpsError`."""
    print(render(args), end="")
    return 0
