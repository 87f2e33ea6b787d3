"""tfps on a real Slurm: a private single-node cluster (slurmctld, slurmd, munged from Debian's
packages; tests/drills/slurm_fixture.py) started once for this module, stopped by pid.

* the script ``tfps-launch --emit slurm`` prints, submitted with ``sbatch``: it completes, a
  ps task server SIGKILLed mid-run is recovered (the chief's launcher restarts the chief from
  its checkpoint once the ps is back), and the step ends cleanly when the chief is done;
* a user's own ``TFPS_NUM_PS=2 srun -n 5 tfps-launch --from-env SCRIPT``: srun returns 0
  soon after the chief's result (the other launchers hear the chief's launcher and exit).

Where this machine cannot run Slurm (not root, packages missing), the tests skip and say why;
.ci/run installs the packages and sets TFPS_REQUIRE_ENGINES=1, which turns a skip into a
failure: CI always runs them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import slurm_fixture
from conftest import REPO, result_line

EXAMPLE = os.path.join(REPO, "examples", "linear_regression.py")
VENV_BIN = os.path.dirname(sys.executable)
_JOB_TIMEOUT_S = 420
_FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
             "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
# srun and slurmstepd say nothing about a step whose tasks all exit 0; they print
# "First task exited 10s ago", "Terminating StepId", "tasks 1-4: Killed" when they end the
# tasks themselves (the old script's srun --wait=10 did that to every ps and worker).
_SLURM_NOISE = re.compile(r"^(?:srun|slurmstepd)\S*: .*$", re.MULTILINE)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = slurm_fixture.unavailable()
    if reason and os.environ.get("TFPS_REQUIRE_ENGINES") == "1":
        pytest.fail(f"TFPS_REQUIRE_ENGINES=1 (.ci/run): {reason}")
    if reason:
        pytest.skip(reason)
    handle = slurm_fixture.start(str(tmp_path_factory.mktemp("slurm")))
    yield handle
    problems = slurm_fixture.stop(handle)
    assert not [p for p in handle.procs.values() if p.poll() is None]
    assert problems == [], problems


def job_env(slurm, **extra) -> dict:
    """Slurm's client environment plus the venv, as a user's shell with it activated: a job
    inherits the submitting environment."""
    env = dict(slurm.env, **extra)
    env.pop("TF_CONFIG", None)
    env["PATH"] = VENV_BIN + os.pathsep + env["PATH"]
    return env


def emit_slurm(*args: str) -> str:
    out = subprocess.run([os.path.join(VENV_BIN, "tfps-launch"), "--emit", "slurm", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def submit(slurm, tmp_path, script: str) -> tuple[str, str]:
    """Submits `script` from `tmp_path`; returns (job id, path of its output file)."""
    (tmp_path / "job.sbatch").write_text(script)
    out = subprocess.run(["sbatch", "--parsable", str(tmp_path / "job.sbatch")], cwd=tmp_path,
                         env=job_env(slurm), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    name = re.search(r"#SBATCH --job-name=(\S+)", script).group(1)
    return job, str(tmp_path / f"{name}-{job}.out")


def read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_job(slurm, job: str, output: str, until=None, timeout=_JOB_TIMEOUT_S) -> dict:
    """Polls the job until it finishes; calls ``until(text)`` on its output meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = slurm_fixture.job_state(slurm, job)
        if until is not None:
            until(read(output))
        if state.get("JobState") in _FINISHED:
            return state
        time.sleep(0.5)
    pytest.fail(f"job {job} not finished after {timeout}s:\n{read(output)[-4000:]}")


def task_server_pid(slurm, job: str, rank: int) -> int | None:
    """The pid of the tfps.server process of `rank` in `job` (found by its environment)."""
    for pid in slurm_fixture.job_pids(slurm):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if b"tfps.server" in cmd and f"SLURM_JOB_ID={job}".encode() in env and \
                f"SLURM_PROCID={rank}".encode() in env:
            return pid
    return None


def launcher_lines(text: str) -> list[str]:
    return [l for l in text.splitlines() if l.startswith("tfps-launch: ")]


