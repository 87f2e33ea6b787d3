"""`tfps-launch --emit`: the Kubeflow TFJob + NetworkPolicy and the Slurm sbatch script. Pure.

The TFJob is validated against the openAPIV3Schema of Kubeflow's TFJob CRD (training-operator
v1.9.0) and the NetworkPolicy against its structure (tests/k8s, `jsonschema`). How Kubernetes'
own YAML reader types the emitted text is checked with kubectl in
tests/drills/test_emit_kubectl.py; the sbatch script runs on a real Slurm in
tests/drills/test_slurm.py.
"""

from __future__ import annotations

import math
import os
import re

import pytest
import yaml
from conftest import REPO
from k8s_check import schema_errors

from tfps import errors
from tfps.emit import kube, resources
from tfps.emit.job import default_name
from tfps.emit.slurm import SlurmSpec
from tfps.emit.tfjob import TFJobSpec
from tfps.launch import cli
from tfps.launch.config import config_from_args


def render(argv) -> str:
    """What ``tfps-launch ARGV`` prints: parsed and validated as the launcher does."""
    return config_from_args(cli.parse(argv)).render()


def tfjob_docs(*argv) -> list[dict]:
    docs = list(yaml.safe_load_all(render(["--emit", "tfjob", *argv])))
    assert [d["kind"] for d in docs] == ["TFJob", "NetworkPolicy"]
    for doc in docs:
        assert schema_errors(doc) == [], doc["kind"]
    return docs


def container(doc: dict, rtype: str) -> dict:
    containers = doc["spec"]["tfReplicaSpecs"][rtype]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "tensorflow")


# ---- TFJob ---------------------------------------------------------------------------------
def test_tfjob_from_spec_validates_against_the_crd(tmp_path):
    spec = tmp_path / "eight_plus_evaluator.yaml"
    with open(os.path.join(REPO, "cluster_specs", "eight_hosts.yaml")) as f:
        spec.write_text(f.read() + "evaluator: [host-eval:2222]\n")
    text = render(["--emit", "tfjob", "--spec", str(spec),
                   "--image", "registry.example.com/ml/trainer:1.0",
                   "--gpus-per-worker", "2", "--namespace", "ml",
                   "/app/train.py", "--steps", "1000"])
    job, policy = yaml.safe_load_all(text)
    assert schema_errors(job) == [] and schema_errors(policy) == []
    assert job["metadata"] == {"name": "tfps-train", "namespace": "ml",
                               "labels": {"app.kubernetes.io/managed-by": "tfps"}}
    replicas = job["spec"]["tfReplicaSpecs"]
    # eight_hosts.yaml: 1 chief, 2 ps, 5 workers; plus the evaluator.
    assert {t: r["replicas"] for t, r in replicas.items()} == {
        "Chief": 1, "PS": 2, "Worker": 5, "Evaluator": 1}
    assert {r["restartPolicy"] for r in replicas.values()} == {"ExitCode"}
    assert job["spec"]["runPolicy"] == {"cleanPodPolicy": "Running", "backoffLimit": 10}
    # Default requests: chief 2/2Gi, ps 2 CPUs (5 workers over 2 ps)/2Gi, worker 4/4Gi,
    # evaluator 2/2Gi; memory limit = request; GPUs for workers only.
    expected = {"Chief": ("2", "2Gi"), "PS": ("2", "2Gi"), "Worker": ("4", "4Gi"),
                "Evaluator": ("2", "2Gi")}
    for rtype, (cpu, memory) in expected.items():
        c = container(job, rtype)
        assert c["image"] == "registry.example.com/ml/trainer:1.0"
        assert c["command"] == ["tfps-launch", "--from-env", "--gpus-per-worker", "2",
                                "/app/train.py", "--steps", "1000"]
        assert c["ports"] == [{"name": "tfjob-port", "containerPort": 2222, "protocol": "TCP"}]
        assert {e["name"]: e["value"] for e in c["env"]} == {
            "GRPC_FAIL_FAST": "use_caller", "TF_USE_LEGACY_KERAS": "1"}
        gpus = {"nvidia.com/gpu": 2} if rtype == "Worker" else {}
        assert c["resources"] == {"requests": {"cpu": cpu, "memory": memory},
                                  "limits": {"memory": memory, **gpus}}, rtype
        template = replicas[rtype]["template"]
        assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    # No anchors/aliases: the manifest is meant to be read and edited.
    assert "&id" not in text and "*id" not in text


