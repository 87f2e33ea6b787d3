"""Live health and a quiet start, without TensorFlow: the chief's Prometheus text, the
launcher's ``/metrics`` server, the new launch flags, and the class of TF's C++ log lines
kept off the terminal."""

from __future__ import annotations

import socket
import time

import pytest

from tfps.launch import cli
from tfps.launch.run import logs, metrics_http
from tfps.train.health import ChiefHealth, ClosureTracker, Progress
from tfps.train.metrics import Metrics

EXAMPLE = "examples/linear_regression.py"


# ------------------------------------------------------------------ the chief's metrics
def test_metrics_text_has_steps_rates_workers_and_tasks(tmp_path):
    tracker = ClosureTracker(2, floor=30)
    tracker.started(0, 1, "train")
    tracker.ended(0, "done")
    tracker.started(1, 2, "train")
    tracker.ended(1, "put_back")
    tracker.started(0, 2, "train")
    tracker.ended(0, "done")
    progress = Progress()
    metrics = Metrics(str(tmp_path / "m.prom"), num_workers=2,
                      traffic=lambda: type("T", (), {"bytes": 4096.0})())
    health = ChiefHealth(tracker=tracker, report_path=None, ps={"ps:0": "127.0.0.1:1"},
                         progress=progress, metrics=metrics)
    progress.closure_done(1200, 100, 0.41)
    values = {"steps/sec": 850.3, "examples/sec": 435353.6, "loss": 0.41, "lr": 0.05,
              "rows": 10, "admitted": 4, "evicted": 1}
    progress.recorded(1200, values)
    metrics.recorded(1200, values)
    progress.saved(1200, 0.25)
    health.prober.answered_at["ps:0"] = time.monotonic()
    health.prober.round_trip["ps:0"] = 0.002
    metrics.write(health)
    text = (tmp_path / "m.prom").read_text()
    for line in ("tfps_steps_total 1200.0", "tfps_steps_per_second 850.3", "tfps_loss 0.41",
                 "tfps_examples_per_second 435353.6", "tfps_learning_rate 0.05",
                 'tfps_worker_closures_done_total{worker="0"} 2.0',
                 'tfps_worker_closures_failed_total{worker="1"} 1.0',
                 'tfps_worker_closures_rerun_total{worker="0"} 1.0',
                 "tfps_bytes_per_step 4096.0", "tfps_checkpoint_seconds 0.25",
                 "tfps_checkpoints_total 1.0", "tfps_dynamic_embedding_rows 10.0",
                 "tfps_dynamic_embedding_admitted_total 4.0",
                 "tfps_dynamic_embedding_evicted_total 1.0", "tfps_hang_timeout_seconds 30.0",
                 'tfps_ps_round_trip_seconds{task="ps:0"} 0.002'):
        assert line in text.splitlines(), line
    for task in ("chief", "worker:0", "ps:0"):
        assert f'tfps_last_progress_timestamp_seconds{{task="{task}"}}' in text


# ------------------------------------------------------------------ the launcher's server
def _get(port: int, path: str = "/metrics") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def _serve_while(server, fn):
    import threading
    result, done = [], threading.Event()

    def client():
        result.append(fn())
        done.set()

    threading.Thread(target=client, daemon=True).start()
    deadline = time.monotonic() + 5
    while not done.is_set() and time.monotonic() < deadline:
        server.serve()
        time.sleep(0.01)
    return result[0]


def test_the_launcher_serves_the_chief_file_on_loopback(tmp_path):
    path = tmp_path / "m.prom"
    server = metrics_http.MetricsServer(metrics_http.listen(0), str(path))
    try:
        reply = _serve_while(server, lambda: _get(server.port))
        assert reply.startswith(b"HTTP/1.0 200 OK") and b"not reported metrics yet" in reply
        path.write_bytes(b"tfps_steps_total 7.0\n")
        reply = _serve_while(server, lambda: _get(server.port))
        assert reply.endswith(b"\r\n\r\ntfps_steps_total 7.0\n")
        assert b"text/plain; version=0.0.4" in reply
        assert _serve_while(server, lambda: _get(server.port, "/x")).startswith(
            b"HTTP/1.0 404")
    finally:
        server.close()


