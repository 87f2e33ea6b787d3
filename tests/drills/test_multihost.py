"""Kubeflow pods, run locally with real processes: each task started as its TFJob pod would
start it (``tfps-launch --from-env SCRIPT ...``), with ``TF_CONFIG`` written exactly as the
TFJob controller writes it (Go's ``json.Marshal`` of ``{cluster, task, environment: "cloud"}``,
the evaluator listed in every task's cluster: training-operator
``pkg/controller.v1/tensorflow/tensorflow.go``). One launcher per task, as on Kubernetes: they
watch each other through the cluster's addresses (`tfps.launch.run.peers`).

Slurm runs for real in tests/drills/test_slurm.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, TF_ENV, communicate, result_line

from tfps.cluster import free_ports
from tfps.emit.tfjob import TFJobSpec

LAUNCHER = os.path.join(os.path.dirname(sys.executable), "tfps-launch")
_CHIEF_TIMEOUT_S = 150

# The job every task runs: the chief trains (20 closures, each adds 1 to a variable on the ps),
# the evaluator only reports that it ran and what it saw.
TRAIN_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import tfps

    # tfps-launch hands the script the TF_CONFIG of its task (the evaluator's lists the whole
    # cluster).
    config = json.loads(os.environ["TF_CONFIG"])
    task_type = config["task"]["type"]
    seen = ",".join(sorted(config["cluster"]))
    if task_type == "evaluator":
        print(f"result: role=evaluator cluster={seen}", flush=True)
        sys.exit(0)
    import tensorflow as tf
    strategy = tfps.make_strategy()
    coordinator = tfps.make_coordinator(strategy)
    with strategy.scope():
        w = tf.Variable(0.0)

    @tf.function
    def step():
        strategy.run(lambda: w.assign_add(1.0))

    for _ in range(int(sys.argv[1])):
        coordinator.schedule(step)
    coordinator.join()
    print(f"result: role={task_type} cluster={seen} w={w.numpy():.1f}", flush=True)
""")


@pytest.fixture
def train_script(tmp_path):
    assert os.path.exists(LAUNCHER), f"{LAUNCHER}: the console script is not installed"
    path = tmp_path / "train.py"
    path.write_text(TRAIN_SCRIPT)
    return str(path)


def launcher_env(**extra) -> dict:
    env = dict(os.environ, **TF_ENV)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def results(output: str) -> list[dict]:
    """Every ``result:`` line of `output`, without the launcher's ``[chief] `` prefix."""
    lines = [l.split("] ", 1)[-1] if l.startswith("[") else l for l in output.splitlines()]
    return [result_line(l) for l in lines if l.startswith("result:")]


# ---- Kubeflow TFJob ------------------------------------------------------------------------
def tfjob_tf_config(cluster: dict, task_type: str, index: int) -> str:
    """TF_CONFIG as the TFJob controller writes it: Go marshals map keys sorted, no spaces."""
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index},
                       "environment": "cloud"}, separators=(",", ":"), sort_keys=False)


