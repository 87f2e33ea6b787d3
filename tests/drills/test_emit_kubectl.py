"""`tfps-launch --emit tfjob|volcano|trainjob`, read by kubectl: what Kubernetes would receive is
what tfps meant.

Kubernetes reads YAML with go-yaml (YAML 1.1 rules): an unquoted ``1e-3``, ``08`` or ``y`` in a
container's ``command`` becomes a number or a boolean and the API server rejects the object.
kubectl parses a manifest locally with no cluster (``kubectl label --local -f FILE k=v -o
json``); the objects it prints must equal the ones tfps built, and validate against the CRDs of
the released engines (TFJob v1.9.0, Volcano v1.15.1, Kubeflow Trainer v2.3.0) with their CEL
rules, the NetworkPolicy structure, and the engines' admission rules (tests/k8s_check.py).
Skips where kubectl is missing, fails instead under .ci/run (which installs Debian's
``kubernetes-client``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from k8s_check import admission_errors, kubectl, kubectl_read, schema_errors

LAUNCHER = os.path.join(os.path.dirname(sys.executable), "tfps-launch")
ARGS = ["--lr", "1e-3", "--flag", "y", "--month", "08", "--octal", "0o17", "--n", "5e4",
        "--on", "on", "--null", "~", "--date", "2001-12-14", "--empty", ""]
KINDS = {"tfjob": ["TFJob", "NetworkPolicy"], "volcano": ["Job", "NetworkPolicy"],
         "trainjob": ["TrainingRuntime", "TrainJob", "NetworkPolicy"]}
EVERY_FLAG = ["--evaluator", "--gpus-per-worker", "1", "--namespace", "ml", "--model-bytes",
              "6GB", "--istio-sidecar", "--cpu", "ps=500m", "--memory", "ps=12Gi",
              "--backoff-limit", "3", "--max-restarts", "5"]
ENGINE_FLAGS = {"tfjob": ["--restart-policy", "OnFailure"], "volcano": ["--queue", "research"],
                "trainjob": []}


@pytest.fixture(autouse=True)
def needs_kubectl():
    if kubectl() is None:
        reason = "kubectl is not installed (Debian: apt-get install kubernetes-client)"
        if os.environ.get("TFPS_REQUIRE_ENGINES") == "1":  # .ci/run installs it
            pytest.fail(f"TFPS_REQUIRE_ENGINES=1: {reason}")
        pytest.skip(reason)


def commands(obj: dict) -> list[list[str]]:
    """Every container command of a TFJob, Volcano Job or TrainingRuntime."""
    if obj["kind"] == "TFJob":
        templates = [r["template"] for r in obj["spec"]["tfReplicaSpecs"].values()]
    elif obj["kind"] == "Job":
        templates = [t["template"] for t in obj["spec"]["tasks"]]
    elif obj["kind"] == "TrainingRuntime":
        templates = [r["template"]["spec"]["template"]
                     for r in obj["spec"]["template"]["spec"]["replicatedJobs"]]
    else:
        return []
    return [c["command"] for t in templates for c in t["spec"]["containers"]]


@pytest.mark.parametrize("engine", sorted(KINDS))
@pytest.mark.parametrize("every_flag", [False, True], ids=["defaults", "every-flag"])
def test_kubectl_reads_back_every_string_and_the_objects_validate(tmp_path, engine, every_flag):
    extra = EVERY_FLAG + ENGINE_FLAGS[engine] if every_flag else []
    out = subprocess.run([LAUNCHER, "--emit", engine, "--image", "registry.example.com/t:1",
                          *extra, "train.py", *ARGS], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    path = tmp_path / f"{engine}.yaml"
    path.write_text(out.stdout)
    built = json.loads(json.dumps(list(yaml.safe_load_all(out.stdout))))
    read = kubectl_read(str(path))
    assert [o["kind"] for o in read] == KINDS[engine]
    found = [c for obj in read for c in commands(obj)]
    assert len(found) == (4 if every_flag else 3)  # one container per role
    for command in found:
        assert command[-len(ARGS) - 1:] == ["train.py", *ARGS]
    assert read == built  # nothing else changed type either (cpu "2", env "1", ...)
    for obj in read:
        assert schema_errors(obj) == [], obj["kind"]
    assert admission_errors(read) == []


def test_kubectl_types_unquoted_values_so_the_check_is_real(tmp_path):
    """The premise: written plain, these values come back as numbers and booleans."""
    path = tmp_path / "plain.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
                    "args: [1e-3, y, 08, 0o17, 5e4]\n")
    [obj] = kubectl_read(str(path))
    assert obj["args"] == [0.001, True, 8, 15, 50000]
