"""Many-machine recipes, run locally with real processes: each task started as its Kubernetes
pod or Slurm task would start it (``tfps-launch --from-env SCRIPT ...``).

* Kubeflow: ``TF_CONFIG`` written exactly as the TFJob controller writes it (Go's
  ``json.Marshal`` of ``{cluster, task, environment: "cloud"}``, the evaluator listed in every
  task's cluster: training-operator ``pkg/controller.v1/tensorflow/tensorflow.go``).
* Slurm: the script ``--emit slurm`` prints, run by ``bash`` with a stand-in ``srun`` on PATH
  that starts the step's tasks with Slurm's variables (SLURM_PROCID, SLURM_STEP_NUM_TASKS,
  SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE, SLURM_LOCALID, SLURMD_NODENAME) and, like
  ``srun --wait``, kills what is left of the step once the first task has exited. No
  ``scontrol`` is needed: tfps expands node lists itself (`tfps.slurm`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import TF_ENV, communicate, result_line
from tfps.cluster import free_ports
from tfps.launch import sbatch, tfjob

LAUNCHER = os.path.join(os.path.dirname(sys.executable), "tfps-launch")
_CHIEF_TIMEOUT_S = 150

# The job every task runs: the chief trains (20 closures, each adds 1 to a variable on the ps),
# the evaluator only reports that it ran and what it saw.
TRAIN_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import tfps

    # tfps-launch hands the script the TF_CONFIG of its task (the evaluator's lists the whole cluster).
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
    [job, _] = tfjob.tfjob_manifest(name="t", image="img", script=train_script,
                                    script_args=["20"], num_ps=1, num_workers=2,
                                    evaluator=True)
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
    for key in (("ps", 0), ("worker", 0), ("worker", 1)):
        assert pods[key][0].poll() is None, f"{key} exited early"  # servers serve until stopped


# ---- Slurm ---------------------------------------------------------------------------------
FAKE_SRUN = textwrap.dedent("""\
    #!{python}
    # Stand-in srun: one node (localhost), every task a local process with Slurm's variables.
    # Like srun --wait=S: once the first task exits, the rest get S seconds, then the whole
    # step (every descendant, as Slurm's cgroup would) is killed.
    import os, signal, subprocess, sys, time

    args, opts = sys.argv[1:], {{}}
    while args and args[0].startswith("--"):
        key, _, value = args.pop(0).partition("=")
        opts[key] = value
    ntasks = int(opts.get("--ntasks") or os.environ["SLURM_NTASKS"])
    wait = float(opts.get("--wait") or 30)
    pidfile = os.environ["FAKE_SRUN_PIDS"]

    def descendants(roots):
        children = {{}}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{{pid}}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(pid))
        out, todo = [], list(roots)
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += children.get(pid, [])
        return out

    def kill_step(procs):
        for _ in range(2):
            for pid in descendants([p.pid for p in procs]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    procs = []
    for rank in range(ntasks):
        env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank),
                   SLURM_NODEID="0", SLURMD_NODENAME="localhost",
                   SLURM_STEP_NUM_TASKS=str(ntasks), SLURM_STEP_NODELIST="localhost",
                   SLURM_STEP_TASKS_PER_NODE=str(ntasks), SLURM_STEP_NUM_NODES="1")
        procs.append(subprocess.Popen(args, env=env, start_new_session=True))
        with open(pidfile, "a") as f:
            f.write(f"{{procs[-1].pid}}\\n")
    signal.signal(signal.SIGTERM, lambda *_: (kill_step(procs), sys.exit(143)))
    while all(p.poll() is None for p in procs):
        time.sleep(0.2)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.2)
    if any(p.poll() is None for p in procs):
        print(f"srun: First task exited {{wait:.0f}}s ago; terminating the step",
              file=sys.stderr, flush=True)
        kill_step(procs)
    codes = [p.wait() for p in procs]
    sys.exit(max(c if c >= 0 else 128 - c for c in codes))
""")


def live_processes(pgids: set[int]) -> list[int]:
    """Pids of processes (zombies aside) whose process group is one of `pgids`."""
    live = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) in pgids:
            live.append(int(pid))
    return live


def consecutive_free_ports(count: int) -> int:
    """A base port such that base .. base+count-1 are all free (Slurm tasks use base+index)."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                socks.append(socket.socket())
                socks[-1].bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports found")


@pytest.fixture
def fake_srun(tmp_path):
    """A bin/ directory with the stand-in srun; its tasks are killed at teardown by pid tree."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(FAKE_SRUN.format(python=sys.executable))
    srun.chmod(0o755)
    pidfile = tmp_path / "srun-task-pids"
    yield str(bin_dir), str(pidfile)
    if pidfile.exists():
        for pid in map(int, pidfile.read_text().split()):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_slurm_sbatch_script_trains_to_completion(procs, tmp_path, train_script, fake_srun):
    bin_dir, pidfile = fake_srun
    num_ps, num_workers = 1, 1
    base = consecutive_free_ports(1 + num_ps + num_workers)
    script = sbatch.sbatch_script(script=train_script, script_args=["20"], num_ps=num_ps,
                                num_workers=num_workers, evaluator=True, port_base=base,
                                stop_grace_s=3)
    (tmp_path / "job.sbatch").write_text(script)
    num_tasks = 1 + num_ps + num_workers
    # What sbatch sets in the batch script's environment for the allocation.
    env = launcher_env(SLURM_JOB_ID="4242", SLURM_NTASKS=str(num_tasks),
                       SLURM_JOB_NODELIST="localhost", SLURM_TASKS_PER_NODE=str(num_tasks),
                       TMPDIR=str(tmp_path), FAKE_SRUN_PIDS=pidfile,
                       TF_CONFIG='{"cluster": {"worker": ["stale:1"]}, "task": {}}')
    env["PATH"] = bin_dir + os.pathsep + env["PATH"]
    job = procs.start(["bash", str(tmp_path / "job.sbatch")], cwd=tmp_path, env=env,
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = communicate(job, _CHIEF_TIMEOUT_S + 30, "sbatch script")
    # The job's status is the chief's, although srun killed the ps and worker tasks.
    assert job.returncode == 0, out[-4000:]
    found = sorted(results(out), key=lambda r: r["role"])
    assert found == [{"role": "chief", "cluster": "chief,ps,worker", "w": 20.0},
                     {"role": "evaluator", "cluster": "chief,evaluator,ps,worker"}], out[-3000:]
    assert "terminating the step" in out
    # Nothing of the step is left running (killed processes may take a moment to be reaped).
    groups = set(map(int, open(pidfile).read().split()))
    deadline = time.monotonic() + 15
    while live_processes(groups) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not live_processes(groups)
