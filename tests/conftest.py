"""Shared fixtures: real clusters on loopback, free ports, and cleanup by process group."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tests/unit runs with TensorFlow impossible to import (tests/unit_lane.py).
pytest_plugins = ("unit_lane",)
TF_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "GRPC_FAIL_FAST": "use_caller",
          "TF_USE_LEGACY_KERAS": "1"}
os.environ.update(TF_ENV)


def task_env(tf_config: dict | None = None, **extra) -> dict:
    """The environment of a task process: ours, the TF settings, and its TF_CONFIG."""
    import json
    env = dict(os.environ, **TF_ENV, **extra)
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Ends `proc` and everything in its process group: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of a dead leader
        except (ProcessLookupError, PermissionError):
            pass
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class ProcessGroup:
    """Processes started in their own sessions, all ended by pgid at teardown."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, argv, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def stop_all(self):
        for proc in self.procs:
            kill_group(proc)


@pytest.fixture
def procs():
    """Start processes with ``procs.start(argv, ...)``; all are ended after the test."""
    group = ProcessGroup()
    yield group
    group.stop_all()


@pytest.fixture
def local_cluster(procs, tmp_path):
    """Factory: ``local_cluster(num_ps=2, num_workers=2)`` starts real ps/worker processes
    (``python -m tfps.server``) on free loopback ports and returns the `tfps.Cluster`.
    Run the chief yourself with ``task_env(cluster.tf_config("chief", 0))``."""
    import tfps

    def start(num_ps: int = 2, num_workers: int = 2, evaluator: bool = False):
        cluster = tfps.Cluster.local(num_ps=num_ps, num_workers=num_workers,
                                     evaluator=evaluator)
        for task, _ in cluster.tasks():
            if task.type in ("ps", "worker"):
                log = open(tmp_path / f"{task.type}{task.index}.log", "w")
                procs.start([sys.executable, "-m", "tfps.server"], cwd=REPO,
                            env=task_env(cluster.tf_config(task.type, task.index)),
                            stdout=log, stderr=subprocess.STDOUT)
        return cluster

    return start


def run_chief(argv, cluster, procs=None, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    """Runs `argv` as the chief of `cluster` and returns its completed process (text output)."""
    env = task_env(cluster.tf_config("chief", 0), **kwargs.pop("env_extra", {}))
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out = communicate(proc, timeout, "chief")
    finally:
        kill_group(proc)
    return subprocess.CompletedProcess(argv, proc.returncode, out, None)


def communicate(proc: subprocess.Popen, timeout: float, what: str) -> str:
    """`proc`'s whole output; on timeout its process group is ended and the test fails."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, _ = proc.communicate()
        pytest.fail(f"{what} timed out after {timeout}s:\n{out[-4000:]}")
    return out


def result_line(output: str) -> dict:
    """Parses the last ``result: k=v k=v`` line of an example's output into a dict."""
    lines = [l for l in output.splitlines() if l.startswith("result:")]
    assert lines, f"no result: line in output:\n{output[-3000:]}"
    fields = dict(kv.split("=", 1) for kv in lines[-1][len("result:"):].split())
    return {k: _number(v) for k, v in fields.items()}


def chief_result(output: str) -> dict:
    """The chief's last ``[chief] result: k=v ...`` line of a launcher's output, parsed."""
    lines = [line[len("[chief] "):] for line in output.splitlines()
             if line.startswith("[chief] result:")]
    assert lines, output[-3000:]
    return result_line(lines[-1])


def assert_lease_refused(output: str, model_dir) -> None:
    """A second job on a live `model_dir` said so in exactly one line, naming the holder."""
    lines = [line for line in output.splitlines() if "is in use by another job" in line]
    assert len(lines) == 1, output[-3000:]
    assert re.fullmatch(rf"\[chief\] tfps: model_dir {model_dir} is in use by another job "
                        rf"\(host \S+, pid \d+, started [\d:\- ]+, heartbeat \d+s ago\); one "
                        rf"writer per model_dir: wait for it to end, or choose another "
                        rf"model_dir", lines[0]), lines[0]


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


# ------------------------------------------------------------------ tfps-launch (added for issue 3)
class LaunchRun:
    """A running ``tfps-launch``: its merged output, read by a thread, and the pids it started."""

    _STARTED = None

    def __init__(self, proc: subprocess.Popen):
        import threading
        LaunchRun._STARTED = re.compile(r"^tfps-launch: started (\S+) pid=(\d+) addr=(\S+)")
        self.proc = proc
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append(None)  # EOF marker
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(l for l in self.lines if l is not None)

    def wait_for(self, pattern: str, timeout: float = 60, count: int = 1):
        """Waits until `count` lines match the regex `pattern`; returns the last match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matches = [m for m in (regex.search(l) for l in self.lines if l) if m]
                if len(matches) >= count:
                    return matches[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] is None):
                    pytest.fail(f"no {count}x {pattern!r} in tfps-launch output:\n"
                                + "\n".join(l for l in self.lines[-80:] if l))
                self._cond.wait(min(left, 0.5))

    def started(self) -> list[tuple[str, int]]:
        """(task, pid) of every ``started`` line so far, restarts included."""
        with self._cond:
            return [(m.group(1), int(m.group(2))) for m in
                    (self._STARTED.match(l) for l in self.lines if l) if m]

    def pid_of(self, task: str) -> int:
        return [pid for name, pid in self.started() if name == task][-1]

    def wait(self, timeout: float = 120) -> int:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"tfps-launch still running after {timeout}s:\n{self.output[-4000:]}")
        self._reader.join(10)
        return self.proc.returncode


def latest_recorded(ckpt_dir: str) -> int:
    """The step of the checkpoint that ``ckpt_dir``'s state file (TF's, rewritten atomically
    at the end of each save) names as the latest."""
    from tfps.checkpoints import checkpoint_number, read_state  # here: tfps configures on import

    prefix = read_state(ckpt_dir)
    assert prefix is not None, f"no checkpoint state file in {ckpt_dir}"
    return checkpoint_number(prefix)


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def assert_all_dead(pids, timeout: float = 5.0) -> None:
    """Every pid in `pids` is gone (waits up to `timeout` for the kernel to finish)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    alive = [p for p in pids if pid_alive(p)]
    assert not alive, f"processes left running: {alive}"


@pytest.fixture
def launch(procs, tmp_path):
    """Factory: ``launch(*args)`` runs ``tfps-launch *args`` (cwd = repo, logs in tmp_path)
    and returns a `LaunchRun`. At teardown the launcher and every task it started are ended."""
    runs: list[LaunchRun] = []

    def start(*args, log_dir=None, env_extra=None, cwd=REPO) -> LaunchRun:
        log_dir = log_dir or tmp_path / f"logs{len(runs)}"
        argv = [sys.executable, "-m", "tfps.launch", "--log-dir", str(log_dir), *map(str, args)]
        proc = procs.start(argv, cwd=cwd, env=task_env(**(env_extra or {})),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        runs.append(LaunchRun(proc))
        return runs[-1]

    yield start
    for run in runs:
        kill_group(run.proc)
        for _, pid in run.started():
            if pid_alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


@pytest.fixture
def frozen():
    """``frozen(pid)`` sends SIGSTOP and returns when (monotonic); at teardown every such pid
    gets SIGCONT first, so that its group can be ended."""
    pids = []

    def stop(pid: int) -> float:
        pids.append(pid)
        os.kill(pid, signal.SIGSTOP)
        return time.monotonic()

    yield stop
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
