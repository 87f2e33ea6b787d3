"""`tfps-launch --emit tfjob`, read by kubectl: what Kubernetes would receive is what tfps meant.

Kubernetes reads YAML with go-yaml (YAML 1.1 rules): an unquoted ``1e-3``, ``08`` or ``y`` in a
container's ``command`` becomes a number or a boolean and the API server rejects the TFJob.
kubectl parses a manifest locally with no cluster (``kubectl label --local -f FILE k=v -o
json``); the objects it prints must equal the ones tfps built, and validate against the TFJob
CRD and the NetworkPolicy structure (tests/k8s_check.py). Skips where kubectl is missing, fails
instead under .ci/run (which installs Debian's ``kubernetes-client``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from k8s_check import kubectl, kubectl_read, schema_errors

LAUNCHER = os.path.join(os.path.dirname(sys.executable), "tfps-launch")
ARGS = ["--lr", "1e-3", "--flag", "y", "--month", "08", "--octal", "0o17", "--n", "5e4",
        "--on", "on", "--null", "~", "--date", "2001-12-14", "--empty", ""]



@pytest.fixture(autouse=True)
def needs_kubectl():
    if kubectl() is None:
        reason = "kubectl is not installed (Debian: apt-get install kubernetes-client)"
        if os.environ.get("TFPS_REQUIRE_ENGINES") == "1":  # .ci/run installs it
            pytest.fail(f"TFPS_REQUIRE_ENGINES=1: {reason}")
        pytest.skip(reason)


@pytest.mark.parametrize("extra", [[], ["--evaluator", "--gpus-per-worker", "1",
                                        "--namespace", "ml", "--model-bytes", "6GB",
                                        "--istio-sidecar", "--restart-policy", "OnFailure",
                                        "--cpu", "ps=500m", "--memory", "ps=12Gi"]],
                         ids=["defaults", "every-flag"])
def test_kubectl_reads_back_every_string_and_the_objects_validate(tmp_path, extra):
    out = subprocess.run([LAUNCHER, "--emit", "tfjob", "--image", "registry.example.com/t:1",
                          *extra, "train.py", *ARGS], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    path = tmp_path / "tfjob.yaml"
    path.write_text(out.stdout)
    built = json.loads(json.dumps(list(yaml.safe_load_all(out.stdout))))
    read = kubectl_read(str(path))
    assert [o["kind"] for o in read] == ["TFJob", "NetworkPolicy"]
    for spec in read[0]["spec"]["tfReplicaSpecs"].values():
        command = spec["template"]["spec"]["containers"][0]["command"]
        assert command[-len(ARGS) - 1:] == ["train.py", *ARGS]
    assert read == built  # nothing else changed type either (cpu "2", env "1", ...)
    for obj in read:
        assert schema_errors(obj) == [], obj["kind"]


def test_kubectl_types_unquoted_values_so_the_check_is_real(tmp_path):
    """The premise: written plain, these values come back as numbers and booleans."""
    path = tmp_path / "plain.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
                    "args: [1e-3, y, 08, 0o17, 5e4]\n")
    [obj] = kubectl_read(str(path))
    assert obj["args"] == [0.001, True, 8, 15, 50000]