@pytest.mark.parametrize("text, quoted", [
    ("train.py", False), ("--lr", False), ("/app/train.py", False), ("-v", False),
    ("registry.example.com/ml/trainer:1.0", False), ("use_caller", False), ("a=b", False),
    ("1e-3", True), ("5e4", True), ("08", True), ("0o17", True), ("0x1F", True),
    ("1_000", True), (".5", True), ("+1", True), ("-1", True), ("2001-12-14", True),
    ("y", True), ("N", True), ("yes", True), ("on", True), ("Off", True), ("true", True),
    ("null", True), ("~", True), ("", True), ("-inf", True), ("-.inf", True), ("a b", True),
    ("#x", True), ("*x", True), ("&x", True), ("!x", True), ("x: y", True), ("- x", True),
])
def test_strings_yaml_1_1_would_type_are_quoted(text, quoted):
    assert kube.needs_quotes(text) == quoted
    dumped = kube.to_yaml([{"arg": text}], header="").splitlines()[-1]
    assert yaml.safe_load(dumped) == {"arg": text}
    if quoted:
        assert dumped.split(": ", 1)[1][0] in "'\"", dumped


def test_script_arguments_are_written_as_strings_kubernetes_reads_back():
    [job, _] = tfjob_docs("--image", "img:1", "train.py", "--lr", "1e-3", "--flag", "y",
                          "--month", "08", "--n", "0o17", "--x", "5e4")
    text = render(["--emit", "tfjob", "--image", "img:1", "train.py", "--lr", "1e-3",
                   "--flag", "y", "--month", "08"])
    for value in ("1e-3", "y", "08"):
        assert f'- "{value}"\n' in text
    assert container(job, "Chief")["command"][2:] == [
        "train.py", "--lr", "1e-3", "--flag", "y", "--month", "08", "--n", "0o17", "--x", "5e4"]


def test_tfjob_flags_restart_policy_istio_resources_model_size_and_restarts():
    [job, _] = tfjob_docs("--image", "img:1", "--restart-policy", "OnFailure",
                          "--istio-sidecar", "--cpu", "ps=4", "--cpu", "worker=500m",
                          "--memory", "ps=16Gi", "--memory", "chief=1536Mi",
                          "--model-bytes", "8GiB", "--max-restarts", "7", "--evaluator",
                          "train.py")
    replicas = job["spec"]["tfReplicaSpecs"]
    assert {r["restartPolicy"] for r in replicas.values()} == {"OnFailure"}
    assert all("annotations" not in r["template"]["metadata"] for r in replicas.values())
    requests = {t: container(job, t)["resources"]["requests"] for t in replicas}
    # --model-bytes 8GiB over 2 ps: 4 GiB each, twice over + 1 GiB runtime; overridden by
    # --memory ps=16Gi. The evaluator holds the whole model: 2 GiB + 8 GiB.
    assert requests == {"Chief": {"cpu": "2", "memory": "1536Mi"},
                        "PS": {"cpu": "4", "memory": "16Gi"},
                        "Worker": {"cpu": "500m", "memory": "4Gi"},
                        "Evaluator": {"cpu": "2", "memory": "10Gi"}}
    assert container(job, "Chief")["command"] == [
        "tfps-launch", "--from-env", "--max-restarts", "7", "train.py"]


def test_default_resources_follow_the_job_and_model():
    sizes = resources.defaults(num_ps=2, num_workers=16, model_bytes=8 << 30)
    assert sizes["ps"] == resources.Resources("4", 9 * 1024)  # 16 workers / 2 ps / 2
    assert resources.defaults(num_ps=4, num_workers=400)["ps"].cpu == "8"  # at most 8
    assert resources.defaults(num_ps=1, num_workers=1)["ps"] == resources.Resources("2", 2048)
    assert resources.k8s_memory(1536) == "1536Mi" and resources.k8s_memory(4096) == "4Gi"