@pytest.mark.slow
@pytest.mark.drill
def test_emitted_job_recovers_from_a_lost_ps_and_completes(slurm, tmp_path):
    model = tmp_path / "model"
    script = emit_slurm("--nodes", "1", EXAMPLE, "--model_dir", str(model),
                        "--checkpoint_every", "100", "--train_steps", "3000")
    job, output = submit(slurm, tmp_path, script)
    killed = []

    def kill_ps_after_a_checkpoint(text):
        if not killed and re.search(r"\[chief\] step: (?:[5-9]\d\d|\d{4}) .*saved", text):
            pid = task_server_pid(slurm, job, rank=1)  # rank 1: ps:0
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    t0 = time.monotonic()
    state = wait_job(slurm, job, output, until=kill_ps_after_a_checkpoint)
    text = read(output)
    assert killed, text[-4000:]
    assert (state["JobState"], state["ExitCode"]) == ("COMPLETED", "0:0"), text[-6000:]
    result = result_line(text.replace("[chief] ", ""))
    assert result["steps"] == 3000 and abs(result["w"] - result["w_lstsq"]) <= 0.01, result
    lines = launcher_lines(text)
    assert "tfps-launch: ps:0 died (SIGKILL); restarting ps:0 (restart 1/3)" in lines
    assert any(l.startswith("tfps-launch: ps:0 became unreachable (") and
               "chief died (exit code 1); restarting chief once ps:0 listens again (restart "
               "1/3)" in l for l in lines), lines
    assert re.search(r"\[chief\] restored .*ckpt-\d+ at step \d+", text)
    # Every other task ended on the chief's word, not by srun's SIGKILL.
    assert sum("chief finished (exit code 0" in l for l in lines) == 4, lines
    assert _SLURM_NOISE.findall(text) == []
    print(f"lost-ps drill: COMPLETED in {time.monotonic() - t0:.1f}s, {result}")


@pytest.mark.slow
def test_users_own_srun_ends_soon_after_the_chief(slurm, tmp_path):
    base = _consecutive_free_ports(5)
    env = job_env(slurm, TFPS_NUM_PS="2", TFPS_PORT_BASE=str(base))
    t0 = time.monotonic()
    proc = subprocess.Popen(["srun", "-n", "5", "tfps-launch", "--from-env", EXAMPLE,
                             "--train_steps", "200"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines, result_at = [], None
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if result_at is None and line.startswith("[chief] result:"):
                result_at = time.monotonic()
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    ended_at = time.monotonic()
    text = "\n".join(lines)
    assert rc == 0, text[-4000:]
    assert result_at is not None and ended_at - result_at < 60, text[-3000:]
    assert result_line(text.replace("[chief] ", ""))["steps"] == 200
    assert sum("chief finished (exit code 0" in l for l in launcher_lines(text)) == 4
    print(f"user srun: result after {result_at - t0:.1f}s, srun returned 0 "
          f"{ended_at - result_at:.1f}s later")


@pytest.mark.slow
def test_emitted_job_with_evaluator_ends_every_step_when_the_chief_is_done(slurm, tmp_path):
    script = emit_slurm("--nodes", "1", "--num-ps", "1", "--num-workers", "1", "--evaluator",
                        EXAMPLE, "--model_dir", str(tmp_path / "model"),
                        "--checkpoint_every", "50", "--train_steps", "200")
    job, output = submit(slurm, tmp_path, script)
    state = wait_job(slurm, job, output)
    text = read(output)
    assert (state["JobState"], state["ExitCode"]) == ("COMPLETED", "0:0"), text[-6000:]
    assert "[chief] result:" in text and "[evaluator] eval: step=" in text
    assert _SLURM_NOISE.findall(text) == []
    deadline = time.monotonic() + 15  # slurmstepd ends a moment after the job's state
    while slurm_fixture.job_pids(slurm) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = {p: _cmdline(p) for p in slurm_fixture.job_pids(slurm)}
    assert left == {}, left  # nothing of the job is left running


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


def _consecutive_free_ports(count: int) -> int:
    """A base port such that base .. base+count-1 are free (Slurm tasks use base+index)."""
    import random
    import socket
    for _ in range(200):
        base = random.randrange(20000, 30000)
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
