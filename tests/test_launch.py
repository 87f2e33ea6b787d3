"""`tfps-launch`: the plan (--dry-run), bad input, lifecycle with real processes, one task per
host, the private network namespace, and the fault-tolerance drills (restarts).

Lifecycle tests use a tiny chief script (no TensorFlow) on a 1 ps + 1 worker cluster: the ps and
worker are real task servers, and what is checked is the launcher's handling of processes. After
each, every pid the launcher printed must be gone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import REPO, assert_all_dead, result_line, task_env
from tfps.cluster import TaskId, free_ports
from tfps.launch import cli
from tfps.launch.failures import Death, Failure, decide, describe_exit, failure_table
from tfps.launch.plan import gpu_devices, parse_fault

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


# ------------------------------------------------------------------------------ plan (pure)
def dry_run(*args, env=None) -> list[dict]:
    out = subprocess.run([*LAUNCH, "--dry-run", *args], cwd=REPO, capture_output=True,
                         text=True, env=env or task_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_dry_run_default_cluster_has_five_tasks_distinct_ports_and_tf_configs():
    plans = dry_run(EXAMPLE)
    assert [p["task"] for p in plans] == ["chief", "ps:0", "ps:1", "worker:0", "worker:1"]
    cluster = plans[0]["tf_config"]["cluster"]
    addresses = [a for role in ("chief", "ps", "worker") for a in cluster[role]]
    assert len(set(a.rsplit(":", 1)[1] for a in addresses)) == 5
    for p in plans:
        task = TaskId.parse(p["task"])
        assert p["tf_config"] == {"cluster": cluster,
                                  "task": {"type": task.type, "index": task.index}}
        assert json.loads(p["env"]["TF_CONFIG"]) == p["tf_config"]
        assert p["env"]["GRPC_FAIL_FAST"] == "use_caller"
        assert p["env"]["TF_USE_LEGACY_KERAS"] == "1"
        assert p["env"]["TF_CPP_MIN_LOG_LEVEL"] == "2"
        assert "CUDA_VISIBLE_DEVICES" not in p["env"]
    assert plans[0]["command"] == [sys.executable, EXAMPLE]
    assert plans[1]["command"] == [sys.executable, "-m", "tfps.server"]


def test_dry_run_gpus_per_worker_gives_each_worker_its_own_devices():
    plans = {p["task"]: p["env"] for p in dry_run("--gpus-per-worker", "1", EXAMPLE)}
    assert plans["worker:0"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert plans["worker:1"]["CUDA_VISIBLE_DEVICES"] == "1"
    for task in ("chief", "ps:0", "ps:1"):
        assert plans[task]["CUDA_VISIBLE_DEVICES"] == ""


def test_dry_run_verbose_evaluator_and_script_args():
    plans = dry_run("--verbose", "--evaluator", EXAMPLE, "--train_steps", "5")
    evaluator = plans[-1]
    assert evaluator["task"] == "evaluator"
    assert evaluator["tf_config"]["task"] == {"type": "evaluator", "index": 0}
    assert evaluator["tf_config"]["cluster"] == dict(plans[0]["tf_config"]["cluster"],
                                                     evaluator=[evaluator["tf_config"]
                                                                ["cluster"]["evaluator"][0]])
    assert "evaluator" not in plans[0]["tf_config"]["cluster"]  # chief/ps/worker never see it
    assert all("evaluator" not in p["tf_config"]["cluster"] for p in plans[:-1])
    assert plans[0]["command"][-2:] == ["--train_steps", "5"]
    assert all("TF_CPP_MIN_LOG_LEVEL" not in p["env"] for p in plans)


def test_dry_run_from_env_strips_the_evaluator_kubeflow_lists():
    cluster = {"chief": ["c:2222"], "evaluator": ["e:2222"], "ps": ["p:2222"],
               "worker": ["w:2222"]}
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0},
                            "environment": "cloud"})
    [plan] = dry_run("--from-env", "--gpus-per-worker", "2", EXAMPLE,
                     env=dict(task_env(), TF_CONFIG=tf_config))
    assert plan["tf_config"]["cluster"] == {"chief": ["c:2222"], "ps": ["p:2222"],
                                            "worker": ["w:2222"]}
    worker_env = dict(task_env(), TF_CONFIG=tf_config.replace('"chief", "index"',
                                                              '"worker", "index"'))
    [worker] = dry_run("--from-env", "--gpus-per-worker", "2", EXAMPLE, env=worker_env)
    assert worker["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"  # one task per host: its own GPUs


def test_gpu_devices_rule():
    worker1 = TaskId("worker", 1)
    assert gpu_devices(worker1, 0, False) is None
    assert gpu_devices(worker1, 2, False) == "2,3"
    assert gpu_devices(worker1, 2, True) == "0,1"
    assert gpu_devices(TaskId("ps", 0), 2, False) == ""


def test_parse_fault():
    assert parse_fault("worker:0@30s").at == 30.0
    assert parse_fault("ps:1@500ms").at == 0.5
    assert parse_fault("chief@2").task == TaskId("chief", 0)


@pytest.mark.parametrize("deaths, action, code, restart", [
    ([("chief", 0)], "finish", 0, []),
    ([("chief", 3)], "finish", 3, []),
    ([("chief", -9)], "restart", 0, ["chief:0"]),
    ([("worker", -9)], "restart", 0, ["worker:0"]),
    ([("ps", -9)], "restart", 0, ["ps:0", "chief:0"]),
    ([("ps", -9), ("chief", 1)], "restart", 0, ["ps:0", "chief:0"]),  # chief failed because
    ([("evaluator", 0)], "continue", 0, []),
    ([("evaluator", 1)], "restart", 0, ["evaluator:0"]),
], ids=["chief-ok", "chief-exit-code", "chief-signal", "worker", "ps", "ps-and-chief",
        "evaluator-done", "evaluator-failed"])
def test_decide_rule(deaths, action, code, restart):
    decision = decide([Death(TaskId(t), rc) for t, rc in deaths])
    assert (decision.action, decision.code) == (action, code)
    assert [str(t) for t in decision.restart] == restart


def test_failure_table_marks_the_first_failure_as_root_cause():
    table = failure_table([Failure(TaskId("ps", 0), 11, -9, 1.0, True),
                           Failure(TaskId("chief"), 12, 3, 2.0)])
    lines = table.splitlines()
    assert "ps:0" in lines[2] and "SIGKILL" in lines[2] and lines[2].endswith("<- root cause")
    assert "chief" in lines[3] and "exit code 3" in lines[3] and "root" not in lines[3]
    assert describe_exit(-15) == "SIGTERM"


def test_config_from_args_for_emit_and_doctor_keeps_defaults():
    args = cli.parse(["--evaluator", "x.py", "--a"])
    assert (args.num_ps, args.num_workers, args.script, args.script_args) == (2, 2, "x.py",
                                                                            ["--a"])
    for name in ("spec", "evaluator", "gpus_per_worker", "verbose", "task", "from_env",
                 "emit", "doctor"):
        assert hasattr(args, name)


# ------------------------------------------------------------------------------- bad input
def _spec(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _bytes(tmp, data: bytes) -> str:
    path = tmp / "binary.yaml"
    path.write_bytes(data)
    return str(path)


BAD_INPUT = {
    "unknown-flag": (lambda tmp: ["--bogus", EXAMPLE], "unrecognized arguments: --bogus"),
    "zero-count": (lambda tmp: ["--num-workers", "0", EXAMPLE], "--num-workers: expected"),
    "non-integer-count": (lambda tmp: ["--num-ps", "two", EXAMPLE], "got 'two'"),
    "no-script": (lambda tmp: ["--num-ps", "1"], "missing SCRIPT"),
    "missing-script": (lambda tmp: ["no_such_script.py"], "'no_such_script.py': no such file"),
    "unreadable-spec": (lambda tmp: ["--spec", str(tmp / "absent.yaml"), EXAMPLE],
                        "cannot read file"),
    "invalid-spec": (lambda tmp: ["--spec", _spec(tmp, "chief: [localhost:1]\nps: [localhost:2, "
                                                  "localhost:abc]\nworker: [localhost:3]\n"),
                                  EXAMPLE], "ps[1]: port 'abc' is not an integer"),
    "task-not-in-spec": (lambda tmp: ["--spec", _spec(tmp, "ps: [localhost:2]\nworker: "
                                                      "[localhost:3]\n"), "--task", "worker:4",
                                      EXAMPLE], "task 'worker:4' is not in the cluster"),
    "bad-fault": (lambda tmp: ["--inject-fault", "worker:7@1s", EXAMPLE], "does not run here"),
    "infinite-grace": (lambda tmp: ["--grace-period", "inf", EXAMPLE], "got 'inf'"),
    "undecodable-spec": (lambda tmp: ["--spec", _bytes(tmp, b"\xff\xfe"), EXAMPLE],
                         "not UTF-8 text"),
    "spec-with-counts": (lambda tmp: ["--spec", _spec(tmp, "ps: [localhost:2]\nworker: "
                                                      "[localhost:3]\n"), "--num-ps", "1",
                                      EXAMPLE], "--num-ps cannot be combined with --spec"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_and_starts_nothing(case, tmp_path):
    make_args, expected = BAD_INPUT[case]
    logs = tmp_path / "logs"
    out = subprocess.run([*LAUNCH, "--log-dir", str(logs), *make_args(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, env=task_env(), timeout=60)
    assert out.returncode == 2, out
    assert out.stdout == ""
    [line] = out.stderr.splitlines()
    assert line.startswith("tfps-launch: error: ") and expected in line, line
    assert not logs.exists()  # nothing was started


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
    assert run.wait(60) == 1, run.output
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
    assert run.wait(60) == 1, run.output
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


def test_netns_falls_back_with_a_reason_when_namespaces_are_forbidden(monkeypatch):
    import errno
    from tfps.launch import netns
    entered = []
    monkeypatch.setattr(netns, "_probe", lambda user_namespace: errno.EPERM)
    monkeypatch.setattr(netns, "_enter", entered.append)
    assert netns.enter_private_network() == (
        "cannot create a network namespace: Operation not permitted")
    assert entered == []  # this process stays where it was
    assert netns.is_loopback_host("localhost") and netns.is_loopback_host("[::1]")
    assert not netns.is_loopback_host("host-a.example.internal")
