"""tfps.Cluster: spec files, validation (one test per rule), TF_CONFIG, the environment."""

from __future__ import annotations

import glob
import json
import os

import pytest
from conftest import REPO

import tfps
from tfps import errors
from tfps.cluster import TaskId, task_from_env

SPECS = sorted(glob.glob(os.path.join(REPO, "cluster_specs", "*.yaml"))
               + glob.glob(os.path.join(REPO, "cluster_specs", "*.json")))
GOOD = {"chief": ["h0:2222"], "ps": ["h1:2222", "h2:2222"], "worker": ["h3:2222"]}


def test_there_are_specs():
    names = {os.path.basename(p) for p in SPECS}
    assert {"local.yaml", "two_hosts.yaml", "with_evaluator.json"} <= names


@pytest.mark.parametrize("path", SPECS, ids=os.path.basename)
def test_every_spec_loads_and_hides_the_evaluator(path):
    cluster = tfps.Cluster.from_file(path)
    assert cluster.num_ps >= 1 and cluster.num_workers >= 1
    for task, address in cluster.tasks():
        config = cluster.tf_config(task.type, task.index)
        assert config["task"] == {"type": task.type, "index": task.index}
        if task.type == "evaluator":
            assert config["cluster"] == cluster.as_dict()
            assert tfps.Cluster.from_env({"TF_CONFIG": json.dumps(config)}) == cluster
        else:
            assert "evaluator" not in config["cluster"]
            assert config["cluster"][task.type][task.index] == address
            assert config["cluster"]["ps"] == list(cluster.ps)


def test_evaluator_spec_has_its_evaluator():
    cluster = tfps.Cluster.from_file(os.path.join(REPO, "cluster_specs", "with_evaluator.json"))
    assert len(cluster.evaluator) == 1


def test_local_picks_distinct_free_ports():
    cluster = tfps.Cluster.local(num_ps=3, num_workers=2, evaluator=True)
    addresses = [a for _, a in cluster.tasks()]
    assert len(addresses) == 7 == len(set(addresses))
    assert all(a.startswith("localhost:") for a in addresses)
    assert cluster.tf_config("worker", 1)["cluster"].keys() == {"chief", "ps", "worker"}


def test_local_without_chief():
    cluster = tfps.Cluster.local(num_ps=1, num_workers=1, chief=False)
    assert cluster.chief == () and "chief" not in cluster.tf_config("ps", 0)["cluster"]


@pytest.mark.parametrize("kwargs, needle", [
    ({"num_ps": 0}, "num_ps=0"), ({"num_workers": -1}, "num_workers=-1"),
    ({"num_ps": "2"}, "num_ps='2'")])
def test_local_rejects_bad_counts(kwargs, needle):
    with pytest.raises(errors.ConfigError, match=needle):
        tfps.Cluster.local(**kwargs)


def test_tf_config_for_unknown_task():
    cluster = tfps.Cluster.from_dict(GOOD)
    with pytest.raises(errors.ConfigError, match=r"task 'worker:1' is not in the cluster "
                                                 r"\(it has 1 worker task\)"):
        cluster.tf_config("worker", 1)
    with pytest.raises(errors.ConfigError, match="unknown role 'master'"):
        cluster.tf_config("master", 0)


