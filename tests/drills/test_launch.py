"""`tfps-launch`: the plan (--dry-run), bad input, lifecycle with real processes, one task per
host, the private network namespace, and the fault-tolerance drills (restarts).

Lifecycle tests use a tiny chief script (no TensorFlow) on a 1 ps + 1 worker cluster: the ps and
worker are real task servers, and what is checked is the launcher's handling of processes. After
each, every pid the launcher printed must be gone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, assert_all_dead, pid_alive, result_line, task_env

from tfps.cluster import free_ports

EXAMPLE = os.path.join(REPO, "examples", "linear_regression.py")
LAUNCH = [sys.executable, "-m", "tfps.launch"]

# A stand-in chief: `exit SECONDS CODE`, `sleep`, `stubborn` (ignores SIGTERM), or `probe`
# (waits until every server of its TF_CONFIG accepts connections, then sleeps).
CHIEF = textwrap.dedent("""
    import json, os, signal, socket, sys, time
    mode = sys.argv[1]
    if mode == "exit":
        time.sleep(float(sys.argv[2]))
        print("chief: exiting with", sys.argv[3])
        sys.exit(int(sys.argv[3]))
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "probe":
        cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
        for address in cluster["ps"] + cluster["worker"]:
            host, port = address.rsplit(":", 1)
            while True:
                try:
                    socket.create_connection((host, int(port)), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
        print("chief: every server is reachable", flush=True)
    print("chief: sleeping", flush=True)
    time.sleep(600)
""")


@pytest.fixture
def chief_script(tmp_path):
    path = tmp_path / "chief.py"
    path.write_text(CHIEF)
    return str(path)


def small(*args):
    """Flags of the cheapest real cluster: 1 ps, 1 worker."""
    return ("--num-ps", "1", "--num-workers", "1", *args)


# ------------------------------------------------------------------------------- real processes
def _spec(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_bad_input_through_the_real_executable_is_one_line_exit_2(tmp_path):
    """The console script itself (not just `main`): exit 2, one line, nothing started."""
    logs = tmp_path / "logs"
    out = subprocess.run([*LAUNCH, "--log-dir", str(logs), "--num-ps", "1_0", EXAMPLE],
                         cwd=REPO, capture_output=True, text=True, env=task_env(), timeout=60)
    assert out.returncode == 2, out
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        "tfps-launch: error: argument --num-ps: expected an integer in [1, 10000], got '1_0'"]
    assert not logs.exists()


@pytest.mark.parametrize("network", ["task", "host"])
def test_port_already_in_use_is_exit_2(network, tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    [a, b] = free_ports(2)
    spec = _spec(tmp_path, f"chief: [localhost:{a}]\nps: [localhost:{busy}]\n"
                           f"worker: [localhost:{b}]\n")
    where = ["--task", "ps:0"] if network == "task" else ["--network", "host"]
    with holder:
        out = subprocess.run([*LAUNCH, "--log-dir", str(tmp_path / "logs"), "--spec", spec,
                              *where, EXAMPLE], cwd=REPO, capture_output=True, text=True,
                             env=task_env(), timeout=60)
    assert out.returncode == 2, out
    [line] = out.stderr.splitlines()
    assert f"ps:0: port {busy} (localhost:{busy}) is already in use" in line, line
    assert not (tmp_path / "logs").exists()


# ------------------------------------------------------------------------------- lifecycle
def test_normal_exit_ends_every_task_and_passes_exit_0(launch, chief_script):
    run = launch(*small(chief_script, "exit", "1", "0"))
    assert run.wait(90) == 0, run.output
    started = run.started()
    assert [t for t, _ in started] == ["ps:0", "worker:0", "chief"]
    assert "[chief] chief: exiting with 0" in run.output
    assert_all_dead([pid for _, pid in started])


def test_task_output_is_prefixed_and_written_to_one_log_per_task(launch, chief_script,
                                                                 tmp_path):
    run = launch(*small(chief_script, "exit", "0", "0"), log_dir=tmp_path / "logs")
    assert run.wait(90) == 0, run.output
    assert (tmp_path / "logs" / "chief.log").read_text().startswith("chief: exiting with 0")
    assert {p.name for p in (tmp_path / "logs").iterdir()} == {
        "chief.log", "ps-0.log", "worker-0.log", "launcher.log"}
    assert "tfps-launch: started chief pid=" in (tmp_path / "logs" / "launcher.log").read_text()
    # TF's pre-init INFO lines stay in the log files but not on the terminal (no --verbose).
    assert "All log messages before absl::InitializeLog() is called" not in run.output


def test_chief_exit_code_is_passed_through_not_restarted(launch, chief_script):
    run = launch(*small(chief_script, "exit", "1", "3"))
    assert run.wait(90) == 3, run.output
    assert "chief exited with code 3" in run.output
    assert "restarting" not in run.output
    table = run.output.split("tfps-launch: failures (root cause first):")[1]
    assert "chief" in table and "exit code 3" in table and "<- root cause" in table
    assert_all_dead([pid for _, pid in run.started()])


def test_worker_killed_is_reported_and_ends_the_cluster_without_restarts(launch, chief_script,
                                                                         tmp_path):
    run = launch(*small("--max-restarts", "0", chief_script, "sleep"))
    run.wait_for(r"^\[chief\] chief: sleeping")
    worker = run.pid_of("worker:0")
    os.kill(worker, signal.SIGKILL)
    assert run.wait(60) == 143, run.output  # retryable: a fresh start can cure a lost task
    assert "worker:0 died (SIGKILL); restarts are disabled" in run.output
    row = run.wait_for(r"^  worker:0 +worker +0 +(\d+) +SIGKILL .*<- root cause")
    assert int(row.group(1)) == worker
    assert "<- root cause" in (tmp_path / "logs0" / "launcher.log").read_text()
    assert_all_dead([pid for _, pid in run.started()])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=lambda s: s.name)
def test_signal_to_the_launcher_ends_the_cluster(sig, launch, chief_script):
    run = launch(*small(chief_script, "sleep"))
    run.wait_for(r"^\[chief\] chief: sleeping")
    run.proc.send_signal(sig)
    assert run.wait(30) == 128 + sig, run.output
    assert f"got {sig.name}; ending the cluster" in run.output
    assert_all_dead([pid for _, pid in run.started()])


def test_second_sigint_kills_at_once(launch, chief_script):
    run = launch(*small("--grace-period", "60", chief_script, "stubborn"))
    run.wait_for(r"^\[chief\] chief: sleeping")
    run.proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert run.proc.poll() is None  # the chief ignores SIGTERM: the grace period runs
    run.proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    assert run.wait(10) == 130, run.output
    assert time.monotonic() - started < 5
    assert "killing every task now (SIGKILL)" in run.output
    assert_all_dead([pid for _, pid in run.started()])


# A chief that starts a grandchild in a session of its own (out of reach of any process-group
# kill), which writes its pid as this host sees it (/proc/self is the host's procfs).
ESCAPING_CHIEF = textwrap.dedent("""
    import subprocess, sys, time
    pidfile = sys.argv[1]
    subprocess.Popen([sys.executable, "-c",
                      "import os, time; open(%r, 'w').write(os.readlink('/proc/self')); "
                      "time.sleep(1000)" % pidfile], start_new_session=True)
    print("chief: started an escaping child", flush=True)
    time.sleep(600)
""")


@pytest.mark.parametrize("how", ["launcher-sigkill", "normal-end"])
def test_processes_that_leave_their_group_end_with_the_cluster(how, launch, tmp_path):
    script = tmp_path / "escaping.py"
    script.write_text(ESCAPING_CHIEF if how == "launcher-sigkill" else
                      ESCAPING_CHIEF.replace("time.sleep(600)", "time.sleep(3)"))
    pidfile = tmp_path / "grandchild.pid"
    run = launch(*small(str(script), str(pidfile)))
    run.wait_for(r"^\[chief\] chief: started an escaping child")
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, run.output
        time.sleep(0.1)
    grandchild = int(pidfile.read_text())
    assert pid_alive(grandchild)
    try:
        if how == "launcher-sigkill":
            run.proc.send_signal(signal.SIGKILL)
            run.wait(30)
        else:
            assert run.wait(60) == 0, run.output
        assert_all_dead([grandchild, *(pid for _, pid in run.started())], timeout=10)
    finally:
        if pid_alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


# ------------------------------------------------------------------------ network namespace
def _host_addresses() -> list[str]:
    """This host's non-loopback IPv4 addresses."""
    try:
        out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True,
                             text=True, timeout=10).stdout
        found = [line.split()[3].split("/")[0] for line in out.splitlines()]
    except (OSError, IndexError):
        found = [socket.gethostbyname(socket.gethostname())]
    return [a for a in found if not a.startswith("127.")]


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def test_local_cluster_ports_are_not_reachable_from_the_host(launch, chief_script):
    addresses = _host_addresses()
    if not addresses:
        pytest.skip("this host has no non-loopback address to probe")
    run = launch(*small(chief_script, "probe"))
    run.wait_for(r"^\[chief\] chief: (every server is reachable|sleeping)", timeout=90)
    if "cannot create a network namespace" in run.output:
        pytest.skip("network namespaces are not permitted here: " + run.output.splitlines()[0])
    assert "in a private network namespace (loopback only)" in run.output
    ports = [int(_started_addr(run, t).group(1).rsplit(":", 1)[1])
             for t in ("ps:0", "worker:0", "chief")]
    # Inside, the chief reached every server; from the host, nothing answers on any address.
    for host in addresses + ["127.0.0.1"]:
        for port in ports:
            assert not _reachable(host, port), f"{host}:{port} is reachable from the host"
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait(30) == 143
    assert_all_dead([pid for _, pid in run.started()])


