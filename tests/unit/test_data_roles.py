"""The tf.data service's roles in the cluster model and the launcher's plan (issue 23): spec
files, ``Cluster.local(data_workers=N)``, ``tfps-launch --data-workers N``. No TensorFlow."""

from __future__ import annotations

import json

import pytest

import tfps
from tfps import errors
from tfps.cluster import TaskId
from tfps.launch import cli
from tfps.launch.run import failures


def _spec(**extra):
    return {"chief": ["h:1"], "ps": ["h:2"], "worker": ["h:3"], **extra}


def test_data_roles_are_in_spec_files_but_in_no_tf_config():
    cluster = tfps.Cluster.from_dict(_spec(dispatcher=["h:4"], data_worker=["h:5", "h:6"]))
    assert cluster.data_service == "grpc://h:4"
    for role, index in (("chief", 0), ("ps", 0), ("worker", 0)):
        config = cluster.tf_config(role, index)["cluster"]
        assert "dispatcher" not in config and "data_worker" not in config, config
    with pytest.raises(errors.ConfigError, match="gets no TF_CONFIG"):
        cluster.tf_config("data_worker", 1)
    assert TaskId.parse("data_worker:1") == TaskId("data_worker", 1)


@pytest.mark.parametrize("extra, needle", [
    ({"data_worker": ["h:5"]}, "needs a dispatcher and at least one data_worker"),
    ({"dispatcher": ["h:4"]}, "needs a dispatcher and at least one data_worker"),
    ({"dispatcher": ["h:4", "h:7"], "data_worker": ["h:5"]}, "dispatcher: at most 1"),
    ({"dispatcher": ["h:3"], "data_worker": ["h:5"]}, "already used by worker[0]"),
])
def test_bad_data_roles_are_named(extra, needle):
    with pytest.raises(errors.ClusterSpecError) as info:
        tfps.Cluster.from_dict(_spec(**extra))
    assert needle in str(info.value)


def test_launch_plans_a_dispatcher_and_data_workers_and_tells_the_chief(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("")
    config = cli.config_from_args(cli.parse(["--num-ps", "1", "--num-workers", "1",
                                             "--data-workers", "2", str(script)]))
    plans = {p.label: p for p in cli.plan(config)}
    dispatcher = config.cluster.dispatcher[0]
    assert plans["dispatcher:0"].command[2:5] == ("tfps.data.service", "dispatcher",
                                                  "--address")
    worker = plans["data_worker:1"].command
    assert worker[2:4] == ("tfps.data.service", "data_worker")
    assert worker[-2:] == ("--dispatcher", dispatcher)
    assert "TF_CONFIG" not in plans["data_worker:0"].env
    assert plans["chief"].env["TFPS_DATA_SERVICE"] == f"grpc://{dispatcher}"
    assert "TFPS_DATA_SERVICE" not in plans["worker:0"].env
    chief_cluster = json.loads(plans["chief"].env["TF_CONFIG"])["cluster"]
    assert set(chief_cluster) == {"chief", "ps", "worker"}


@pytest.mark.parametrize("argv, needle", [
    (["--data-workers", "0", "t.py"], "--data-workers"),
    (["--spec", "x.yaml", "--data-workers", "1", "t.py"], "--data-workers cannot be combined "
                                                          "with --spec"),
    (["--data-workers", "1", "--doctor", "t.py"], "--data-workers cannot be combined"),
])
def test_bad_data_worker_flags(argv, needle, capsys):
    assert cli.main(argv) == 2
    assert needle in capsys.readouterr().err


def test_a_dead_data_worker_is_restarted_first():
    decision = failures.decide([failures.Death(TaskId("worker", 0), -9),
                                failures.Death(TaskId("data_worker", 0), -9)])
    assert decision.action == "restart"
    assert decision.restart == (TaskId("data_worker", 0), TaskId("worker", 0))
