"""Hung tasks are found and replaced (issue 22), with real processes: a worker, a ps and the
chief of ``examples/recsys.py`` frozen with SIGSTOP mid-run (what a frozen VM or a stuck
driver looks like: TCP connects still succeed), and a worker whose closure never finishes
while it still answers, run locally and under an engine (one launcher per task, the chief's
launcher asking the worker's over UDP). Each run ends with exit 0 and the exact step count;
the failure table says ``hung (no progress for N s)``. `--hang-timeout 5` keeps them short.

Every process is ended by its process group at teardown; a stopped one gets SIGCONT first.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import REPO, TF_ENV, assert_all_dead, chief_result, latest_recorded

from tfps.cluster import free_ports

RECSYS = os.path.join(REPO, "examples", "recsys.py")
HUNG_CLOSURE = os.path.join(REPO, "tests", "drills", "hung_closure_job.py")
LAUNCHER = os.path.join(os.path.dirname(sys.executable), "tfps-launch")
# A TF C++ INFO or WARNING line in glog form, as the launcher would prefix it (ERROR lines
# after a task's start are news: a restarted worker's reconnection prints some).
GLOG = re.compile(r"^\[[\w:]+\] [IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] ", re.M)



def recsys(tmp_path, *launcher_flags, steps=1500, checkpoint_every=500):
    return ("--num-ps", "2", "--num-workers", "2", "--hang-timeout", "5", *launcher_flags,
            RECSYS, "--train_steps", str(steps), "--num_ids", "20000", "--log_every", "100",
            "--checkpoint_every", str(checkpoint_every), "--model_dir", str(tmp_path / "model"))



def wait_for_checkpoint(run, tmp_path, timeout=120) -> int:
    directory = str(tmp_path / "model" / "checkpoints")
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(directory, "checkpoint")):
        assert run.proc.poll() is None and time.monotonic() < deadline, run.output[-3000:]
        time.sleep(0.2)
    return latest_recorded(directory)


def scrape(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = re.search(r"^tfps_steps_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else -1.0


@pytest.mark.drill
def test_a_frozen_worker_is_replaced_and_every_step_counts_once(launch, tmp_path, frozen):
    [port] = free_ports(1)
    run = launch(*recsys(tmp_path, "--metrics-port", port))
    run.wait_for(r"^\[chief\] train \| step: ", timeout=120)
    deadline = time.monotonic() + 10  # the chief rewrites its metrics every second
    while (first := scrape(port)) <= 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    assert scrape(port) > first > 0  # live health: the step count rises while it trains
    stopped = frozen(run.pid_of("worker:1"))
    run.wait_for(r"^tfps-launch: worker:1 hung \(no progress for \d+ s\); restarting "
                 r"worker:1 \(restart 1/3\)", timeout=60)
    print(f"worker hang detected {time.monotonic() - stopped:.1f} s after SIGSTOP")
    assert run.wait(240) == 0, run.output[-4000:]
    assert chief_result(run.output)["steps"] == 1500
    assert re.search(r"^  worker:1 +worker +1 +\d+ +hung \(no progress for \d+ s\) .*<- root "
                     r"cause", run.output, re.M), run.output[-2000:]
    assert not GLOG.findall(run.output)
    assert_all_dead([pid for _, pid in run.started()])


@pytest.mark.slow
@pytest.mark.drill
def test_a_frozen_ps_is_replaced_and_the_chief_resumes(launch, tmp_path, frozen):
    run = launch(*recsys(tmp_path, checkpoint_every=300))
    saved = wait_for_checkpoint(run, tmp_path)
    frozen(run.pid_of("ps:1"))
    run.wait_for(r"^tfps-launch: ps:1 hung \(no progress for \d+ s\); restarting ps:1 and "
                 r"chief \(restart 1/3\)", timeout=60)
    assert run.wait(240) == 0, run.output[-4000:]
    result = chief_result(run.output)
    assert result["steps"] == 1500 and result["start_step"] >= saved
    assert "Traceback" not in run.output  # the chief is ended before it sees the ps go
    assert_all_dead([pid for _, pid in run.started()])


@pytest.mark.slow
@pytest.mark.drill
def test_a_frozen_chief_is_restarted_and_takes_its_lease_over(launch, tmp_path, frozen):
    run = launch(*recsys(tmp_path, checkpoint_every=300))
    wait_for_checkpoint(run, tmp_path)
    chief = run.pid_of("chief")
    frozen(chief)
    run.wait_for(r"^tfps-launch: chief hung \(no progress for \d+ s\); restarting chief",
                 timeout=60)
    assert run.wait(240) == 0, run.output[-4000:]
    assert chief_result(run.output)["steps"] == 1500
    model_dir = tmp_path / "model"
    assert re.search(rf"^\[chief\] tfps: took over the lease of model_dir {model_dir} from host "
                     rf"\S+, pid \d+, .*\(pid \d+ is gone\)$", run.output, re.M), run.output
    assert not (model_dir / ".tfps-lease").exists()  # released at the end
    assert_all_dead([pid for _, pid in run.started()])


@pytest.mark.drill
def test_a_closure_that_never_finishes_is_run_again_elsewhere(launch, tmp_path):
    run = launch("--num-ps", "1", "--num-workers", "2", "--hang-timeout", "3", HUNG_CLOSURE,
                 "10")
    assert run.wait(120) == 0, run.output[-4000:]
    assert chief_result(run.output) == {"total": 10.0, "calls": 11}
    assert re.search(r"^tfps-launch: worker:\d hung \(no progress for \d+ s\); restarting",
                     run.output, re.M)
    log = (tmp_path / "logs0" / "launcher.log").read_text()
    assert "holds a closure with no completion for" in log and "said the chief" in log
    assert_all_dead([pid for _, pid in run.started()])


def _engine_env(cluster: dict, role: str, index: int) -> dict:
    env = dict(os.environ, **TF_ENV)
    env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": role, "index": index}})
    return env


@pytest.mark.drill
def test_under_an_engine_the_chief_launcher_asks_the_worker_launcher(procs, tmp_path):
    ports = free_ports(4)
    cluster = {"chief": [f"localhost:{ports[0]}"], "ps": [f"localhost:{ports[1]}"],
               "worker": [f"localhost:{ports[2]}", f"localhost:{ports[3]}"]}
    argv = [LAUNCHER, "--from-env", "--hang-timeout", "3", HUNG_CLOSURE, "10"]
    logs = {}
    for role, index in (("ps", 0), ("worker", 0), ("worker", 1)):
        logs[role, index] = tmp_path / f"{role}{index}.out"
        procs.start(argv, cwd=tmp_path, env=_engine_env(cluster, role, index),
                    stdout=open(logs[role, index], "w"), stderr=subprocess.STDOUT)
    chief = procs.start(argv, cwd=tmp_path, env=_engine_env(cluster, "chief", 0),
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = chief.communicate(timeout=150)
    assert chief.returncode == 0, out[-4000:]
    assert chief_result(out) == {"total": 10.0, "calls": 11}
    asked = re.search(r"^tfps-launch: (worker:\d) hung \(holds a closure with no completion "
                      r"for \d+ s, said the chief\); asked its launcher at localhost:\d+ to "
                      r"restart it$", out, re.M)
    assert asked, out[-3000:]
    worker = asked.group(1)
    for proc in procs.procs[:3]:
        assert proc.wait(30) == 0  # they end when the chief's launcher says it is done
    text = logs["worker", int(worker[-1])].read_text()
    assert re.search(rf"^tfps-launch: {worker} hung \(no progress for \d+ s\); restarting "
                     rf"{worker} \(restart 1/3\)$", text, re.M), text[-3000:]
