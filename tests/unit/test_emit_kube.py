"""`tfps-launch --emit volcano|trainjob` (and what every Kubernetes engine shares). Pure.

Every manifest is validated against the released CRDs of its engine (Volcano v1.15.1, Kubeflow
Trainer v2.3.0, TFJob v1.9.0: tests/k8s) with their CEL rules, and against the rules of the
engines' admission webhooks and of Kubernetes' own validation (tests/k8s_check.py). How
Kubernetes' YAML reader types the text is checked with kubectl in
tests/drills/test_emit_kubectl.py.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from k8s_check import admission_errors, schema_errors

from tfps import Cluster, errors
from tfps.cluster.model import task_from_env
from tfps.emit import resources, trainjob, volcano
from tfps.emit.job import RETRYABLE_EXIT_CODES
from tfps.launch import cli
from tfps.launch.config import config_from_args

KUBE_ENGINES = ("tfjob", "volcano", "trainjob")
KINDS = {"tfjob": ["TFJob", "NetworkPolicy"], "volcano": ["Job", "NetworkPolicy"],
         "trainjob": ["TrainingRuntime", "TrainJob", "NetworkPolicy"]}
AWKWARD = ["--lr", "1e-3", "--flag", "y", "--month", "08", "--octal", "0o17", "--n", "5e4"]


def docs(engine: str, *argv: str) -> list[dict]:
    """The objects ``tfps-launch --emit ENGINE ARGV`` prints, each checked against its CRD
    and admission."""
    text = config_from_args(cli.parse(["--emit", engine, *argv])).render()
    objects = list(yaml.safe_load_all(text))
    assert [o["kind"] for o in objects] == KINDS[engine]
    for obj in objects:
        assert schema_errors(obj) == [], obj["kind"]
    assert admission_errors(objects) == []
    return objects


def pod_templates(engine: str, objects: list[dict]) -> dict[str, dict]:
    """role -> pod template, whatever the engine."""
    if engine == "tfjob":
        return {t.lower(): r["template"] for t, r in objects[0]["spec"]["tfReplicaSpecs"].items()}
    if engine == "volcano":
        return {t["name"]: t["template"] for t in objects[0]["spec"]["tasks"]}
    return {r["name"]: r["template"]["spec"]["template"]
            for r in objects[0]["spec"]["template"]["spec"]["replicatedJobs"]}


# ---- every Kubernetes engine ---------------------------------------------------------------
@pytest.mark.parametrize("engine", KUBE_ENGINES)
@pytest.mark.parametrize("extra", [[], ["--evaluator", "--gpus-per-worker", "2", "--namespace",
                                        "ml", "--model-bytes", "6GB", "--istio-sidecar",
                                        "--cpu", "ps=500m", "--memory", "ps=12Gi",
                                        "--backoff-limit", "4", "--max-restarts", "7",
                                        "--num-ps", "3", "--num-workers", "5"]],
                         ids=["defaults", "every-flag"])
def test_every_engine_validates_and_keeps_the_arguments(engine, extra):
    objects = docs(engine, "--image", "registry.example.com/t:1", *extra, "/app/train.py",
                   *AWKWARD)
    templates = pod_templates(engine, objects)
    assert set(templates) == {"chief", "ps", "worker"} | ({"evaluator"} if extra else set())
    for role, template in templates.items():
        [container] = template["spec"]["containers"]
        assert container["command"][-len(AWKWARD) - 1:] == ["/app/train.py", *AWKWARD]
        assert container["image"] == "registry.example.com/t:1"
        assert container["ports"][0]["containerPort"] == 2222
        gpu = container["resources"]["limits"].get("nvidia.com/gpu")
        assert gpu == (2 if extra and role == "worker" else None)
        istio = template["metadata"].get("annotations", {}).get("sidecar.istio.io/inject")
        assert istio == (None if extra else "false")
        if extra:
            assert container["command"][:6] == ["tfps-launch", "--from-env", "--gpus-per-worker",
                                                "2", "--max-restarts", "7"]
    if extra:
        ps = templates["ps"]["spec"]["containers"][0]["resources"]
        assert ps == {"requests": {"cpu": "500m", "memory": "12Gi"}, "limits": {"memory": "12Gi"}}
        assert all(o["metadata"]["namespace"] == "ml" for o in objects)


@pytest.mark.parametrize("engine", KUBE_ENGINES)
def test_network_policy_selects_the_pods_by_the_label_the_engine_sets(engine):
    objects = docs(engine, "--image", "i:1", "--name", "mnist", "t.py")
    policy = objects[-1]
    [(label, value)] = policy["spec"]["podSelector"]["matchLabels"].items()
    assert value == "mnist"
    pods = {"podSelector": {"matchLabels": {label: value}}}
    ports = [{"protocol": "TCP", "port": 2222}, {"protocol": "UDP", "port": 2222}]
    assert policy["spec"]["ingress"] == [{"from": [pods], "ports": ports}]
    for template in pod_templates(engine, objects).values():
        assert template["metadata"]["labels"][label] == "mnist"


# ---- Volcano -------------------------------------------------------------------------------
def test_volcano_job_gang_plugins_and_policies():
    job, _ = docs("volcano", "--image", "i:1", "--evaluator", "--queue", "research",
                  "--backoff-limit", "6", "--name", "rec", "t.py")
    spec = job["spec"]
    assert (spec["schedulerName"], spec["queue"], spec["maxRetry"]) == ("volcano", "research", 6)
    # Gang: chief + 2 ps + 2 workers must all fit; the evaluator is not part of it.
    assert spec["minAvailable"] == 5
    assert {t["name"]: (t["replicas"], t["minAvailable"]) for t in spec["tasks"]} == {
        "chief": (1, 1), "ps": (2, 2), "worker": (2, 2), "evaluator": (1, 0)}
    assert spec["plugins"] == {"tensorflow": ["--port=2222"],
                               "svc": ["--disable-network-policy=true"]}
    actions = {t["name"]: {p.get("exitCode", p.get("event")): p["action"] for p in t["policies"]}
               for t in spec["tasks"]}
    retry = dict.fromkeys(RETRYABLE_EXIT_CODES)
    assert tuple(retry) == (130, 137, 138, 143)
    assert actions["worker"] == {**dict.fromkeys(retry, "RestartPod"),
                                 "PodFailed": "TerminateJob", "PodEvicted": "RestartPod"}
    assert actions["ps"] == {**dict.fromkeys(retry, "RestartJob"),
                             "PodFailed": "TerminateJob", "PodEvicted": "RestartJob"}
    assert actions["chief"] == {**dict.fromkeys(retry, "RestartPod"), "PodFailed": "TerminateJob",
                                "PodEvicted": "RestartPod", "TaskCompleted": "CompleteJob"}
    assert actions["evaluator"] == actions["worker"]
    for task in spec["tasks"]:
        assert task["template"]["spec"]["restartPolicy"] == "Never"  # failures reach Volcano
        # Volcano takes the first matching policy: the retryable codes before PodFailed.
        kinds = [p.get("event", "exitCode") for p in task["policies"]]
        assert kinds.index("PodFailed") > max(i for i, k in enumerate(kinds) if k == "exitCode")


def test_volcano_tf_config_is_read_as_the_plugin_writes_it_without_the_evaluator():
    """The TF_CONFIG of volcano-sh/volcano v1.15.1's tensorflow plugin (generateTFClusterSpec,
    MakeDomainName): <job>-<task>-<index>.<job>:2222 for every task, the evaluator too."""
    job, _ = docs("volcano", "--image", "i:1", "--evaluator", "--name", "rec", "t.py")
    hosts = {t["name"]: [f"rec-{t['name']}-{i}.rec:2222" for i in range(t["replicas"])]
             for t in job["spec"]["tasks"]}
    plugin = {"cluster": {"ps": hosts["ps"], "worker": hosts["worker"], "chief": hosts["chief"],
                          "evaluator": hosts["evaluator"]}, "task": {"type": "worker", "index": 1}}
    env = {"TF_CONFIG": json.dumps(plugin)}
    cluster, task = Cluster.from_env(env), task_from_env(env)
    assert str(task) == "worker:1" and cluster.evaluator == ("rec-evaluator-0.rec:2222",)
    assert cluster.tf_config("worker", 1) == {
        "cluster": {"chief": ["rec-chief-0.rec:2222"], "ps": ["rec-ps-0.rec:2222",
                                                             "rec-ps-1.rec:2222"],
                    "worker": ["rec-worker-0.rec:2222", "rec-worker-1.rec:2222"]},
        "task": {"type": "worker", "index": 1}}


def test_volcano_schema_and_admission_catch_what_volcano_refuses():
    job, _ = volcano.VolcanoJobSpec(name="j", image="i", script="t.py").manifest()
    bad = copy.deepcopy(job)
    bad["spec"]["tasks"][1]["policies"].append({"event": "PodEvicted", "exitCode": 3,
                                                "action": "RestartPod"})
    bad["spec"]["tasks"][2]["policies"][0]["exitCode"] = 0
    bad["spec"]["tasks"][0]["minAvailable"] = 2
    bad["spec"]["minAvailable"] = 9
    bad["spec"]["plugins"]["tensorflowx"] = []
    found = " | ".join(admission_errors([bad]))
    for needle in ("must not specify event and exitCode simultaneously", "exitCode 0",
                   "minAvailable not in [0, replicas]", "should not be greater than total",
                   "unable to find job plugin: tensorflowx"):
        assert needle in found, found
    bad["spec"]["tasks"][0]["policies"][0]["event"] = "PodExploded"
    assert any("'PodExploded' is not one of" in e for e in schema_errors(bad))


@pytest.mark.parametrize("kwargs, match", [
    (dict(queue="Research"), r"`queue` must be a Volcano queue name.*queue='Research'"),
    (dict(queue="root"), r"`queue` cannot be 'root'"),
    (dict(name="a" * 52, evaluator=True), r"`name` is too long: the volcano would name a pod "
                                          r"or Service 'a{52}-evaluator-0' \(64"),
    (dict(name="a" * 55), r"'a{55}-worker-1' \(64 characters"),
    (dict(resources={"evaluator": resources.Resources("2", 2048)}),
     r"`resources` sizes the evaluator, but the job has no evaluator"),
])
def test_volcano_bad_arguments_name_field_and_value(kwargs, match):
    args = dict(name="job", image="img:1", script="t.py")
    args.update(kwargs)
    with pytest.raises(errors.ConfigError, match=match):
        volcano.VolcanoJobSpec(**args)


# ---- Kubeflow Trainer v2 -------------------------------------------------------------------
def test_trainjob_references_its_runtime_of_one_indexed_job_per_role():
    runtime, job, _ = docs("trainjob", "--image", "i:1", "--evaluator", "--num-workers", "3",
                           "--backoff-limit", "5", "--name", "rec", "--namespace", "ml", "t.py")
    assert job["spec"] == {"runtimeRef": {"name": "rec-tfps", "apiGroup": "trainer.kubeflow.org",
                                          "kind": "TrainingRuntime"},
                           "trainer": {"numNodes": 3}}
    assert runtime["metadata"]["name"] == "rec-tfps" and runtime["metadata"]["namespace"] == "ml"
    assert runtime["spec"]["mlPolicy"] == {"numNodes": 3}
    jobset = runtime["spec"]["template"]["spec"]
    assert jobset["successPolicy"] == {"operator": "Any", "targetReplicatedJobs": ["chief"]}
    assert jobset["failurePolicy"] == {"maxRestarts": 5, "rules": [
        {"name": "permanent", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]}]}
    rjobs = {r["name"]: r for r in jobset["replicatedJobs"]}
    assert list(rjobs) == ["chief", "ps", "worker", "evaluator"]
    for role, count in {"chief": 1, "ps": 2, "worker": 3, "evaluator": 1}.items():
        spec = rjobs[role]["template"]["spec"]
        assert rjobs[role]["replicas"] == 1
        assert (spec["completionMode"], spec["parallelism"], spec["completions"]) == (
            "Indexed", count, count)
        assert spec["backoffLimit"] == (0 if role == "ps" else 5)
        rules = spec["podFailurePolicy"]["rules"]
        assert rules[0] == {"action": "FailJob", "onExitCodes": {
            "containerName": "node", "operator": "NotIn", "values": [130, 137, 138, 143]}}
        # An eviction is nobody's failure, except for a ps: the whole JobSet restarts.
        assert [r["action"] for r in rules[1:]] == ([] if role == "ps" else ["Ignore"])
        assert spec["template"]["spec"]["restartPolicy"] == "Never"
    # Trainer sizes the replicated job marked as the trainer: the workers.
    assert rjobs["worker"]["template"]["metadata"]["labels"] == {
        "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
    assert all("metadata" not in rjobs[r]["template"] for r in ("chief", "ps", "evaluator"))


def _pod_env(container: dict, role: str, index: int, jobset_name: str) -> dict:
    """The environment Kubernetes gives a container of `role`:`index` (downward API filled)."""
    annotations = {"jobset.sigs.k8s.io/jobset-name": jobset_name,
                   "jobset.sigs.k8s.io/replicatedjob-name": role,
                   "jobset.sigs.k8s.io/job-index": "0"}
    env = {"JOB_COMPLETION_INDEX": str(index)}  # Kubernetes, for an Indexed Job's pods
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            env[var["name"]] = annotations[path[len("metadata.annotations['"):-2]]
    return env


def test_trainjob_pods_compute_tf_config_from_what_jobset_gives_them():
    runtime, job, _ = docs("trainjob", "--image", "i:1", "--evaluator", "--num-ps", "2",
                           "--num-workers", "2", "--name", "rec", "t.py")
    rjobs = {r["name"]: r["template"]["spec"] for r in
             runtime["spec"]["template"]["spec"]["replicatedJobs"]}
    expected = {"chief": ["rec-chief-0-0.rec:2222"],
                "ps": ["rec-ps-0-0.rec:2222", "rec-ps-0-1.rec:2222"],
                "worker": ["rec-worker-0-0.rec:2222", "rec-worker-0-1.rec:2222"]}
    for role, spec in rjobs.items():
        [container] = spec["template"]["spec"]["containers"]
        for index in range(spec["parallelism"]):
            env = _pod_env(container, role, index, job["metadata"]["name"])
            cluster, task = Cluster.from_env(env), task_from_env(env)
            assert (task.type, task.index) == (role, index)
            assert cluster.evaluator == ("rec-evaluator-0-0.rec:2222",)
            config = cluster.tf_config(role, index)
            if role != "evaluator":  # the training cluster never lists the evaluator
                assert config["cluster"] == expected, role


def test_trainjob_checks_catch_what_trainer_and_jobset_refuse():
    runtime, job, policy = trainjob.TrainJobSpec(name="j", image="i", script="t.py").manifest()
    bad = copy.deepcopy(runtime)
    bad["spec"]["mlPolicy"].update(torch={}, mpi={})
    assert any("Only one of the policy can be configured" in e for e in schema_errors(bad))
    bad_job = copy.deepcopy(job)
    bad_job["metadata"]["name"] = "J"
    assert any("RFC 1035" in e for e in schema_errors(bad_job))
    bad = copy.deepcopy(runtime)
    rjob = bad["spec"]["template"]["spec"]["replicatedJobs"][2]["template"]["spec"]
    rjob["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] = [143, 130]
    rjob["template"]["spec"]["restartPolicy"] = "OnFailure"
    bad["spec"]["template"]["spec"]["failurePolicy"]["rules"][0]["name"] = "9bad"
    found = " | ".join(admission_errors([bad, job, policy]))
    for needle in ("values must be sorted", "podFailurePolicy needs restartPolicy Never",
                   "failure policy rule name '9bad'"):
        assert needle in found, found


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="a" * 46, evaluator=True), r"'a{46}-evaluator-0-0-abcde' \(66 characters"),
    (dict(image="a b"), r"`image` must be a container image reference"),
    (dict(namespace="ML"), r"`namespace` must be a DNS-1123 label"),
    (dict(backoff_limit=-1), r"`backoff_limit` must be an integer in \[0, 100000\]"),
])
def test_trainjob_bad_arguments_name_field_and_value(kwargs, match):
    args = dict(name="job", image="img:1", script="t.py")
    args.update(kwargs)
    with pytest.raises(errors.ConfigError, match=match):
        trainjob.TrainJobSpec(**args)
