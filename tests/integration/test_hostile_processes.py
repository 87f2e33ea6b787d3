"""Hostile input through the real executables (issue 16): every case of
``tests/hostile_cases.py`` as ``python -m tfps.launch ...`` or ``python -m tfps.server ...``
in its own session and directory, a few at a time: exit 2, exactly one line on stderr, no
traceback, within 30 s, no task started, no log directory, and no process of the case left
when it is over (each case carries a marker in its environment; every process that has it is
found through /proc, and killed by pid if it outlived the case).

``tests/unit/test_hostile.py`` runs the same table in-process; this file adds what only a
process shows: interpreter start-up (signal handlers, import-time warnings), stderr as the
user sees it, real file permissions (as root, the launcher runs without CAP_DAC_OVERRIDE for
the unreadable-file cases), and processes that might be left behind.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import hostile_cases as H
import pytest
from conftest import REPO, kill_group, pid_alive

MODULES = {"launch": "tfps.launch", "server": "tfps.server", "export": "tfps.export"}
PROGS = {"launch": "tfps-launch", "server": "tfps.server", "export": "tfps.export"}
# Cases run this many at a time (each is one short Python process).
PARALLEL = 3
MARKER = "TFPS_HOSTILE_MARKER"


def _marked(marker: str) -> list[int]:
    """Pids of live processes whose environment holds `marker`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(name))
        except OSError:
            pass
    return [p for p in found if pid_alive(p)]


def _run(case: H.Case, root: str, ports: H.Ports) -> dict:
    d = tempfile.mkdtemp(prefix=case.id[:40] + "-", dir=root)
    subst = H.substituter(d, ports)
    H.materialize(case, d, subst)
    argv, extra = H.argv_and_env(case, subst)
    marker = f"{case.id}-{os.getpid()}-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if not H.is_engine_variable(k)}
    env.pop("TF_USE_LEGACY_KERAS", None)  # as a user's shell has it: unset, unless the case sets it
    env.update(extra, **{MARKER: marker, "PYTHONPATH": REPO})
    command = [sys.executable, "-m", MODULES[case.program], *argv]
    if case.needs_no_dac_override and os.geteuid() == 0:
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--",
                   *command]
    before = H.listing(d)
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=d, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=H.MAX_WALL_S)
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_group(proc, grace=1.0)
        out, err = proc.communicate()
        timed_out = True
    wall = time.monotonic() - start
    deadline = time.monotonic() + 3  # a process of the case may take a moment to exit
    while (left := _marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:  # ours: they carry this case's marker
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    kill_group(proc, grace=0.5)
    after = H.listing(d)
    shutil.rmtree(d, ignore_errors=True)
    return {"rc": proc.returncode, "out": out.decode("utf-8", "replace"),
            "err": err.decode("utf-8", "replace"), "wall": wall, "timed_out": timed_out,
            "left": left, "new_files": sorted(after - before)}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case, run PARALLEL at a time; {case id: what happened}."""
    root = str(tmp_path_factory.mktemp("hostile"))
    os.chmod(root, 0o755)  # the unreadable-file cases run without CAP_DAC_OVERRIDE
    holder, busy = H.hold_busy_port()
    with holder, concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        ports = H.Ports(busy, H.free_port(), H.free_port())
        futures = {c.id: pool.submit(_run, c, root, ports) for c in H.CASES}
        return {cid: f.result() for cid, f in futures.items()}


@pytest.mark.parametrize("case", H.CASES, ids=str)
def test_hostile_input_through_the_executable(case, results):
    r = results[case.id]
    shown = f"rc={r['rc']} wall={r['wall']:.1f}s\nstderr:\n{r['err'][-2000:]}\nstdout:\n" \
            f"{r['out'][-1000:]}"
    assert not r["timed_out"], shown
    assert r["rc"] == 2, shown
    assert "Traceback" not in r["err"] + r["out"], shown
    lines = r["err"].splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{PROGS[case.program]}: error: "), shown
    assert len(lines[0]) < 1200, shown
    assert r["out"] == "", shown
    assert " started " not in r["err"], shown
    assert r["wall"] < H.MAX_WALL_S, shown
    assert r["left"] == [], f"processes left running: {r['left']}\n{shown}"
    assert r["new_files"] == [], f"left behind: {r['new_files']}\n{shown}"


def _catches(pid: int, sig: int) -> bool:
    """True once process `pid` has a handler for `sig` (its SigCgt mask in /proc)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next(l for l in f if l.startswith("SigCgt:")).split()[1]
    except (OSError, StopIteration):
        return False
    return bool(int(mask, 16) >> (sig - 1) & 1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=lambda s: s.name)
def test_a_signal_as_soon_as_tfps_code_runs_is_one_line_and_its_exit_code(sig, tmp_path):
    """The launcher records SIGINT/SIGTERM/SIGHUP from `import tfps` on: a signal that lands
    while it is still importing gives one line and 128 + signal, no KeyboardInterrupt
    traceback, and nothing started. (Python catches no SIGHUP by default: the moment the
    launcher catches it is the moment tfps's recorders are in place.)"""
    chief = tmp_path / "chief.py"
    chief.write_text(H.CHIEF)
    env = {k: v for k, v in os.environ.items() if not H.is_engine_variable(k)}
    env["PYTHONPATH"] = REPO
    proc = subprocess.Popen([sys.executable, "-m", "tfps.launch", "--log-dir",
                             str(tmp_path / "logs"), "--num-ps", "1", "--num-workers", "1",
                             str(chief)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not _catches(proc.pid, signal.SIGHUP):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.001)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    assert err.splitlines() == [
        f"tfps-launch: got {sig.name} before anything started; nothing was started"], err
    assert out == ""
    assert not (tmp_path / "logs").exists()