def _started_addr(run, task):
    return run.wait_for(rf"^tfps-launch: started {task} pid=\d+ addr=(\S+)")


# --------------------------------------------------------------------------- one per host
def test_one_task_per_launcher_brings_up_a_cluster_that_trains(launch, tmp_path):
    chief, ps, worker = free_ports(3)
    spec = _spec(tmp_path, f"chief: [localhost:{chief}]\nps: [localhost:{ps}]\n"
                           f"worker: [localhost:{worker}]\n")
    servers = [launch("--spec", spec, "--task", task, EXAMPLE) for task in ("ps:0", "worker:0")]
    run = launch("--spec", spec, "--task", "chief", EXAMPLE, "--train_steps", "100")
    assert run.wait(120) == 0, run.output
    result = result_line(run.output.replace("[chief] ", ""))
    assert result["steps"] == 100 and abs(result["w"] - result["w_lstsq"]) <= 0.01, result
    assert "in the host network" in run.output
    for server in servers:
        assert server.proc.poll() is None, server.output  # servers serve until ended
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait(30) == 143
    assert_all_dead([pid for r in (run, *servers) for _, pid in r.started()])


# ---------------------------------------------------------------------- fault-tolerance drills
def test_restart_budget_is_enforced_and_the_table_names_the_root_cause(launch, chief_script):
    run = launch(*small("--max-restarts", "1", "--inject-fault", "ps:0@1s",
                        "--inject-fault", "worker:0@3s", chief_script, "sleep"))
    assert run.wait(60) == 143, run.output  # tfps.exit_codes.RETRYABLE
    assert "ps:0 died (SIGKILL); restarting ps:0 and chief (restart 1/1)" in run.output
    assert "worker:0 died (SIGKILL); restart budget spent (1/1); ending the cluster" in run.output
    table = run.output.split("tfps-launch: failures (root cause first):")[1].splitlines()
    assert table[2].lstrip().startswith("ps:0") and table[2].endswith("<- root cause")
    assert table[3].lstrip().startswith("worker:0")
    assert_all_dead([pid for _, pid in run.started()])