def test_network_policy_admits_only_the_jobs_own_pods():
    job, policy = TFJobSpec(name="mnist", image="img:1", script="t.py", num_ps=1,
                            num_workers=1, namespace="team-a").manifest()
    assert schema_errors(policy) == []
    assert policy["metadata"]["namespace"] == job["metadata"]["namespace"] == "team-a"
    spec = policy["spec"]
    selector = {"matchLabels": {"training.kubeflow.org/job-name": "mnist"}}
    assert spec["podSelector"] == selector
    assert spec["policyTypes"] == ["Ingress"]
    # One rule: from pods of this job only (podSelector without namespaceSelector means this
    # namespace), to the TF port only (the chief's launcher tells the others on it too).
    assert spec["ingress"] == [{"from": [{"podSelector": selector}],
                                "ports": [{"protocol": "TCP", "port": 2222},
                                          {"protocol": "UDP", "port": 2222}]}]
    for rspec in job["spec"]["tfReplicaSpecs"].values():
        labels = rspec["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_schemas_catch_what_the_api_server_rejects():
    job, policy = TFJobSpec(name="j", image="i", script="t.py", num_ps=1,
                            num_workers=1).manifest()
    container(job, "PS")["command"][2] = 0.001  # what go-yaml makes of an unquoted 1e-3
    job["spec"]["tfReplicaSpecs"]["PS"]["restartPolicyy"] = "Never"
    policy["spec"]["ingress"][0]["ports"][0]["protocol"] = "HTTP"
    assert any("0.001 is not of type 'string'" in e for e in schema_errors(job))
    assert any("'restartPolicyy' was unexpected" in e for e in schema_errors(job))
    assert any("'HTTP' is not one of" in e for e in schema_errors(policy))


def test_tfjob_counts_form_without_evaluator_or_gpus():
    job, policy = tfjob_docs("--num-ps", "3", "--num-workers", "4", "--image", "img:2",
                             "--name", "ctr", "train.py")
    replicas = job["spec"]["tfReplicaSpecs"]
    assert {t: r["replicas"] for t, r in replicas.items()} == {"Chief": 1, "PS": 3, "Worker": 4}
    assert "namespace" not in policy["metadata"]
    worker = container(job, "Worker")
    assert "nvidia.com/gpu" not in worker["resources"]["limits"]
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
    (dict(restart_policy="Sometimes"), r"`restart_policy` must be one of 'ExitCode', "
                                       r"'OnFailure', 'Never', 'Always'.*='Sometimes'"),
    (dict(istio_sidecar="no"), r"`istio_sidecar` must be True or False.*='no'"),
    (dict(resources={"boss": None}), r"`resources` must be one of 'chief'.*='boss'"),
    (dict(resources={"ps": "4Gi"}), r"`resources\['ps'\]` must be a tfps.emit.resources"),
    (dict(model_bytes=0), r"`model_bytes` must be an integer >= 1 or None.*=0"),
    (dict(max_restarts=-1), r"`max_restarts` must be an integer in \[0, 10000\] or None"),
])
def test_tfjob_bad_arguments_name_field_and_value(kwargs, match):
    args = dict(name="job", image="img:1", script="t.py", evaluator=True)
    args.update(kwargs)
    with pytest.raises(errors.ConfigError, match=match):
        TFJobSpec(**args)


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


# Every new flag: a bad value is exit 2 and one line naming the flag and the value.
BAD_FLAGS = [
    (["--emit", "tfjob", "--image", "i", "--restart-policy", "Sometimes"],
     "argument --restart-policy: invalid choice: 'Sometimes'"),
    (["--emit", "tfjob", "--image", "i", "--cpu", "ps=two"],
     "argument --cpu: expected ROLE=CPUS (ROLE: chief, ps, worker, evaluator; CPUS such as 2, "
     "0.5 or 500m), got 'ps=two'"),
    (["--emit", "tfjob", "--image", "i", "--cpu", "boss=2"], "argument --cpu: expected "
                                                             "ROLE=CPUS"),
    (["--emit", "tfjob", "--image", "i", "--cpu", "ps"], "got 'ps'"),
    (["--emit", "tfjob", "--image", "i", "--cpu", "ps=0"], "got 'ps=0'"),
    (["--emit", "tfjob", "--image", "i", "--memory", "ps=4XB"],
     "argument --memory: expected ROLE=SIZE (ROLE: chief, ps, worker, evaluator; SIZE such as "
     "4Gi, 512Mi or 4G), got 'ps=4XB'"),
    (["--emit", "tfjob", "--image", "i", "--memory", "worker=0Gi"], "got 'worker=0Gi'"),
    (["--emit", "tfjob", "--image", "i", "--model-bytes", "lots"],
     "--model-bytes: cannot parse 'lots'"),
    (["--emit", "slurm", "--cpus-per-task", "0"],
     "argument --cpus-per-task: expected an integer in [1, 1024], got '0'"),
    (["--emit", "slurm", "--cpus-per-task", "４"], "got '４'"),
    (["--emit", "slurm", "--mem", "4X"], "argument --mem: expected memory per node such as "
                                        "16G, 4096 (MB) or 0 (all of it), got '4X'"),
    (["--emit", "slurm", "--mem", "-1G"], "argument --mem: expected"),
    (["--emit", "slurm", "--max-restarts", "-1"], "argument --max-restarts: expected an "
                                                  "integer in [0, 10000], got '-1'"),
    # Flags of one engine are refused by the other, and by a launch.
    (["--emit", "slurm", "--istio-sidecar"], "--istio-sidecar cannot be combined with --emit "
                                             "slurm"),
    (["--emit", "slurm", "--cpu", "ps=2"], "--cpu cannot be combined with --emit slurm"),
    (["--emit", "tfjob", "--image", "i", "--mem", "4G"], "--mem cannot be combined with --emit "
                                                         "tfjob"),
    (["--emit", "tfjob", "--image", "i", "--cpus-per-task", "2"], "--cpus-per-task cannot be "
                                                                  "combined with --emit tfjob"),
    (["--cpus-per-task", "2"], "--cpus-per-task cannot be combined with a launch"),
    (["--restart-policy", "Never"], "--restart-policy cannot be combined with a launch"),
]


