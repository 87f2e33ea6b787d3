"""`tfps-launch --doctor`: preflight checks on a passing and a failing spec."""

from __future__ import annotations

import socket

import pytest

from tfps import Cluster, errors
from tfps._units import parse_bytes
from tfps.cluster import free_ports
from tfps.launch import cli, doctor
from tfps.launch.config import config_from_args


def doctor_args(argv):
    """The `DoctorConfig` the launcher builds from ``tfps-launch ARGV``."""
    return config_from_args(cli.parse(argv))


def write_spec(path, spec: dict) -> str:
    import yaml
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_passing_spec_exits_0(tmp_path, capsys):
    ports = free_ports(5)
    spec = write_spec(tmp_path / "ok.yaml", {
        "chief": [f"localhost:{ports[0]}"],
        "ps": [f"localhost:{ports[1]}", f"127.0.0.1:{ports[2]}"],
        "worker": [f"localhost:{ports[3]}", f"localhost:{ports[4]}"]})
    rc = doctor.run(doctor_args(["--doctor", "--spec", spec, "--model-bytes", "40MiB",
                                 "--ps-memory", "8GiB"]))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "[ok  ] versions" in out and "[ok  ] addresses" in out
    assert "[ok  ] ports" in out and str(ports[4]) in out
    assert "[ok  ] ps capacity  20.0 MiB per ps of 8.0 GiB" in out
    assert "number of ps: 2" in out
    assert "steps per closure: leave tfps.Trainer to measure it" in out
    assert "tfps.keras.steps_per_execution(steps_per_epoch, 2) (e.g. 100 for 1000" in out
    assert out.rstrip().endswith("all checks passed")


def test_failing_spec_exits_1_with_the_list(tmp_path, capsys):
    busy = socket.socket()
    busy.bind(("0.0.0.0", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    free = free_ports(2)
    spec = write_spec(tmp_path / "bad.yaml", {
        "chief": [f"localhost:{free[0]}"],
        "ps": [f"localhost:{taken}"],                     # a port something listens on
        "worker": ["no-such-host.invalid:2222",           # RFC 6761: never resolves
                   f"{socket.gethostname()}:{free[0]}"]})  # the chief's port, this host
    try:
        rc = doctor.run(doctor_args(["--doctor", "--spec", spec, "--model-bytes", "30GB",
                                     "--ps-memory", "16GB"]))
    finally:
        busy.close()
    out = capsys.readouterr().out
    assert rc == 1, out
    failures = out[out.index("checks failed:"):]
    assert "3 checks failed:" in out
    assert "- addresses: 1 of 4 task addresses do not resolve: worker:0 " \
           "no-such-host.invalid:2222" in failures
    assert f"ps:0 localhost:{taken}: port {taken} is not free" in failures
    assert f"worker:1 {socket.gethostname()}:{free[0]} and chief:0 localhost:{free[0]} both " \
           f"need port {free[0]} on this host" in failures
    assert "- ps capacity: 27.9 GiB over 1 ps is 27.9 GiB per ps, more than half of a ps " \
           "host's 14.9 GiB: use at least 4 ps" in failures


def test_check_functions_are_pure_records():
    c = Cluster.from_dict({"chief": ["localhost:1"], "ps": ["localhost:2"],
                           "worker": ["localhost:3"]})
    resolved = {"localhost": ["127.0.0.1"]}
    [addresses] = doctor.check_addresses(c, resolved=resolved)
    assert addresses == doctor.Check("addresses", "ok", "the host resolves")
    [small] = doctor.check_ps_capacity(8, model_bytes=1 << 20, ps_memory_bytes=None)
    assert small.status == "warn" and "ps beyond 4 add RPCs" in small.detail
    [skipped] = doctor.check_ps_capacity(2, model_bytes=None, ps_memory_bytes=None)
    assert skipped.status == "skip" and not skipped.failed
    recs = doctor.recommendations(num_ps=2, num_workers=4, model_bytes=100_000,
                                  ps_memory_bytes=1 << 30)
    assert recs[0].startswith("number of ps: 1 ")
    assert any(r.startswith("steps per closure: leave tfps.Trainer to measure it") for r in recs)


def test_counts_form_checks_versions_and_capacity_only(capsys):
    rc = doctor.run(doctor_args(["--doctor", "--num-ps", "2", "--num-workers", "3"]))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "] addresses" not in out and "] ports" not in out
    assert "[skip] ps capacity" in out


@pytest.mark.parametrize("text, expected", [
    ("123", 123), ("2GiB", 2 << 30), ("500MB", 500_000_000), ("1e9", 10**9),
    ("1.5 KiB", 1536), (4096, 4096)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["4XB", "", "-1", "0", "1e999", "2PiB", "１０"])
def test_parse_bytes_errors_name_flag_and_value(text):
    with pytest.raises(errors.ConfigError) as info:
        parse_bytes(text)
    assert str(info.value).startswith("--model-bytes: ") and repr(text) in str(info.value)


def test_bad_spec_is_a_cluster_spec_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ps: [h:abc]\nworker: [h:1]\n")
    with pytest.raises(errors.ClusterSpecError, match=r"bad.yaml: ps\[0\]: port 'abc'"):
        doctor_args(["--doctor", "--spec", str(bad)])


@pytest.mark.parametrize("argv, message", [
    (["--doctor", "--task", "ps:0"], "--task cannot be combined with --doctor"),
    (["--doctor", "--dry-run"], "--dry-run cannot be combined with --doctor"),
    (["--doctor", "--emit", "slurm", "t.py"], "--doctor cannot be combined with --emit"),
    (["--doctor", "--model-bytes", "1GB", "t.py"], "--doctor takes no SCRIPT"),
    (["--doctor", "--image", "x"], "--image cannot be combined with --doctor"),
])
def test_doctor_refuses_flags_it_would_ignore(argv, message):
    with pytest.raises(errors.TfpsError, match=message):
        doctor_args(argv)


def test_version_check_fails_naming_both_versions(monkeypatch):
    import importlib.metadata
    versions = {"tensorflow": "2.21.0", "tf-keras": "2.20.1"}
    monkeypatch.setattr(importlib.metadata, "version", versions.__getitem__)
    check = doctor.check_versions()
    assert check.status == doctor.FAIL
    assert "tf-keras 2.20.1 does not match tensorflow 2.21.0" in check.detail
