"""Hostile input, in-process (issue 16): every case of ``tests/hostile_cases.py`` through the
real `main` of ``tfps-launch``, ``tfps.server`` or ``tfps.export``: exit 2, one line on stderr,
no traceback, within 30 s, nothing started, nothing left behind. Also the pure Python API: bad
arguments raise a `tfps.errors.TfpsError` that names the argument and the value.

Nothing here may start a process or enter a namespace: the fixture replaces what would
(`subprocess.Popen`, the supervisor, the namespaces) with stand-ins that fail the test.
``tests/integration/test_hostile_processes.py`` runs the same table as real processes.
"""

from __future__ import annotations

import collections
import os
import subprocess
import time

import hostile_cases as H
import pytest

import tfps
from tfps import server
from tfps.errors import TfpsError
from tfps.export import cli as export_cli
from tfps.launch import cli
from tfps.launch.run import namespaces, supervisor

PROGS = {"launch": ("tfps-launch", cli.main), "server": ("tfps.server", server.main),
         "export": ("tfps.export", export_cli.main)}


def test_every_class_of_the_issue_has_several_cases():
    counts = collections.Counter(c.cls for c in H.CASES)
    assert set(counts) == set(H.CLASSES)
    assert min(counts.values()) >= 5, counts
    assert len(H.CASES) >= 60


class _Started(AssertionError):
    pass


@pytest.fixture
def nothing_may_start(monkeypatch):
    """Anything that would start a task, or change this process's namespaces, fails the test."""
    def forbidden(what):
        def fail(*args, **kwargs):
            raise _Started(f"{what} was called: the case got past validation")
        return fail

    monkeypatch.setattr(subprocess, "Popen", forbidden("subprocess.Popen"))
    monkeypatch.setattr(os, "fork", forbidden("os.fork"))
    monkeypatch.setattr(supervisor, "Supervisor", forbidden("Supervisor"))
    monkeypatch.setattr(namespaces, "PidNamespace", forbidden("PidNamespace"))
    # The private network is entered before the log-dir and port checks; pretend it worked.
    monkeypatch.setattr(namespaces, "enter_private_network", lambda: None)


@pytest.fixture(scope="module")
def ports():
    holder, busy = H.hold_busy_port()
    with holder:
        yield H.Ports(busy, H.free_port(), H.free_port())


@pytest.mark.parametrize("case", H.CASES, ids=str)
def test_hostile_input_is_one_line_exit_2_and_starts_nothing(case, tmp_path, monkeypatch,
                                                             capsys, ports, nothing_may_start):
    if case.needs_no_dac_override and os.geteuid() == 0:
        pytest.skip("root reads any file; tests/integration/test_hostile_processes.py runs "
                    "this case without CAP_DAC_OVERRIDE")
    d = tmp_path / "case"
    d.mkdir()
    subst = H.substituter(str(d), ports)
    H.materialize(case, str(d), subst)
    argv, env = H.argv_and_env(case, subst)
    for name in list(os.environ):
        if H.is_engine_variable(name):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(d)
    before = H.listing(str(d))
    prog, main = PROGS[case.program]

    start = time.monotonic()
    code = main(argv)
    wall = time.monotonic() - start

    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"{prog}: error: "), err
    assert len(err) < 1200, err[:300]
    assert "Traceback" not in out + err
    assert out == ""
    assert wall < H.MAX_WALL_S
    assert H.listing(str(d)) == before  # no log directory, no log file, nothing else