def test_a_taken_metrics_port_is_one_line_exit_2(tmp_path, capsys):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert cli.main(["--log-dir", str(tmp_path / "logs"), "--metrics-port", str(port),
                         EXAMPLE]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"tfps-launch: error: --metrics-port {port}: cannot listen on "
                           f"127.0.0.1:{port}"), line
    assert not (tmp_path / "logs").exists()  # nothing started


@pytest.mark.parametrize("argv, message", [
    (["--hang-timeout", "1", EXAMPLE], "--hang-timeout 1: at least 2 seconds"),
    (["--hang-timeout", "abc", EXAMPLE], "argument --hang-timeout: expected a number"),
    (["--metrics-port", "0", EXAMPLE], "argument --metrics-port: expected an integer in"),
    (["--emit", "slurm", "--hang-timeout", "5", EXAMPLE], "--hang-timeout cannot be combined"),
])
def test_bad_new_flags_are_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert message in line, line


def test_the_new_flags_reach_the_config():
    config = cli.config_from_args(cli.parse(["--hang-timeout", "7.5", "--metrics-port", "9100",
                                             EXAMPLE]))
    assert config.hang_timeout == 7.5 and config.metrics_port == 9100
    assert cli.config_from_args(cli.parse([EXAMPLE])).hang_timeout == 30


# ------------------------------------------------------------------ quiet start
_LINES = [
    b"I0000 00:00:1765011234.123456   12345 port.cc:153] oneDNN custom operations are on.",
    b"I0000 00:00:1765011234.5    7 cpu_feature_guard.cc:210] This TensorFlow binary is opt",
    b"W0000 00:00:1765011235.000001      3 some_other_cpu_thing.cc:9] AVX512 is not used",
    b"E0000 00:00:1765011235.000001      3 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
    b"E0000 00:00:1765011235.000001      3 numa.cc:1] a start-up error of an unknown CPU",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
]


@pytest.mark.parametrize("line", _LINES)
def test_every_glog_line_of_a_start_is_noise(line):
    assert logs.is_noise(line, no_gpu=True, starting=True)


def test_errors_after_the_start_and_fatal_lines_are_shown():
    error = b"E0000 00:00:1765011299.1  6 context.cc:911] Failed to remove function remotely"
    assert not logs.is_noise(error, no_gpu=True, starting=False)
    assert logs.is_noise(_LINES[0], no_gpu=True, starting=False)  # INFO: never
    fatal = b"F0000 00:00:1765011299.1  6 check.cc:1] Check failed: x"
    assert not logs.is_noise(fatal, no_gpu=True, starting=True)
    assert not logs.is_noise(b"train | step: 100 | loss: 0.4", no_gpu=True, starting=True)
    assert not logs.is_noise(_LINES[3], no_gpu=False, starting=True)  # cuInit with a GPU


# ------------------------------------------------------------------ log writes
def test_a_log_file_on_a_full_disk_is_one_line_and_the_terminal_keeps_everything(tmp_path):
    import io
    import os

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    out, err = io.StringIO(), io.StringIO()
    output = logs.Output(str(tmp_path), out=out, err=err)
    # Every write to /dev/full fails with ENOSPC: the launcher's own log moves there.
    output._launcher_log.close()  # a full disk under the launcher's log
    output._launcher_log = open("/dev/full", "a")
    read, write = os.pipe()
    output.pump(os.fdopen(read, "rb"), "worker:1", open("/dev/full", "ab"))
    os.write(write, b"first\nsecond\n")
    os.close(write)
    output.drain(5)
    output.event("chief exited with code 0; ending the cluster")
    output.event("done")
    output.close()
    assert out.getvalue() == "[worker:1] first\n[worker:1] second\n"
    lines = err.getvalue().splitlines()
    assert lines.count("tfps-launch: log write /dev/full failed: No space left on device; "
                       "worker:1's output lines still reach the terminal, not that file") == 1
    assert lines.count("tfps-launch: log write /dev/full failed: No space left on device; "
                       "the launcher's lines still reach the terminal, not that file") == 1
    assert "tfps-launch: done" in lines
