"""TF's tf.data service beside an emitted job (``--emit ... --data-workers N``). Pure Python.

`tfps.data`'s service mode reads its input through a dispatcher and data workers
(``python -m tfps.data.service``), which are no tasks of the TF cluster: no engine's
``TF_CONFIG`` lists them. So every engine runs them beside its job:

* **Kubernetes** (TFJob, Volcano, TrainJob): two StatefulSets, ``<name>-dispatcher`` (1 pod)
  and ``<name>-data-worker`` (N pods), behind one headless Service ``<name>-data``: each pod
  has a stable DNS name (``<name>-data-worker-0.<name>-data``), so a data worker that is
  restarted comes back at the same address, which the tf.data service needs (reads waiting
  on a lost data worker end only when it is back: docs/data.md). Its own NetworkPolicy admits
  the port from the job's pods and the data pods. The chief (and evaluator) get
  ``TFPS_DATA_SERVICE=grpc://<name>-dispatcher-0.<name>-data:2222``.
* **Slurm**: steps of their own beside the training step (`slurm_lines`).

>>> objects = kubernetes_objects(name="tfps-t", namespace=None, image="img:1", workers=2,
...                              job_label="app.kubernetes.io/name", pod_metadata={},
...                              env=[])
>>> [o["kind"] for o in objects]
['Service', 'StatefulSet', 'StatefulSet', 'NetworkPolicy']
>>> address("tfps-t")
'grpc://tfps-t-dispatcher-0.tfps-t-data:2222'
"""

from __future__ import annotations

__all__ = ["DATA_LABEL", "PORT", "address", "kubernetes_objects", "slurm_lines"]

# Every data pod listens here (as every task pod does on kubejob.CONTAINER_PORT).
PORT = 2222
# The label of the data pods (value: the job's name); the engines' job labels are left to
# their controllers' pods.
DATA_LABEL = "tfps.data/job"
_MANAGED_BY = {"app.kubernetes.io/managed-by": "tfps"}
# Slurm: the data service's ports, counted down from the job's port base (its tasks count up).
_SLURM_OFFSET = 100


def address(name: str) -> str:
    """The dispatcher's address, as the chief's ``TFPS_DATA_SERVICE`` names it."""
    return f"grpc://{name}-dispatcher-0.{name}-data:{PORT}"


def _metadata(name: str, namespace: str | None) -> dict:
    out = {"name": name, "labels": dict(_MANAGED_BY)}
    if namespace:
        out["namespace"] = namespace
    return out


def _stateful_set(job: str, namespace, role: str, replicas: int, image: str, args: list,
                  pod_metadata: dict, env: list) -> dict:
    name = f"{job}-{role.replace('_', '-')}"
    labels = {DATA_LABEL: job, "tfps.data/role": role}
    meta = {**pod_metadata, "labels": {**pod_metadata.get("labels", {}), **labels}}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(name, namespace),
        "spec": {
            "serviceName": f"{job}-data",
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {"metadata": meta, "spec": {"containers": [{
                "name": "data",
                "image": image,
                "command": ["python", "-m", "tfps.data.service", role, *args],
                "ports": [{"name": "tfps-data", "containerPort": PORT, "protocol": "TCP"}],
                # $(POD_NAME) in the arguments is expanded by the kubelet from this variable.
                "env": [{"name": "POD_NAME",
                         "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}, *env],
            }]}},
        },
    }


def kubernetes_objects(*, name: str, namespace: str | None, image: str, workers: int,
                       job_label: str, pod_metadata: dict, env: list) -> list[dict]:
    """The headless Service, the two StatefulSets and the NetworkPolicy of the data service."""
    service = f"{name}-data"
    own = f"$(POD_NAME).{service}:{PORT}"
    dispatcher = address(name).split("://")[1]
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(service, namespace),
         "spec": {"clusterIP": "None", "selector": {DATA_LABEL: name},
                  "ports": [{"name": "tfps-data", "port": PORT, "targetPort": PORT}],
                  # The dispatcher's name must resolve before it is ready: data workers
                  # register with it as they start.
                  "publishNotReadyAddresses": True}},
        _stateful_set(name, namespace, "dispatcher", 1, image, ["--address", own],
                      pod_metadata, env),
        _stateful_set(name, namespace, "data_worker", workers, image,
                      ["--address", own, "--dispatcher", dispatcher], pod_metadata, env),
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": _metadata(service, namespace),
         "spec": {"podSelector": {"matchLabels": {DATA_LABEL: name}},
                  "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"podSelector": {"matchLabels": {job_label: name}}},
                                        {"podSelector": {"matchLabels": {DATA_LABEL: name}}}],
                               "ports": [{"protocol": "TCP", "port": PORT}]}]}},
    ]


def slurm_lines(workers: int) -> list[str]:
    """The batch script's lines that start the data service and export its address: a
    dispatcher on this node, `workers` data workers (one step), ports below the job's."""
    return [
        "# TF's tf.data service for tfps.data's service mode: a dispatcher on this node and",
        f"# {workers} data worker(s), steps of their own beside the training step.",
        f"export data_port=$(( TFPS_PORT_BASE - {_SLURM_OFFSET} ))",
        "export data_host=$(hostname)",
        'export TFPS_DATA_SERVICE="grpc://$data_host:$data_port"',
        'srun --overlap --nodes=1 --ntasks=1 -w "$data_host" python -m tfps.data.service '
        'dispatcher --address "$data_host:$data_port" &',
        "data_pids=$!",
        f"srun --overlap --ntasks={workers} sh -c 'exec python -m tfps.data.service data_worker "
        '--address "$(hostname):$(( data_port + 1 + SLURM_PROCID ))" '
        "--dispatcher \"$data_host:$data_port\"' &",
        'data_pids="$data_pids $!"',
        "",
    ]