def _drill(launch, tmp_path, victim, *extra):
    """Trains with checkpoints, SIGKILLs `victim` by pid after the first checkpoint, and
    checks that the job still completes every step, with the right answer."""
    run = launch(*extra, EXAMPLE, "--train_steps", "600", "--checkpoint_every", "100",
                 "--model_dir", tmp_path / "model")
    run.wait_for(r"^\[chief\] step: 100 .*saved", timeout=120)
    os.kill(run.pid_of(victim), signal.SIGKILL)
    assert run.wait(180) == 0, run.output
    assert f"{victim} died (SIGKILL); restarting" in run.output
    result = result_line(run.output.replace("[chief] ", ""))
    assert result["steps"] == 600, result
    assert abs(result["w"] - result["w_lstsq"]) <= 0.01, result
    assert_all_dead([pid for _, pid in run.started()])
    return run


@pytest.mark.slow
@pytest.mark.drill
def test_drill_worker_killed_mid_run_is_restarted(launch, tmp_path):
    # The only worker: the job can finish only if the coordinator takes the new one back.
    run = _drill(launch, tmp_path, "worker:0", "--num-ps", "1", "--num-workers", "1")
    assert "restarting worker:0 (restart 1/3)" in run.output
    assert "[chief] restored" not in run.output  # the chief carried on


@pytest.mark.slow
@pytest.mark.drill
def test_drill_ps_killed_mid_run_restarts_ps_and_chief_from_checkpoint(launch, tmp_path):
    run = _drill(launch, tmp_path, "ps:0", "--num-ps", "1", "--num-workers", "1")
    assert "restarting ps:0 and chief (restart 1/3)" in run.output
    assert "[chief] restored" in run.output


@pytest.mark.slow
@pytest.mark.drill
def test_drill_chief_killed_mid_run_resumes_from_checkpoint(launch, tmp_path):
    run = _drill(launch, tmp_path, "chief", "--num-ps", "1", "--num-workers", "1",
                 "--evaluator")
    assert "restarting chief (restart 1/3)" in run.output
    assert "[chief] restored" in run.output
    assert "[evaluator] eval: step=" in run.output  # the side-car scored checkpoints