def test_tfjob_pods_train_to_completion_with_kubeflow_tf_config(procs, tmp_path, train_script):
    ports = free_ports(5)
    # The controller lists every replica type, evaluator included, in every pod's TF_CONFIG.
    cluster = {"chief": [f"localhost:{ports[0]}"], "evaluator": [f"localhost:{ports[1]}"],
               "ps": [f"localhost:{ports[2]}"],
               "worker": [f"localhost:{ports[3]}", f"localhost:{ports[4]}"]}
    # Each pod runs the container command of the emitted manifest.
    [job, _] = TFJobSpec(name="t", image="img", script=train_script, script_args=["20"],
                         num_ps=1, num_workers=2, evaluator=True).manifest()
    command = job["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0][
        "command"]
    argv = [LAUNCHER, *command[1:]]
    pods = {}
    for role, index in (("ps", 0), ("worker", 0), ("worker", 1), ("evaluator", 0)):
        log = open(tmp_path / f"{role}{index}.log", "w+")
        env = launcher_env(TF_CONFIG=tfjob_tf_config(cluster, role, index))
        pods[(role, index)] = (procs.start(argv, cwd=tmp_path, env=env, stdout=log,
                                           stderr=subprocess.STDOUT), log)
    chief = procs.start(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True, env=launcher_env(TF_CONFIG=tfjob_tf_config(cluster, "chief", 0)))
    out = communicate(chief, _CHIEF_TIMEOUT_S, "chief")
    assert chief.returncode == 0, out[-4000:]
    [result] = results(out)
    # The chief trained, and its script never saw the evaluator (a coordinator that does hangs).
    assert result == {"role": "chief", "cluster": "chief,ps,worker", "w": 20.0}, out[-2000:]
    evaluator, log = pods[("evaluator", 0)]
    assert evaluator.wait(60) == 0
    log.seek(0)
    assert results(log.read())[-1] == {"role": "evaluator",
                                       "cluster": "chief,evaluator,ps,worker"}
    # ps and workers never exit on their own; they end when the chief's launcher says the
    # chief is done (so a TFJob's pods finish with it), with exit code 0.
    for key in (("ps", 0), ("worker", 0), ("worker", 1)):
        pod, log = pods[key]
        assert pod.wait(30) == 0, key
        log.seek(0)
        assert "tfps-launch: chief finished (exit code 0, said its launcher at " \
               f"{cluster['chief'][0]})" in log.read()


EXAMPLE = os.path.join(REPO, "examples", "linear_regression.py")


@pytest.mark.slow
@pytest.mark.drill
def test_tfjob_pods_recover_from_a_lost_ps(procs, tmp_path):
    """A ps pod's server SIGKILLed: its launcher restarts it in place, and the chief pod's
    launcher, which saw the ps go, restarts the chief from its checkpoint once it is back."""
    ports = free_ports(4)
    cluster = {"chief": [f"localhost:{ports[0]}"], "ps": [f"localhost:{ports[1]}"],
               "worker": [f"localhost:{ports[2]}", f"localhost:{ports[3]}"]}
    argv = [LAUNCHER, "--from-env", EXAMPLE, "--train_steps", "600", "--checkpoint_every",
            "100", "--model_dir", str(tmp_path / "model")]
    logs = {}
    for role, index in (("ps", 0), ("worker", 0), ("worker", 1)):
        logs[role, index] = open(tmp_path / f"{role}{index}.log", "w+")
        procs.start(argv, cwd=tmp_path, stdout=logs[role, index], stderr=subprocess.STDOUT,
                    env=launcher_env(TF_CONFIG=tfjob_tf_config(cluster, role, index)))
    chief_log = open(tmp_path / "chief.log", "w+")
    chief = procs.start(argv, cwd=tmp_path, stdout=chief_log, stderr=subprocess.STDOUT,
                        env=launcher_env(TF_CONFIG=tfjob_tf_config(cluster, "chief", 0)))
    deadline = time.monotonic() + _CHIEF_TIMEOUT_S
    while not re.search(r"\[chief\] step: 200 .*saved", _read(chief_log)):
        assert chief.poll() is None and time.monotonic() < deadline, _read(chief_log)[-3000:]
        time.sleep(0.5)
    ps_launcher_log = _read(logs["ps", 0])
    server_pid = int(re.search(r"started ps:0 pid=(\d+)", ps_launcher_log).group(1))
    os.kill(server_pid, signal.SIGKILL)
    assert chief.wait(_CHIEF_TIMEOUT_S) == 0, _read(chief_log)[-4000:]
    text = _read(chief_log)
    # Seen refusing (or resetting) a connection, or answering GetStatus as a new process (a
    # restart between two connection looks: tfps.launch.run.rpc reads each answer's
    # incarnation).
    assert re.search(r"ps:0 became unreachable \(localhost:\d+: (connection refused|connection "
                     r"reset by peer|restarted: a new process answers)\), chief died \(exit "
                     r"code 1\); restarting chief once ps:0 listens again", text), text[-3000:]
    assert "[chief] restored" in text
    assert result_line(text.replace("[chief] ", ""))["steps"] == 600
    assert "ps:0 died (SIGKILL); restarting ps:0 (restart 1/3)" in _read(logs["ps", 0])


def _read(log) -> str:
    log.flush()
    with open(log.name, errors="replace") as f:
        return f.read()
