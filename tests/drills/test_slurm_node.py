"""``tfps-launch --emit slurm`` on a real single-node Slurm whose node has 8 CPUs and 20 GB
(tests/drills/slurm_fixture.py, started once for this module, stopped by pid):

* the request fits the node: with ``sinfo`` answering, the default resources of
  ``--num-ps 2 --num-workers 2 --nodes 1`` (5 tasks x 4 CPUs, 20 GiB) are cut to what the node
  has and the job completes; a request no node can meet (``--cpus-per-task 4``) exits 2 with
  one line, and nothing is submitted;
* preemption: ``--requeue``, SIGUSR1 to the batch shell as Slurm sends it before a time limit
  (``scancel --signal=USR1 --batch``) -> the chief checkpoints and exits 138 -> the job
  requeues itself -> it resumes from that checkpoint -> COMPLETED with the exact step count;
* every time limit the emitter takes, sbatch takes, and the other way round.

Skips where this machine cannot run Slurm (fails instead under .ci/run, TFPS_REQUIRE_ENGINES=1).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
import slurm_fixture
from conftest import REPO, result_line
from test_slurm import job_env, read, submit, wait_job

LINEAR = os.path.join(REPO, "examples", "linear_regression.py")
RECSYS = os.path.join(REPO, "examples", "recsys.py")
VENV_BIN = os.path.dirname(sys.executable)
NODE_CPUS, NODE_MB = 8, 20000


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = slurm_fixture.unavailable()
    if reason and os.environ.get("TFPS_REQUIRE_ENGINES") == "1":
        pytest.fail(f"TFPS_REQUIRE_ENGINES=1 (.ci/run): {reason}")
    if reason:
        pytest.skip(reason)
    handle = slurm_fixture.start(str(tmp_path_factory.mktemp("slurm8")), cpus=NODE_CPUS,
                                 memory_mb=NODE_MB)
    yield handle
    problems = slurm_fixture.stop(handle)
    assert not [p for p in handle.procs.values() if p.poll() is None]
    assert problems == [], problems


def emit(slurm, *args: str) -> subprocess.CompletedProcess:
    """``tfps-launch --emit slurm ARGS`` where this Slurm's ``sinfo`` answers (a login node)."""
    return subprocess.run([os.path.join(VENV_BIN, "tfps-launch"), "--emit", "slurm", *args],
                          capture_output=True, text=True, timeout=60, env=job_env(slurm))


def jobs(slurm) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], env=slurm.env,
                         capture_output=True, text=True, timeout=30)
    return out.stdout.split()


@pytest.mark.slow
@pytest.mark.drill
def test_default_resources_fit_the_node_and_the_job_completes(slurm, tmp_path):
    before = jobs(slurm)
    refused = emit(slurm, "--num-ps", "2", "--num-workers", "2", "--nodes", "1",
                   "--cpus-per-task", "4", LINEAR)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (
        "tfps-launch: error: --emit slurm: no node of the default partition can ever run this "
        "job: it asks 5 tasks x 4 CPUs and at least 5120 MB on each of 1 node; the largest is "
        f"{slurm.node} (8 CPUs, 20000 MB) (sinfo)\n")
    assert jobs(slurm) == before  # nothing submitted

    out = emit(slurm, "--num-ps", "2", "--num-workers", "2", "--nodes", "1", LINEAR,
               "--train_steps", "300")
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --cpus-per-task=1\n" in out.stdout and "#SBATCH --mem=20000M\n" in out.stdout
    t0 = time.monotonic()
    job, output = submit(slurm, tmp_path, out.stdout)
    state = wait_job(slurm, job, output)
    text = read(output)
    assert (state["JobState"], state["ExitCode"]) == ("COMPLETED", "0:0"), text[-4000:]
    assert result_line(text.replace("[chief] ", ""))["steps"] == 300
    print(f"fit drill: 5 tasks x 1 CPU, 20000M on the 8-CPU node: COMPLETED in "
          f"{time.monotonic() - t0:.1f}s")


