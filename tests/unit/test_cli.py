"""`tfps-launch` without processes: parsing, the three modes' configs, the plan (what
``--dry-run`` prints), the failure rule and table, and bad input (exit 2, one line, nothing
started) through the real `main`."""

from __future__ import annotations

import errno
import json
import os
import sys

import pytest
from conftest import REPO

from tfps.cluster import TaskId
from tfps.errors import TfpsError
from tfps.launch import cli
from tfps.launch.config import DoctorConfig, EmitConfig, LaunchConfig, config_from_args
from tfps.launch.run import namespaces
from tfps.launch.run.failures import Death, Failure, decide, describe_exit, failure_table
from tfps.launch.run.plan import gpu_devices, parse_fault

EXAMPLE = os.path.join(REPO, "examples", "linear_regression.py")


def config(*argv):
    return config_from_args(cli.parse(list(argv)))


def dry_run(*argv, capsys) -> list[dict]:
    assert cli.main(["--dry-run", *argv]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


# ------------------------------------------------------------------------------ modes
def test_each_mode_gets_its_typed_config_with_defaults():
    launch = config("--evaluator", EXAMPLE, "--a")
    assert isinstance(launch, LaunchConfig)
    assert (launch.cluster.num_ps, launch.cluster.num_workers, bool(launch.cluster.evaluator),
            launch.script, launch.script_args) == (2, 2, True, EXAMPLE, ("--a",))
    assert (launch.max_restarts, launch.grace_period, launch.private_network) == (3, 5.0, True)
    emit = config("--emit", "slurm", "--num-workers", "3", "t.py", "--lr", "1e-3")
    assert isinstance(emit, EmitConfig)
    assert (emit.engine, emit.num_ps, emit.num_workers, emit.script_args) == (
        "slurm", 2, 3, ("--lr", "1e-3"))
    doctor = config("--doctor", "--num-ps", "4")
    assert isinstance(doctor, DoctorConfig) and (doctor.num_ps, doctor.num_workers) == (4, 2)


def test_dry_run_default_cluster_has_five_tasks_distinct_ports_and_tf_configs(capsys):
    plans = dry_run(EXAMPLE, capsys=capsys)
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


def test_dry_run_gpus_per_worker_gives_each_worker_its_own_devices(capsys):
    plans = {p["task"]: p["env"] for p in dry_run("--gpus-per-worker", "1", EXAMPLE,
                                                  capsys=capsys)}
    assert plans["worker:0"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert plans["worker:1"]["CUDA_VISIBLE_DEVICES"] == "1"
    for task in ("chief", "ps:0", "ps:1"):
        assert plans[task]["CUDA_VISIBLE_DEVICES"] == ""


def test_dry_run_verbose_evaluator_and_script_args(capsys):
    plans = dry_run("--verbose", "--evaluator", EXAMPLE, "--train_steps", "5", capsys=capsys)
    evaluator = plans[-1]
    assert evaluator["task"] == "evaluator"
    assert evaluator["tf_config"]["task"] == {"type": "evaluator", "index": 0}
    assert evaluator["tf_config"]["cluster"] == dict(plans[0]["tf_config"]["cluster"],
                                                     evaluator=[evaluator["tf_config"]
                                                                ["cluster"]["evaluator"][0]])
    assert all("evaluator" not in p["tf_config"]["cluster"] for p in plans[:-1])
    assert plans[0]["command"][-2:] == ["--train_steps", "5"]
    assert all("TF_CPP_MIN_LOG_LEVEL" not in p["env"] for p in plans)


def test_dry_run_from_env_strips_the_evaluator_kubeflow_lists(capsys, monkeypatch):
    cluster = {"chief": ["c:2222"], "evaluator": ["e:2222"], "ps": ["p:2222"],
               "worker": ["w:2222"]}
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0},
                            "environment": "cloud"})
    monkeypatch.setenv("TF_CONFIG", tf_config)
    [plan] = dry_run("--from-env", "--gpus-per-worker", "2", EXAMPLE, capsys=capsys)
    assert plan["tf_config"]["cluster"] == {"chief": ["c:2222"], "ps": ["p:2222"],
                                            "worker": ["w:2222"]}
    monkeypatch.setenv("TF_CONFIG", tf_config.replace('"chief", "index"', '"worker", "index"'))
    [worker] = dry_run("--from-env", "--gpus-per-worker", "2", EXAMPLE, capsys=capsys)
    assert worker["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"  # one task per host: its own GPUs


# ------------------------------------------------------------------------------ rules
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


def test_netns_falls_back_with_a_reason_when_namespaces_are_forbidden(monkeypatch):
    entered = []
    monkeypatch.setattr(namespaces, "_probe", lambda user_namespace: errno.EPERM)
    monkeypatch.setattr(namespaces, "_enter", entered.append)
    assert namespaces.enter_private_network() == (
        "cannot create a network namespace: Operation not permitted")
    assert entered == []  # this process stays where it was
    assert namespaces.is_loopback_host("localhost") and namespaces.is_loopback_host("[::1]")
    assert not namespaces.is_loopback_host("host-a.example.internal")


# ------------------------------------------------------------------------------ bad input
def _spec(tmp, text, name="spec.yaml"):
    path = tmp / name
    path.write_text(text)
    return str(path)


SPEC = "chief: [localhost:1]\nps: [localhost:2]\nworker: [localhost:3]\n"

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
    "task-not-in-spec": (lambda tmp: ["--spec", _spec(tmp, SPEC), "--task", "worker:4",
                                      EXAMPLE], "task 'worker:4' is not in the cluster"),
    "bad-fault": (lambda tmp: ["--inject-fault", "worker:7@1s", EXAMPLE], "does not run here"),
    "infinite-grace": (lambda tmp: ["--grace-period", "inf", EXAMPLE], "got 'inf'"),
    "spec-with-counts": (lambda tmp: ["--spec", _spec(tmp, SPEC), "--num-ps", "1", EXAMPLE],
                         "--num-ps cannot be combined with --spec"),
    # --emit and --doctor refuse what a launch refuses, and what they would ignore.
    "emit-spec-and-counts": (lambda tmp: ["--emit", "tfjob", "--spec", _spec(tmp, SPEC),
                                          "--num-ps", "4", "--image", "x", "t.py"],
                             "--num-ps cannot be combined with --spec"),
    "emit-fault": (lambda tmp: ["--emit", "slurm", "--inject-fault", "garbage", "t.py"],
                   "--inject-fault cannot be combined with --emit slurm"),
    "emit-task": (lambda tmp: ["--emit", "tfjob", "--image", "x", "--task", "ps:0", "t.py"],
                  "--task cannot be combined with --emit tfjob"),
    "emit-from-env": (lambda tmp: ["--emit", "slurm", "--from-env", "t.py"],
                      "--from-env cannot be combined with --emit slurm"),
    "emit-dry-run": (lambda tmp: ["--emit", "slurm", "--dry-run", "t.py"],
                     "--dry-run cannot be combined with --emit slurm"),
    "emit-slurm-image": (lambda tmp: ["--emit", "slurm", "--image", "x", "t.py"],
                         "--image cannot be combined with --emit slurm"),
    "launch-image": (lambda tmp: ["--image", "x", EXAMPLE],
                     "--image cannot be combined with a launch"),
    "task-without-spec": (lambda tmp: ["--task", "ps:0", EXAMPLE], "--task needs --spec"),
    "empty-task": (lambda tmp: ["--spec", _spec(tmp, SPEC), "--task", "", EXAMPLE],
                   "unknown role ''"),
    "spec-without-chief": (lambda tmp: ["--spec", _spec(tmp, "ps: [localhost:2]\nworker: "
                                                        "[localhost:3]\n"), EXAMPLE],
                           "chief: a launch of every task needs a chief task"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_and_starts_nothing(case, tmp_path, capsys):
    make_args, expected = BAD_INPUT[case]
    logs = tmp_path / "logs"
    argv = make_args(tmp_path)
    if "--emit" not in argv:  # (--log-dir is itself refused by --emit)
        argv = ["--log-dir", str(logs), *argv]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("tfps-launch: error: ") and expected in line, line
    assert not logs.exists()  # nothing was started


def test_early_signal_ends_the_launcher_before_anything_starts(capsys):
    import signal
    assert cli.main([EXAMPLE], early_signals=[signal.SIGINT]) == 130
    [line] = capsys.readouterr().err.splitlines()
    assert line == "tfps-launch: got SIGINT before anything started; nothing was started"


def test_errors_are_tfps_errors_never_tracebacks():
    with pytest.raises(TfpsError):
        config("--spec", "/nonexistent.yaml", EXAMPLE)


# ------------------------------------------------------------------------------ terminal noise
_CUINIT = (b"E0000 00:00:1796052675.039419       6 cuda_platform.cc:52] failed call to cuInit: "
           b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")
_PRE_INIT = (b"WARNING: All log messages before absl::InitializeLog() is called are written "
             b"to STDERR")


def _terminal_and_log(tmp_path, monkeypatch, *, gpu: bool, verbose: bool = False):
    import io

    from tfps.launch.run import logs
    monkeypatch.setattr(logs, "gpu_absent", lambda: not gpu)
    out = io.StringIO()
    output = logs.Output(str(tmp_path), out=out, err=io.StringIO(), verbose=verbose)
    read, write = os.pipe()
    output.pump(os.fdopen(read, "rb"), "ps:0", output.open_task_log("ps:0"))
    os.write(write, b"\n".join([_PRE_INIT, _CUINIT, b"tfps.server: ps:0 serving"]) + b"\n")
    os.close(write)
    output.drain(5)
    output.close()
    return out.getvalue(), (tmp_path / "ps-0.log").read_bytes()


def test_tf_start_up_noise_stays_off_the_terminal_of_a_machine_without_gpu(tmp_path,
                                                                          monkeypatch):
    terminal, log = _terminal_and_log(tmp_path, monkeypatch, gpu=False)
    assert terminal == "[ps:0] tfps.server: ps:0 serving\n"
    assert _CUINIT in log and _PRE_INIT in log  # the log file keeps everything


def test_a_failed_cuinit_is_shown_where_there_is_a_gpu_and_with_verbose(tmp_path, monkeypatch):
    terminal, _ = _terminal_and_log(tmp_path / "a", monkeypatch, gpu=True)
    assert "failed call to cuInit" in terminal and "absl::InitializeLog" not in terminal
    terminal, _ = _terminal_and_log(tmp_path / "b", monkeypatch, gpu=False, verbose=True)
    assert "failed call to cuInit" in terminal and "absl::InitializeLog" in terminal


@pytest.mark.parametrize("argv, command", [
    (["python", "/venv/bin/tfps-launch", "--dry-run", "t.py"], "tfps.launch"),
    (["python", "-m", "tfps.launch", "t.py"], "tfps.launch"),
    (["python", "-u", "-X", "importtime", "-m", "tfps.launch.entry"], "tfps.launch"),
    (["python", "-mtfps.server"], "tfps.server"),
    (["python", "train.py"], None), (["python", "-c", "import tfps"], None),
    (["python", "-m", "pytest"], None), (["python"], None),
])
def test_the_tfps_commands_are_told_from_their_command_line(argv, command):
    """The launcher records early signals, and the tfps commands skip the tf.keras warning,
    from `import tfps` on: told apart by the interpreter's own command line."""
    from tfps import _env
    assert _env.tfps_command(argv) == command
