"""SIGTERM twice, as Slurm sends it at a time limit: one request, and the tasks keep their
grace period (the time a script needs to save); a SIGTERM after the window still forces."""

from __future__ import annotations

import os
import signal
import textwrap
import time

import pytest
from conftest import assert_all_dead

# A chief that saves for a while when asked to stop (what a checkpointing script does).
CHIEF = textwrap.dedent("""
    import signal, sys, time
    def stop(signum, frame):
        print("chief: saving", flush=True)
        time.sleep(float(sys.argv[1]))
        print("chief: saved", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print("chief: ready", flush=True)
    time.sleep(600)
""")


@pytest.fixture
def chief_script(tmp_path):
    path = tmp_path / "chief.py"
    path.write_text(CHIEF)
    return str(path)


def _started(launch, chief_script, save_s: str):
    run = launch("--num-ps", "1", "--num-workers", "1", "--grace-period", "30", chief_script,
                 save_s)
    run.wait_for(r"^\[chief\] chief: ready", timeout=60)
    return run


def test_a_repeated_sigterm_within_the_window_counts_as_one(launch, chief_script):
    run = _started(launch, chief_script, "2")
    os.kill(run.proc.pid, signal.SIGTERM)
    # Slurm's second comes within milliseconds; sent only once the first was handled (two
    # pending SIGTERMs would merge into one in the kernel, and test nothing).
    run.wait_for(r"^tfps-launch: got SIGTERM; ending the cluster", timeout=10)
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(60) == 143, run.output
    assert "tfps-launch: got SIGTERM; ending the cluster" in run.output
    assert "[chief] chief: saved" in run.output  # it had its grace period
    assert "second signal" not in run.output
    assert_all_dead([pid for _, pid in run.started()])


def test_a_sigterm_after_the_window_still_kills_at_once(launch, chief_script):
    run = _started(launch, chief_script, "20")
    os.kill(run.proc.pid, signal.SIGTERM)
    run.wait_for(r"^\[chief\] chief: saving", timeout=30)
    time.sleep(2.5)  # past the 2 s window
    t0 = time.monotonic()
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(30) == 143, run.output
    assert time.monotonic() - t0 < 10
    assert "second signal: killing every task now (SIGKILL)" in run.output
    assert "[chief] chief: saved" not in run.output
    assert_all_dead([pid for _, pid in run.started()])