@pytest.mark.slow
@pytest.mark.drill
def test_usr1_checkpoints_requeues_resumes_and_completes_with_the_exact_steps(slurm, tmp_path):
    steps = 1200
    out = emit(slurm, "--requeue", "--num-ps", "1", "--num-workers", "1", "--nodes", "1",
               RECSYS, "--train_steps", str(steps), "--model_dir", str(tmp_path / "model"),
               "--checkpoint_every", "100000", "--log_every", "50", "--num_ids", "5000",
               "--eval_examples", "2048", "--steps_per_closure", "10")
    assert out.returncode == 0, out.stderr
    t0 = time.monotonic()
    job, output = submit(slurm, tmp_path, out.stdout)
    signalled, pending, released = [], [], []

    def preempt_then_release(text):
        if not signalled and re.search(r"\[chief\] train \| step: (?:[1-9]\d\d)\b", text):
            # What Slurm does N s before a time limit with --signal=B:USR1@N.
            subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=slurm.env,
                           check=True, timeout=30)
            signalled.append(time.monotonic() - t0)
        state = slurm_fixture.job_state(slurm, job)
        if signalled and state.get("JobState") == "PENDING" and state.get("Restarts") == "1":
            pending.append(time.monotonic())
        # Slurm makes a requeued job eligible again 121 s later (EligibleTime: its credential
        # lifetime + 1); the drill does not wait that long. Not in the same second as the
        # requeue, though: slurmd refuses a credential no newer than its revocation ("Job
        # credential revoked", whole seconds).
        if pending and not released and time.monotonic() - pending[0] > 2:
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"],
                           env=slurm.env, check=True, timeout=30)
            released.append(time.monotonic() - t0)

    state = wait_job(slurm, job, output, until=preempt_then_release)
    text = read(output)
    assert signalled and released, text[-4000:]
    assert (state["JobState"], state["ExitCode"], state["Restarts"]) == (
        "COMPLETED", "0:0", "1"), text[-6000:]
    m = re.search(r"\[chief\] tfps: preempted \(SIGUSR1\): checkpoint \S+ written at step "
                  r"(\d+); exiting 138 to be requeued", text)
    assert m, text[-6000:]
    at = int(m.group(1))
    assert 0 < at < steps
    assert "tfps: got SIGUSR1 (preemption notice): passing it to the chief's launcher" in text
    assert f"tfps: the chief checkpointed and exited 138 (preempted): requeueing job {job}" in text
    result = result_line(text.replace("[chief] ", ""))
    assert (result["steps"], result["start_step"]) == (steps, at), result
    print(f"requeue drill: USR1 at {signalled[0]:.1f}s, checkpoint at step {at}, released at "
          f"{released[0]:.1f}s, COMPLETED steps={steps} start_step={at} in "
          f"{time.monotonic() - t0:.1f}s")


@pytest.mark.drill
def test_the_time_limits_the_emitter_takes_sbatch_takes(slurm, tmp_path):
    """What tfps takes, sbatch takes; what sbatch refuses, tfps refuses at emit. (tfps takes
    sbatch(1)'s documented formats only: sbatch also takes "-2", "2-" or "1-".)"""
    script = tmp_path / "t.sbatch"
    script.write_text("#!/bin/bash\ntrue\n")
    verdicts = {}
    for value in ("90", "0", "30:00", "4:00:00", "2-12", "2-12:30", "2-12:30:00", "UNLIMITED",
                  "infinite", "-1", "1:60", "25:00:00", "abc", "1:2:3:4", "1.5", "1d", "1:",
                  ":30", "2-1:2:3:4", "--1", "-2", "2-"):
        ours = emit(slurm, "--time", value, "--nodes", "1", LINEAR).returncode == 0
        theirs = subprocess.run(["sbatch", "--test-only", f"--time={value}", "-n", "1",
                                 str(script)], env=slurm.env, capture_output=True, text=True,
                                timeout=30).returncode == 0
        verdicts[value] = (ours, theirs)
        assert theirs or not ours, value  # an emitted script never fails on its --time
    assert sum(ours for ours, _ in verdicts.values()) == 12, verdicts
    assert [v for v, (ours, theirs) in verdicts.items() if theirs and not ours] == ["-2", "2-"]
