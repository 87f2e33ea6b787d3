"""`tfps.Cluster.from_env` under the Kubernetes engines after TFJob: a JobSet pod of a Kubeflow
TrainJob (`tfps.cluster.jobset`), and what TF_CONFIG may say (``rpc_layer``). Pure."""

from __future__ import annotations

import json

import pytest

from tfps import Cluster, errors
from tfps.cluster import jobset
from tfps.cluster.model import task_from_env

POD = {"JOBSET_NAME": "rec", "REPLICATED_JOB_NAME": "ps", "JOB_INDEX": "0",
       "JOB_COMPLETION_INDEX": "1", "TFPS_NUM_PS": "2", "TFPS_NUM_WORKERS": "3",
       "TFPS_EVALUATOR": "1"}


def test_a_jobset_pod_knows_the_cluster_and_its_task():
    cluster, task = Cluster.from_env(POD), task_from_env(POD)
    assert str(task) == "ps:1" and cluster.source == "JobSet"
    assert cluster.as_dict() == {
        "chief": ["rec-chief-0-0.rec:2222"],
        "ps": ["rec-ps-0-0.rec:2222", "rec-ps-0-1.rec:2222"],
        "worker": [f"rec-worker-0-{i}.rec:2222" for i in range(3)],
        "evaluator": ["rec-evaluator-0-0.rec:2222"]}
    # The evaluator is listed, but chief, ps and workers never see it.
    assert "evaluator" not in cluster.tf_config("chief", 0)["cluster"]
    assert cluster.tf_config("evaluator", 0)["cluster"]["evaluator"] == [
        "rec-evaluator-0-0.rec:2222"]


def test_port_and_subdomain_can_be_set():
    env = dict(POD, TFPS_PORT="9000", TFPS_SUBDOMAIN="svc", TFPS_EVALUATOR="0")
    assert Cluster.from_env(env).ps == ("rec-ps-0-0.svc:9000", "rec-ps-0-1.svc:9000")


def test_tf_config_and_slurm_come_first():
    tf_config = json.dumps({"cluster": {"ps": ["h:1"], "worker": ["h:2"]},
                            "task": {"type": "ps", "index": 0}})
    assert Cluster.from_env(dict(POD, TF_CONFIG=tf_config)).source == "TF_CONFIG"


@pytest.mark.parametrize("change, match", [
    (dict(REPLICATED_JOB_NAME="launcher"), r"REPLICATED_JOB_NAME: 'launcher' is not a role"),
    (dict(JOB_INDEX="1"), r"JOB_INDEX=1: the runtime has one Job per role"),
    (dict(JOB_COMPLETION_INDEX="2"), r"JOB_COMPLETION_INDEX=2: the job has 2 ps tasks"),
    (dict(JOB_COMPLETION_INDEX="１"), r"JOB_COMPLETION_INDEX: expected an integer in "
                                     r"\[0, 100000\], got '１'"),
    (dict(TFPS_NUM_PS="0"), r"TFPS_NUM_PS: expected an integer in \[1, 100000\], got '0'"),
    (dict(TFPS_NUM_WORKERS="1_0"), r"TFPS_NUM_WORKERS: expected .* got '1_0'"),
    (dict(TFPS_EVALUATOR="2"), r"TFPS_EVALUATOR: expected an integer in \[0, 1\], got '2'"),
    (dict(TFPS_PORT="70000"), r"TFPS_PORT: expected an integer in \[1, 65535\]"),
    (dict(JOBSET_NAME="Rec"), r"JOBSET_NAME: expected a DNS-1035 label"),
    (dict(TFPS_SUBDOMAIN="a.b"), r"TFPS_SUBDOMAIN: expected a DNS-1035 label"),
    (dict(TFPS_NUM_WORKERS=None), r"TFPS_NUM_WORKERS is not set"),
])
def test_bad_jobset_environment_names_the_variable_and_value(change, match):
    env = {k: v for k, v in {**POD, **change}.items() if v is not None}
    with pytest.raises(errors.ClusterSpecError, match=match) as info:
        Cluster.from_env(env)
    assert str(info.value).startswith("cluster spec JobSet: ")


def test_jobset_host_names_are_jobsets():
    assert jobset.hostname("rec", "worker", 3) == "rec-worker-0-3.rec"


@pytest.mark.parametrize("layer", ["grpc+verbs", "grpc+mpi", "", "GRPC", None, 5])
def test_an_rpc_layer_other_than_grpc_is_refused(layer):
    config = {"cluster": {"ps": ["h:1"], "worker": ["h:2"]}, "task": {"type": "ps", "index": 0},
              "rpc_layer": layer}
    with pytest.raises(errors.ClusterSpecError, match=r"TF_CONFIG: rpc_layer: .* is not "
                                                      r"supported \(tfps runs gRPC servers"):
        Cluster.from_env({"TF_CONFIG": json.dumps(config)})


def test_rpc_layer_grpc_or_none_is_read():
    config = {"cluster": {"ps": ["h:1"], "worker": ["h:2"]}, "task": {"type": "ps", "index": 0}}
    assert Cluster.from_env({"TF_CONFIG": json.dumps(config)}).ps == ("h:1",)
    config["rpc_layer"] = "grpc"
    assert Cluster.from_env({"TF_CONFIG": json.dumps(config)}).ps == ("h:1",)


def test_launchers_in_jobset_pods_watch_each_other(monkeypatch, tmp_path):
    """`tfps-launch --from-env` in a JobSet pod: a lost ps restarts the chief, the chief done
    ends the others, as under TF_CONFIG and Slurm (`tfps.launch.run.peers`)."""
    from tfps.launch import cli
    from tfps.launch.config import config_from_args

    for name, value in dict(POD, REPLICATED_JOB_NAME="chief", JOB_COMPLETION_INDEX="0").items():
        monkeypatch.setenv(name, value)
    (tmp_path / "t.py").write_text("print('hi')\n")
    config = config_from_args(cli.parse(["--from-env", str(tmp_path / "t.py")]))
    assert config.cluster.source == "JobSet" and cli.watch_peers(config) is True
    spec = tmp_path / "spec.yaml"
    spec.write_text("chief: [localhost:3]\nps: [localhost:1]\nworker: [localhost:2]\n")
    for argv in (["--spec", str(spec), "--task", "ps:0"], ["--num-ps", "1"]):
        config = config_from_args(cli.parse([*argv, str(tmp_path / "t.py")]))
        assert cli.watch_peers(config) is None  # plain hosts, all-local: as the supervisor says
