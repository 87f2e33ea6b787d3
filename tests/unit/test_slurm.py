"""A Slurm job step as a cluster (`tfps.cluster.slurm`): host lists, rank placement, and errors that
name the variable. Pure: no Slurm, no TensorFlow."""

from __future__ import annotations

import json
import re
import socket

import pytest

from tfps import Cluster, errors
from tfps.cluster import task_from_env
from tfps.cluster.slurm import (
    evaluator_tf_config,
    expand_hostlist,
    expand_tasks_per_node,
    job_port_base,
    slurm_jobs,
)
from tfps.emit.slurm import SlurmSpec


def slurm_env(rank: int, nodelist: str, per_node: str, num_tasks: int, **extra) -> dict:
    env = {"SLURM_PROCID": str(rank), "SLURM_STEP_NUM_TASKS": str(num_tasks),
           "SLURM_STEP_NODELIST": nodelist, "SLURM_STEP_TASKS_PER_NODE": per_node}
    env.setdefault("TFPS_NUM_PS", "1")
    env.update(extra)
    return env


def read(env):
    return Cluster.from_env(env), task_from_env(env)


@pytest.mark.parametrize("text, hosts", [
    ("n1", ["n1"]),
    ("n[1-3]", ["n1", "n2", "n3"]),
    ("n[1-2],m5,o[3-4,6]", ["n1", "n2", "m5", "o3", "o4", "o6"]),
    ("gpu[08-10]", ["gpu08", "gpu09", "gpu10"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("node-a.cluster,node-b", ["node-a.cluster", "node-b"]),
])
def test_hostlist_expands_in_slurm_order(text, hosts):
    assert expand_hostlist(text) == hosts


@pytest.mark.parametrize("text", ["", "n[1-", "n1]", "n[[1]]", "n[3-1]", "n[a-b]", "a,,b",
                                  "n[1-999999999]", "bad host", "n[1-2]" * 40000])
def test_hostlist_errors_are_short_and_fast(text):
    with pytest.raises(ValueError) as info:
        expand_hostlist(text)
    assert len(str(info.value)) < 200


def test_tasks_per_node():
    assert expand_tasks_per_node("3(x2),2,1") == [3, 3, 2, 1]
    for bad in ("", "2(x0)", "x", "3(x2", "1,,2"):
        with pytest.raises(ValueError):
            expand_tasks_per_node(bad)


def test_slurm_ranks_fill_nodes_in_slurm_order():
    # Slurm's block distribution puts ranks 0-1 on node9 and 2-3 on node10. (TF's
    # SlurmClusterResolver sorts the hosts by name and would put rank 0 on node10.)
    seen = {}
    for rank in range(4):
        cluster, task = read(slurm_env(rank, "node[9-10]", "2(x2)", 4, TFPS_PORT_BASE="7000"))
        seen[rank] = (str(task), cluster.address(task))
    assert seen == {0: ("chief:0", "node9:7000"), 1: ("ps:0", "node9:7001"),
                    2: ("worker:0", "node10:7000"), 3: ("worker:1", "node10:7001")}
    assert cluster == Cluster.from_dict({"chief": ["node9:7000"], "ps": ["node9:7001"],
                                         "worker": ["node10:7000", "node10:7001"]})


def test_slurm_uneven_nodes_and_default_port():
    cluster, task = read(slurm_env(4, "a1,b[01-02]", "3,1(x2)", 5, TFPS_NUM_PS="2"))
    assert cluster.as_dict() == {"chief": ["a1:8888"], "ps": ["a1:8889", "a1:8890"],
                                 "worker": ["b01:8888", "b02:8888"]}
    assert str(task) == "worker:1"


@pytest.mark.parametrize("env, message", [
    (slurm_env(0, "n1", "2", 2), r"Slurm: a step of 2 tasks cannot hold 1 chief, 1 ps and at "
                                 r"least 1 worker"),
    (slurm_env(0, "n1", "4", 4, TFPS_NUM_PS="two"),
     r"TFPS_NUM_PS: expected an integer in \[0, 4\], got 'two'"),
    (slurm_env(0, "n1", "4", 4, TFPS_NUM_PS="１"), r"TFPS_NUM_PS: expected an integer"),
    ({k: v for k, v in slurm_env(0, "n1", "4", 4).items() if k != "TFPS_NUM_PS"},
     r"TFPS_NUM_PS is not set: say how many of the step's tasks are ps tasks"),
    (slurm_env(0, "n[1-2]", "4", 4), r"SLURM_STEP_NODELIST='n\[1-2\]' \(2 hosts\) and "
                                     r"SLURM_STEP_TASKS_PER_NODE='4' .* do not describe a step"),
    # A task that is not where block distribution puts it (srun --distribution=cyclic).
    (slurm_env(1, "n[1-2]", "2(x2)", 4, SLURMD_NODENAME="n2", SLURM_LOCALID="0"),
     r"rank 1 runs on n2 \(local id 0\) but block distribution puts it on n1"),
    ({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "3", "TFPS_NUM_PS": "1"},
     "SLURM_STEP_NODELIST is not set"),
    (slurm_env(0, "n[1-", "3", 3), r"Slurm: Invalid hostlist format 'n\[1-'"),
    (slurm_env(0, "n1", "4", 4, TFPS_PORT_BASE="65534"), r"TFPS_PORT_BASE=65534: 4 tasks"),
    (slurm_env(7, "n1", "4", 4), r"SLURM_PROCID=7 is not in 0..3"),
])
def test_slurm_errors_name_the_variable(env, message):
    with pytest.raises(errors.ClusterSpecError, match=message):
        read(env)


def test_slurm_jobs():
    assert slurm_jobs(6, 2) == {"chief": 1, "ps": 2, "worker": 3}


def test_slurm_evaluator_tf_config_lists_the_training_step_and_itself():
    config = json.loads(evaluator_tf_config({
        "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "gpu[01-02]",
        "SLURM_TASKS_PER_NODE": "2(x2)", "TFPS_NUM_PS": "1", "TFPS_PORT_BASE": "9000"}))
    assert config["task"] == {"type": "evaluator", "index": 0}
    cluster = config.pop("cluster")
    assert cluster.pop("evaluator") == [f"{socket.gethostname()}:9004"]
    assert cluster == {"chief": ["gpu01:9000"], "ps": ["gpu01:9001"],
                       "worker": ["gpu02:9000", "gpu02:9001"]}


def test_without_tfps_port_base_each_job_gets_its_own_ports():
    # A user's own `srun -n 5 tfps-launch --from-env`: every task computes the same base from
    # the job id; the next job on the node gets the next slot.
    first = read(slurm_env(0, "n[1-2]", "3,2", 5, TFPS_NUM_PS="2", SLURM_JOB_ID="4242"))[0]
    second = read(slurm_env(0, "n[1-2]", "3,2", 5, TFPS_NUM_PS="2", SLURM_JOB_ID="4243"))[0]
    base = job_port_base("4242", 3)
    assert first.as_dict() == {"chief": [f"n1:{base}"], "ps": [f"n1:{base + 1}", f"n1:{base + 2}"],
                               "worker": [f"n2:{base}", f"n2:{base + 1}"]}
    assert second.address(task_from_env(slurm_env(0, "n[1-2]", "3,2", 5, TFPS_NUM_PS="2",
                                                  SLURM_JOB_ID="4243"))) == f"n1:{base + 3}"
    assert 10000 <= base and base + 2 <= 32767
    assert job_port_base(None, 3) == job_port_base("x", 3) == 8888  # outside a job


@pytest.mark.parametrize("per_node", [1, 3, 64])
def test_the_emitted_script_computes_the_ports_tfps_would(per_node):
    text = SlurmSpec(script="t.py", num_ps=1, num_workers=per_node * 3 - 2, nodes=3).render()
    m = re.search(r"TFPS_PORT_BASE=\$\(\( (\d+) \+ SLURM_JOB_ID % (\d+) \* (\d+) \)\)", text)
    low, slots, stride = map(int, m.groups())
    assert stride == per_node
    for job in (1, 17, 4242, 99999, 123456789):
        assert low + job % slots * stride == job_port_base(str(job), per_node)