def test_the_error_line_names_what_was_wrong(tmp_path, monkeypatch, capsys,
                                             nothing_may_start):
    """A few messages in full: the field, the value (a short prefix of it), the reason."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chief.py").write_text(H.CHIEF)
    spec = tmp_path / "s.yaml"

    def error(*argv) -> str:
        assert cli.main([str(a) for a in argv]) == 2
        return capsys.readouterr().err.strip()

    spec.write_text(H.spec(ps=["localhost:22221"], worker=["127.0.0.1:22221"]))
    assert error("--spec", spec, "chief.py") == (
        f"tfps-launch: error: cluster spec {spec}: worker[0]: address '127.0.0.1:22221' is "
        f"already used by ps[0] ('localhost:22221': same host)")
    spec.write_text(H.spec(ps=["localhost:08080"]))
    assert error("--spec", spec, "chief.py").endswith(
        "ps[0]: port '08080' has a leading zero (write 8080)")
    spec.write_text("cluster: {ps: [localhost:1], worker: [localhost:2]}\nps: [h:1]\n")
    assert "role 'ps' beside 'cluster'" in error("--spec", spec, "chief.py")
    long_path = tmp_path / ("x" * 5000)
    line = error("--spec", long_path, "chief.py")
    assert len(line) < 300 and "cannot read file" in line, line
    assert error("--log-dir", "", "chief.py") == (
        "tfps-launch: error: --log-dir '': not a directory name")
    (tmp_path / "broken.py").write_text("def f(:\n")
    assert error("broken.py") == (
        "tfps-launch: error: script 'broken.py': not valid Python (line 1): 'invalid syntax'")
    spec.write_text(H.spec(ps=["no-such-host.invalid:22221"]))
    assert "host 'no-such-host.invalid' does not resolve" in error(
        "--spec", spec, "--network", "host", "--dry-run", "chief.py")
    (tmp_path / "logs" / "ps-0.log").mkdir(parents=True)
    assert error("--num-ps", "1", "--num-workers", "1", "--log-dir", "logs", "chief.py") == (
        "tfps-launch: error: --log-dir 'logs': 'logs/ps-0.log': Is a directory")


# ------------------------------------------------------------------------------ the Python API
# (call, the argument its error must name): the API cases that need no TensorFlow. The
# schedules and the strategy's helpers import TF: tests/integration/test_hostile_api.py.
def _nested(depth):
    x: list = []
    for _ in range(depth):
        x = [x]
    return x


API = {
    "trainer-options-staleness-no": (lambda: tfps.TrainerOptions(staleness_aware="no"),
                                     "staleness_aware", "'no'"),
    "trainer-options-staleness-0.0": (lambda: tfps.TrainerOptions(staleness_aware=0.0),
                                      "staleness_aware", "0.0"),
    "trainer-options-accumulate-10e18": (lambda: tfps.TrainerOptions(accumulate_steps=10**18),
                                         "accumulate_steps", "1000000000000000000"),
    "trainer-options-log-every-true": (lambda: tfps.TrainerOptions(log_every=True),
                                       "log_every", "True"),
    "trainer-options-progress-bar-true": (lambda: tfps.TrainerOptions(progress_bar=True),
                                          "progress_bar", "True"),
    "cluster-local-unresolvable-host": (
        lambda: tfps.Cluster.local(host="no-such-host.invalid"), "host",
        "'no-such-host.invalid'"),
    "cluster-local-empty-host": (lambda: tfps.Cluster.local(host=""), "host", "''"),
    "cluster-local-nul-host": (lambda: tfps.Cluster.local(host="local\0host"), "host",
                               "'local\\x00host'"),
    "cluster-local-int-host": (lambda: tfps.Cluster.local(host=5), "host", "5"),
    "cluster-local-10e6-ps": (lambda: tfps.Cluster.local(num_ps=10**6), "num_ps", "1000000"),
    "cluster-local-chief-2": (lambda: tfps.Cluster.local(chief=2), "chief", "2"),
    "cluster-local-workers-float": (lambda: tfps.Cluster.local(num_workers=2.0),
                                    "num_workers", "2.0"),
    "from-env-tf-config-not-a-string": (lambda: tfps.Cluster.from_env({"TF_CONFIG": 5}),
                                        "TF_CONFIG", "int 5"),
    "from-env-slurm-procid-not-a-string": (
        lambda: tfps.Cluster.from_env({"SLURM_PROCID": 0}), "SLURM_PROCID", "int 0"),
    "from-dict-100000-deep": (lambda: tfps.Cluster.from_dict({"ps": _nested(100_000),
                                                              "worker": ["h:2"]}),
                              "ps[0]", "list"),
    "from-dict-chief-false": (lambda: tfps.Cluster.from_dict({"chief": False, "ps": ["h:1"],
                                                              "worker": ["h:2"]}),
                              "chief", "False"),
    "from-dict-port-fullwidth": (lambda: tfps.Cluster.from_dict({"ps": ["h:１"],
                                                                 "worker": ["h:2"]}),
                                 "ps[0]", "'１'"),
    "from-dict-role-beside-cluster": (
        lambda: tfps.Cluster.from_dict({"cluster": {"ps": ["h:1"], "worker": ["h:2"]},
                                        "worker": ["h:3"]}), "'worker' beside 'cluster'", ""),
    "task-id-fullwidth-index": (lambda: tfps.TaskId.parse("worker:１"), "worker:１", "'１'"),
    "tf-config-index-float": (lambda: tfps.Cluster.from_dict({"ps": ["h:1"], "worker": ["h:2"]})
                              .tf_config("worker", 0.9), "worker:0.9", ""),
}


@pytest.mark.parametrize("name", sorted(API))
def test_bad_api_argument_is_a_tfps_error_naming_argument_and_value(name):
    call, argument, value = API[name]
    start = time.monotonic()
    with pytest.raises(TfpsError) as info:
        call()
    message = str(info.value)
    assert argument in message and value in message, message
    assert len(message.splitlines()) == 1 and len(message) < 400, message
    assert time.monotonic() - start < 5