def _write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# One case per validation rule: (spec text, the message the error must contain).
BAD_SPECS = {
    "unknown_role": ("master: [h:1]\nps: [h:2]\nworker: [h:3]\n",
                     "unknown role 'master' (expected one of chief, ps, worker, evaluator, "
                     "dispatcher, data_worker)"),
    "no_ps": ("worker: [h:3]\n", "ps: at least 1 task required, got 0"),
    "no_worker": ("ps: [h:2]\n", "worker: at least 1 task required, got 0"),
    "two_chiefs": ("chief: [a:1, b:1]\nps: [h:2]\nworker: [h:3]\n",
                   "chief: at most 1 task allowed, got 2"),
    "two_evaluators": ("evaluator: [a:1, b:1]\nps: [h:2]\nworker: [h:3]\n",
                       "evaluator: at most 1 task allowed, got 2"),
    "duplicate": ("ps: ['h:2']\nworker: ['h:2']\n",
                  "worker[0]: address 'h:2' is already used by ps[0]"),
    "port_not_int": ("ps: [h:1, 'h:abc']\nworker: [h:3]\n", "ps[1]: port 'abc' is not an integer"),
    "port_too_big": ("ps: ['h:70000']\nworker: [h:3]\n",
                     "ps[0]: port 70000 is out of range 1-65535"),
    "port_zero": ("ps: ['h:0']\nworker: [h:3]\n", "ps[0]: port 0 is out of range 1-65535"),
    "no_port": ("ps: [h]\nworker: [h:3]\n",
                "ps[0]: address 'h' has no port (expected 'host:port')"),
    "empty_host": ("ps: [':2222']\nworker: [h:3]\n", "ps[0]: empty host in address ':2222'"),
    "role_not_list": ("ps: 'h:2'\nworker: [h:3]\n",
                      "ps: expected a list of 'host:port' strings, got str 'h:2'"),
    "address_not_str": ("ps: [2222]\nworker: [h:3]\n",
                        "ps[0]: expected a 'host:port' string, got int 2222"),
    "top_not_mapping": ("- h:1\n- h:2\n",
                        "expected a mapping of role to a list of 'host:port', got list"),
    "unparsable": ("ps: [h:1\nworker: x\n", "not valid YAML:"),
    "empty_file": ("", "file is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_names_file_field_and_value(tmp_path, case):
    text, needle = BAD_SPECS[case]
    path = _write(tmp_path, text)
    with pytest.raises(errors.ClusterSpecError) as info:
        tfps.Cluster.from_file(path)
    message = str(info.value)
    assert message.startswith(f"cluster spec {path}: ")
    assert needle in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_unreadable_file(tmp_path):
    path = str(tmp_path / "missing.yaml")
    with pytest.raises(errors.ClusterSpecError,
                       match=f"cluster spec {path}: cannot read file: No such file"):
        tfps.Cluster.from_file(path)


def test_bad_json_file(tmp_path):
    path = _write(tmp_path, '{"ps": ["h:1"],', "spec.json")
    with pytest.raises(errors.ClusterSpecError, match="not valid JSON"):
        tfps.Cluster.from_file(path)


def test_tf_config_shaped_file_is_accepted(tmp_path):
    path = _write(tmp_path, json.dumps({"cluster": GOOD, "task": {"type": "ps", "index": 0}}),
                  "tf_config.json")
    assert tfps.Cluster.from_file(path) == tfps.Cluster.from_dict(GOOD)


def test_from_env_reads_kubeflow_tf_config():
    # Exactly what Kubeflow's TFJob controller writes: evaluator listed, "environment": "cloud".
    tf_config = {"cluster": {"chief": ["job-chief-0.ns.svc:2222"],
                             "evaluator": ["job-evaluator-0.ns.svc:2222"],
                             "ps": ["job-ps-0.ns.svc:2222"],
                             "worker": ["job-worker-0.ns.svc:2222", "job-worker-1.ns.svc:2222"]},
                 "task": {"type": "worker", "index": 1}, "environment": "cloud"}
    env = {"TF_CONFIG": json.dumps(tf_config)}
    cluster = tfps.Cluster.from_env(env)
    assert task_from_env(env) == TaskId("worker", 1)
    assert cluster.evaluator == ("job-evaluator-0.ns.svc:2222",)
    assert "evaluator" not in cluster.tf_config("worker", 1)["cluster"]


@pytest.mark.parametrize("text, needle", [
    ("{not json", "cluster spec TF_CONFIG: not valid JSON"),
    ('{"task": {"type": "ps"}}', "cluster spec TF_CONFIG: cluster: expected a mapping"),
    ('{"cluster": {"ps": ["h:1"], "worker": ["h:2"]}, "task": {"type": "worker", "index": 3}}',
     "task: task 'worker:3' is not in the cluster"),
    ('{"cluster": {"ps": ["h:1"], "worker": ["h:x"]}}', "TF_CONFIG: worker[0]: port 'x'"),
])
def test_from_env_bad_tf_config(text, needle):
    with pytest.raises(errors.ClusterSpecError) as info:
        tfps.Cluster.from_env({"TF_CONFIG": text})
        task_from_env({"TF_CONFIG": text})
    assert needle in str(info.value)


def test_from_env_without_anything():
    with pytest.raises(errors.ClusterSpecError,
                       match=r"neither TF_CONFIG, a Slurm job step \(SLURM_PROCID\) nor a JobSet"):
        tfps.Cluster.from_env({})


def test_task_id_parse():
    assert TaskId.parse("chief") == TaskId("chief", 0)
    assert TaskId.parse("worker:3") == TaskId("worker", 3)
    with pytest.raises(errors.ConfigError, match="task 'worker:x': index 'x'"):
        TaskId.parse("worker:x")
    with pytest.raises(errors.ConfigError, match="unknown role 'boss'"):
        TaskId.parse("boss:1")


def test_undecodable_file(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe ps: [h:1]")
    with pytest.raises(errors.ClusterSpecError,
                       match=r"cannot read file: not UTF-8 text \(byte 0 is b'\\xff'\)"):
        tfps.Cluster.from_file(str(path))


# ------------------------------------------------------------------------------ issue 16 edges
def test_engine_keys_beside_cluster_are_left_alone_but_roles_are_refused():
    """Kubeflow writes "environment", Vertex AI "job", TF reads "rpc_layer": accepted. A role
    next to "cluster" was meant to be inside it."""
    config = {"cluster": {"ps": ["h:1"], "worker": ["h:2"]}, "task": {"type": "ps", "index": 0},
              "environment": "cloud", "job": {"args": []}, "rpc_layer": "grpc"}
    assert tfps.Cluster.from_env({"TF_CONFIG": json.dumps(config)}).num_ps == 1
    assert task_from_env({"TF_CONFIG": json.dumps(config)}) == TaskId("ps", 0)
    with pytest.raises(errors.ClusterSpecError, match="TF_CONFIG: role 'worker' beside"):
        tfps.Cluster.from_env({"TF_CONFIG": json.dumps(dict(config, worker=["h:3"]))})


def test_a_task_index_written_as_a_string_of_digits_is_read():
    # Kubeflow writes an integer; "1" is unambiguous and TF's own resolver takes it too.
    text = '{"cluster": {"ps": ["h:1"], "worker": ["h:2", "h:3"]}, ' \
           '"task": {"type": "worker", "index": "1"}}'
    assert task_from_env({"TF_CONFIG": text}) == TaskId("worker", 1)


def test_loopback_names_are_case_insensitive_and_one_host():
    assert tfps.cluster.is_loopback_host("LOCALHOST")
    with pytest.raises(errors.ClusterSpecError, match="already used by ps"):
        tfps.Cluster.from_dict({"ps": ["localhost:5"], "worker": ["LocalHost:5"]})


def test_ports_are_written_without_leading_zeros():
    with pytest.raises(errors.ClusterSpecError, match="port '022' has a leading zero"):
        tfps.Cluster.from_dict({"ps": ["h:022"], "worker": ["h:2"]})


def test_a_long_source_is_shown_by_its_ends():
    source = "/very/" + "long/" * 1000 + "spec.yaml"
    message = str(errors.ClusterSpecError("ps: bad", source))
    assert len(message) < 150 and message.endswith("long/long/spec.yaml: ps: bad"), message
