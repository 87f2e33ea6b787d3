"""`tfps-launch --emit`: the Kubeflow TFJob + NetworkPolicy and the Slurm sbatch script (pure:
the shell syntax of the scripts is checked in tests/integration/test_emit_shell.py).

There is no Kubernetes API here, so the emitted YAML is the test: parsed back with
``yaml.safe_load_all`` and checked against what Kubeflow's TFJob CRD and its validating code
accept (kubeflow/training-operator: ``pkg/apis/kubeflow.org/v1/tensorflow_types.go``,
``common_types.go``, ``tensorflow_validation.go``, ``manifests/base/crds/kubeflow.org_tfjobs.yaml``).
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from tfps import errors
from tfps.launch import cli, emit, sbatch, tfjob
from tfps.launch.config import config_from_args

from conftest import REPO  # noqa: E402

# ---- What the TFJob CRD (kubeflow.org/v1) accepts -----------------------------------------
_SPEC_FIELDS = {"runPolicy", "successPolicy", "tfReplicaSpecs", "enableDynamicWorker"}
_RUN_POLICY_FIELDS = {"cleanPodPolicy", "ttlSecondsAfterFinished", "activeDeadlineSeconds",
                      "backoffLimit", "schedulingPolicy", "suspend"}
_CLEAN_POD_POLICIES = {"All", "Running", "None"}
_REPLICA_TYPES = {"Chief", "Master", "PS", "Worker", "Evaluator"}
_REPLICA_FIELDS = {"replicas", "template", "restartPolicy"}
_RESTART_POLICIES = {"Always", "OnFailure", "Never", "ExitCode"}
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?$")


def validate_tfjob(doc: dict) -> None:
    """Raises AssertionError where `doc` breaks the TFJob CRD or ValidateV1TFJob."""
    assert doc["apiVersion"] == "kubeflow.org/v1"
    assert doc["kind"] == "TFJob"
    name = doc["metadata"]["name"]
    assert _DNS1035.match(name) and len(name) <= 63, name  # ValidateV1TFJob: DNS-1035 name
    spec = doc["spec"]
    assert set(spec) <= _SPEC_FIELDS, set(spec) - _SPEC_FIELDS
    assert "tfReplicaSpecs" in spec
    run_policy = spec.get("runPolicy", {})
    assert set(run_policy) <= _RUN_POLICY_FIELDS, set(run_policy) - _RUN_POLICY_FIELDS
    if "cleanPodPolicy" in run_policy:
        assert run_policy["cleanPodPolicy"] in _CLEAN_POD_POLICIES
    if "backoffLimit" in run_policy:
        assert isinstance(run_policy["backoffLimit"], int) and run_policy["backoffLimit"] >= 0
    replicas = spec["tfReplicaSpecs"]
    assert replicas and set(replicas) <= _REPLICA_TYPES, set(replicas)
    assert sum(t in ("Chief", "Master") for t in replicas) <= 1  # "more than 1 chief/master"
    for rtype, rspec in replicas.items():
        assert set(rspec) <= _REPLICA_FIELDS, (rtype, set(rspec))
        assert isinstance(rspec.get("replicas", 1), int) and rspec.get("replicas", 1) >= 1
        assert rspec.get("restartPolicy", "Never") in _RESTART_POLICIES
        template = rspec["template"]
        assert set(template) <= {"metadata", "spec"}
        labels = template.get("metadata", {}).get("labels", {})
        assert all(isinstance(v, str) for v in labels.values())
        containers = template["spec"]["containers"]
        assert containers, f"{rtype}: containers definition expected"
        assert all(c.get("image") for c in containers), f"{rtype}: Image is undefined"
        assert any(c["name"] == "tensorflow" for c in containers), \
            f"{rtype}: There is no container named tensorflow"
        for c in containers:
            for port in c.get("ports", ()):
                assert isinstance(port["containerPort"], int)
                assert port.get("protocol", "TCP") in ("TCP", "UDP", "SCTP")
            for var in c.get("env", ()):
                assert isinstance(var["name"], str) and isinstance(var["value"], str)
            for value in c.get("resources", {}).get("limits", {}).values():
                assert isinstance(value, (int, str))


def tensorflow_container(doc: dict, rtype: str) -> dict:
    containers = doc["spec"]["tfReplicaSpecs"][rtype]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "tensorflow")


def render(argv) -> str:
    """What ``tfps-launch ARGV`` prints: parsed and validated as the launcher does."""
    return emit.render(config_from_args(cli.parse(argv)))


# ---- TFJob ---------------------------------------------------------------------------------
def test_tfjob_from_spec_parses_and_matches_the_crd(tmp_path):
    spec = tmp_path / "eight_plus_evaluator.yaml"
    with open(os.path.join(REPO, "cluster_specs", "eight_hosts.yaml")) as f:
        spec.write_text(f.read() + "evaluator: [host-eval:2222]\n")
    text = render(["--emit", "tfjob", "--spec", str(spec),
                   "--image", "registry.example.com/ml/trainer:1.0",
                   "--gpus-per-worker", "2", "--namespace", "ml",
                   "/app/train.py", "--steps", "1000"])
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs] == ["TFJob", "NetworkPolicy"]
    tfjob, policy = docs
    validate_tfjob(tfjob)
    assert tfjob["metadata"] == {"name": "tfps-train", "namespace": "ml",
                                 "labels": {"app.kubernetes.io/managed-by": "tfps"}}
    replicas = tfjob["spec"]["tfReplicaSpecs"]
    # eight_hosts.yaml: 1 chief, 2 ps, 5 workers; plus the evaluator.
    assert {t: r["replicas"] for t, r in replicas.items()} == {
        "Chief": 1, "PS": 2, "Worker": 5, "Evaluator": 1}
    assert {r["restartPolicy"] for r in replicas.values()} == {"OnFailure"}
    assert tfjob["spec"]["runPolicy"]["cleanPodPolicy"] == "Running"
    for rtype in replicas:
        c = tensorflow_container(tfjob, rtype)
        assert c["image"] == "registry.example.com/ml/trainer:1.0"
        assert c["command"] == ["tfps-launch", "--from-env", "--gpus-per-worker", "2",
                                "/app/train.py", "--steps", "1000"]
        assert c["ports"] == [{"name": "tfjob-port", "containerPort": 2222, "protocol": "TCP"}]
        assert {e["name"]: e["value"] for e in c["env"]} == {
            "GRPC_FAIL_FAST": "use_caller", "TF_USE_LEGACY_KERAS": "1"}
        limits = c.get("resources", {}).get("limits", {})
        assert limits == ({"nvidia.com/gpu": 2} if rtype == "Worker" else {}), rtype
    # No anchors/aliases: the manifest is meant to be read and edited.
    assert "&id" not in text and "*id" not in text


def test_network_policy_admits_only_the_jobs_own_pods():
    job, policy = tfjob.tfjob_manifest(name="mnist", image="img:1", script="t.py",
                                       num_ps=1, num_workers=1, namespace="team-a")
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["metadata"]["namespace"] == job["metadata"]["namespace"] == "team-a"
    spec = policy["spec"]
    selector = {"matchLabels": {"training.kubeflow.org/job-name": "mnist"}}
    assert spec["podSelector"] == selector
    assert spec["policyTypes"] == ["Ingress"]
    # One rule: from pods of this job only (podSelector without namespaceSelector means this
    # namespace), to the TF port only.
    assert spec["ingress"] == [{"from": [{"podSelector": selector}],
                                "ports": [{"protocol": "TCP", "port": 2222}]}]
    # Every pod of the job carries the label both selectors match.
    for rspec in job["spec"]["tfReplicaSpecs"].values():
        labels = rspec["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_tfjob_counts_form_without_evaluator_or_gpus():
    docs = list(yaml.safe_load_all(render(
        ["--emit", "tfjob", "--num-ps", "3", "--num-workers", "4", "--image", "img:2",
         "--name", "ctr", "train.py"])))
    validate_tfjob(docs[0])
    replicas = docs[0]["spec"]["tfReplicaSpecs"]
    assert {t: r["replicas"] for t, r in replicas.items()} == {"Chief": 1, "PS": 3, "Worker": 4}
    assert "metadata" in docs[1] and "namespace" not in docs[1]["metadata"]
    worker = tensorflow_container(docs[0], "Worker")
    assert "resources" not in worker
    assert worker["command"] == ["tfps-launch", "--from-env", "train.py"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="My_Job"), r"`name` must be a DNS-1035 label.*Received: name='My_Job'"),
    (dict(name="a" * 60), r"`name` is too long: .*'a{60}-evaluator-0'"),
    (dict(num_ps=0), r"`num_ps` must be an integer in \[1, 100000\]. Received: num_ps=0"),
    (dict(num_workers="2"), r"`num_workers` must be an integer in \[1, 100000\]. Received: "
                            r"num_workers='2'"),
    (dict(gpus_per_worker=-1), r"`gpus_per_worker` must be an integer in \[0, 100000\].*=-1"),
    (dict(image=""), r"`image` must be a container image.*Received: image=''"),
    (dict(namespace="Team A"), r"`namespace` must be a DNS-1123 label.*'Team A'"),
])
def test_tfjob_bad_arguments_name_field_and_value(kwargs, match):
    args = dict(name="job", image="img:1", script="t.py", evaluator=True)
    args.update(kwargs)
    with pytest.raises(errors.ConfigError, match=match):
        tfjob.tfjob_manifest(**args)


def test_emit_cli_errors_name_the_flag():
    with pytest.raises(errors.TfpsError, match="--emit tfjob needs --image IMAGE"):
        render(["--emit", "tfjob", "train.py"])
    with pytest.raises(errors.TfpsError, match="missing SCRIPT"):
        render(["--emit", "slurm"])
    with pytest.raises(errors.ClusterSpecError, match="cluster spec .*nope.yaml: cannot read"):
        render(["--emit", "tfjob", "--image", "i", "--spec", "/nope.yaml", "train.py"])


def test_emit_refuses_a_spec_without_chief(tmp_path):
    spec = tmp_path / "nochief.yaml"
    spec.write_text("ps: [h1:2222]\nworker: [h2:2222]\n")
    with pytest.raises(errors.ClusterSpecError, match=r"nochief.yaml: chief: --emit needs a "
                                                      r"chief task .*got 0"):
        render(["--emit", "tfjob", "--image", "i", "--spec", str(spec), "train.py"])


# ---- Slurm ---------------------------------------------------------------------------------
def test_sbatch_script_sets_the_split_and_runs_every_task_under_srun():
    text = render(["--emit", "slurm", "--spec", os.path.join(REPO, "cluster_specs",
                                                             "two_hosts.yaml"),
                   "--port-base", "9000", "--time", "02:00:00", "--partition", "gpu",
                   "--gpus-per-worker", "1", "train.py", "--data", "a b"])
    assert text.startswith("#!/bin/bash\n")
    directives = dict(l[len("#SBATCH "):].split("=", 1) for l in text.splitlines()
                      if l.startswith("#SBATCH "))
    # two_hosts.yaml: chief + 2 ps + 2 workers = 5 tasks, one per node by default.
    assert directives == {"--job-name": "tfps-train", "--nodes": "5", "--ntasks": "5",
                          "--ntasks-per-node": "1", "--gpus-per-task": "1",
                          "--time": "02:00:00", "--partition": "gpu",
                          "--output": "tfps-train-%j.out"}
    assert "export TFPS_NUM_PS=2\n" in text and "export TFPS_PORT_BASE=9000\n" in text
    assert "unset TF_CONFIG" in text
    srun = [l for l in text.splitlines() if l.startswith("srun ")]
    assert len(srun) == 1 and "--distribution=block" in srun[0] and "--wait=" in srun[0]
    assert "' tfps-task train.py --data 'a b'\n" in text
    assert text.count('tfps-launch --from-env "$@"') == 3  # chief, ps, worker branches


def test_sbatch_script_with_evaluator_runs_it_as_its_own_step():
    text = sbatch.sbatch_script(script="t.py", num_ps=1, num_workers=3, evaluator=True,
                              nodes=2)
    assert "#SBATCH --ntasks=5\n" in text and "#SBATCH --nodes=2\n" in text
    assert "--ntasks-per-node" not in text
    eval_line = next(l for l in text.splitlines() if "--overlap" in l)
    assert eval_line.startswith('srun --overlap --nodes=1 --ntasks=1 env '
                                'TF_CONFIG="$evaluator_tf_config" ')
    assert "evaluator_tf_config=$(python -c 'from tfps.launch.sbatch import " \
           "slurm_evaluator_tf_config as c; print(c())') || exit 1\n" in text
    assert eval_line.endswith("tfps-launch --from-env t.py &")


@pytest.mark.parametrize("kwargs, match", [
    (dict(nodes=9), r"`nodes` must be at most the number of tasks \(4\). Received: nodes=9"),
    (dict(nodes=0), r"`nodes` must be an integer in \[1, 100000\]. Received: nodes=0"),
    (dict(port_base=80), r"`port_base` must be an integer in 1024-65531. Received: port_base=80"),
    (dict(time="1 day"), r"`time` must be a non-empty word.*Received: time='1 day'"),
    (dict(num_workers=0), r"`num_workers` must be an integer in \[1, 100000\]. Received: "
                          r"num_workers=0"),
])
def test_sbatch_bad_arguments_name_field_and_value(kwargs, match):
    args = dict(script="t.py", num_ps=1, num_workers=2)
    args.update(kwargs)
    with pytest.raises(errors.ConfigError, match=match):
        sbatch.sbatch_script(**args)


def test_default_name_is_a_dns_label():
    assert tfjob.default_name("/app/Train_MNIST.v2.py") == "tfps-train-mnist-v2"
    assert tfjob.default_name("___.py") == "tfps-job"
    assert len(tfjob.default_name("x" * 100 + ".py")) <= 40