@pytest.mark.parametrize("argv, expected", BAD_FLAGS, ids=[" ".join(a[2:]) or a[0]
                                                           for a, _ in BAD_FLAGS])
def test_bad_new_flags_are_one_line_exit_2(argv, expected, capsys):
    assert cli.main([*argv, "train.py"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("tfps-launch: error: ") and expected in line, line


# ---- Slurm ---------------------------------------------------------------------------------
def directives(text: str) -> dict:
    return dict(line[len("#SBATCH "):].split("=", 1) for line in text.splitlines()
                if line.startswith("#SBATCH "))


def test_sbatch_script_sets_the_split_resources_and_runs_every_task_under_srun():
    text = render(["--emit", "slurm", "--spec", os.path.join(REPO, "cluster_specs",
                                                             "two_hosts.yaml"),
                   "--port-base", "9000", "--time", "02:00:00", "--partition", "gpu",
                   "--gpus-per-worker", "1", "train.py", "--data", "a b"])
    assert text.startswith("#!/bin/bash\n")
    # two_hosts.yaml: chief + 2 ps + 2 workers = 5 tasks, one per node by default; every
    # task gets the largest role's CPUs (a worker's 4) and memory (4 GiB).
    assert directives(text) == {"--job-name": "tfps-train", "--nodes": "5", "--ntasks": "5",
                                "--ntasks-per-node": "1", "--cpus-per-task": "4",
                                "--mem": "4G", "--gpus-per-task": "1", "--time": "02:00:00",
                                "--partition": "gpu", "--output": "tfps-train-%j.out"}
    assert "export TFPS_NUM_PS=2\n" in text and "export TFPS_PORT_BASE=9000\n" in text
    assert "unset TF_CONFIG" in text
    [srun] = [l for l in text.splitlines() if l.startswith("srun ")]
    # No --wait: the other launchers exit 0 when the chief's says it is done; srun's --wait
    # would SIGKILL them (exit 137 in the job's output).
    assert srun == "srun --distribution=block --kill-on-bad-exit=0 bash -c '"
    assert "' tfps-task train.py --data 'a b'\n" in text
    assert text.count('tfps-launch --from-env "$@"') == 3  # chief, ps (no GPU), workers
    assert 'export CUDA_VISIBLE_DEVICES=""; exec tfps-launch' in text


@pytest.mark.parametrize("tasks, nodes, per_node", [(5, 1, 5), (5, 2, 3), (9, 4, 3),
                                                     (8, 8, 1), (7, 3, 3), (102, 10, 11)])
def test_sbatch_spreads_tasks_evenly_and_sizes_memory_per_node(tasks, nodes, per_node):
    text = SlurmSpec(script="t.py", num_ps=1, num_workers=tasks - 2, nodes=nodes).render()
    d = directives(text)
    assert (d["--nodes"], d["--ntasks"], d["--ntasks-per-node"]) == (
        str(nodes), str(tasks), str(per_node))
    assert per_node == math.ceil(tasks / nodes)
    assert d["--mem"] == f"{4 * per_node}G"  # a worker's 4 GiB per task on the node


def _port_base(text: str, job_id: int) -> int:
    """Evaluates the script's TFPS_PORT_BASE line, as bash would, for `job_id`."""
    m = re.search(r"export TFPS_PORT_BASE=\$\(\( (\d+) \+ SLURM_JOB_ID % (\d+) \* (\d+) \)\)",
                  text)
    low, slots, stride = map(int, m.groups())
    return low + job_id % slots * stride


def test_sbatch_ports_come_from_the_job_id_so_jobs_on_one_node_do_not_collide():
    text = SlurmSpec(script="t.py", num_ps=2, num_workers=4, nodes=2).render()  # 4 per node
    bases = [_port_base(text, job) for job in range(1, 3000)]
    assert all(10000 <= b and b + 4 - 1 <= 32767 for b in bases)  # below the ephemeral range
    used = [range(b, b + 4) for b in bases]
    # Any two jobs whose ids are less than a slot cycle apart use disjoint ports.
    assert len({p for r in used[:1000] for p in r}) == 4 * 1000
    assert "8888" not in text


def test_sbatch_evaluator_runs_beside_the_step_and_is_ended_after_training():
    text = SlurmSpec(script="t.py", num_ps=1, num_workers=3, evaluator=True, nodes=2,
                     cpus_per_task=8, mem="32G", max_restarts=5).render()
    d = directives(text)
    assert (d["--ntasks"], d["--nodes"], d["--ntasks-per-node"], d["--cpus-per-task"],
            d["--mem"]) == ("5", "2", "3", "8", "32G")
    eval_line = next(l for l in text.splitlines() if "--overlap" in l)
    assert eval_line == ('srun --overlap --nodes=1 --ntasks=1 env TF_CONFIG='
                         '"$evaluator_tf_config" tfps-launch --from-env --max-restarts 5 t.py &')
    assert "evaluator_tf_config=$(python -c 'from tfps.cluster.slurm import " \
           "evaluator_tf_config as c; print(c())') || exit 1\n" in text
    assert "' tfps-task --max-restarts 5 t.py\n" in text
    # Its launcher ends it when the chief is done; the script ends its step if it did not.
    assert text.index('kill "$evaluator_pid"') > text.index("step_status=$?")


def test_sbatch_default_memory_counts_the_evaluator_and_the_model():
    d = directives(SlurmSpec(script="t.py", num_ps=2, num_workers=2, nodes=1,
                             evaluator=True, model_bytes=16 << 30).render())
    # 5 tasks on the node, the largest being a ps (1 GiB + 2 x 8 GiB = 17 GiB), plus an
    # evaluator with the whole model (2 + 16 GiB).
    assert d["--mem"] == f"{5 * 17 + 18}G"


@pytest.mark.parametrize("kwargs, match", [
    (dict(nodes=9), r"`nodes` must be at most the number of tasks \(4\). Received: nodes=9"),
    (dict(nodes=0), r"`nodes` must be an integer in \[1, 100000\]. Received: nodes=0"),
    (dict(port_base=80), r"`port_base` must be an integer in 1024-65535 \(1 task per node, "
                         r"the last on port_base \+ 0\). Received: port_base=80"),
    (dict(port_base=65535, nodes=2), r"`port_base` must be an integer in 1024-65534 \(2 tasks"),
    (dict(time="1 day"), r"`time` must be a non-empty word.*Received: time='1 day'"),
    (dict(time="abc"), r"Argument `time`: expected Slurm's time limit .* got 'abc'"),
    (dict(mem="2G", nodes=1), r"`mem` must be at least 4096 MB: 4 tasks on a node, each needing "
                              r"1024 MB, or 0 \(all of it\). Received: mem='2G'"),
    (dict(requeue="yes"), r"`requeue` must be True or False. Received: requeue='yes'"),
    (dict(num_workers=0), r"`num_workers` must be an integer in \[1, 100000\]. Received: "
                          r"num_workers=0"),
    (dict(cpus_per_task=0), r"`cpus_per_task` must be an integer in \[1, 1024\] or None"),
    (dict(mem="4X"), r"`mem` must be Slurm's memory per node.*Received: mem='4X'"),
    (dict(model_bytes=-1), r"`model_bytes` must be an integer >= 1 or None.*=-1"),
])
def test_sbatch_bad_arguments_name_field_and_value(kwargs, match):
    args = dict(script="t.py", num_ps=1, num_workers=2)
    args.update(kwargs)
    with pytest.raises(errors.ConfigError, match=match):
        SlurmSpec(**args)


def test_default_name_is_a_dns_label():
    assert default_name("/app/Train_MNIST.v2.py") == "tfps-train-mnist-v2"
    assert default_name("___.py") == "tfps-job"
    assert len(default_name("x" * 100 + ".py")) <= 40
