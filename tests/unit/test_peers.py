"""Launchers watching each other (`tfps.launch.run.peers`) and what a lost ps on another host means
(`tfps.launch.run.failures.decide`). Real sockets on loopback, no processes, no TensorFlow."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tfps.cluster import Cluster, TaskId, free_ports
from tfps.launch.run import peers
from tfps.launch.run.failures import Death, Failure, decide, failure_table
from tfps.launch.run.plan import plan_tasks


def poll_until(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.02)
    return fn()


def test_the_chief_beacon_reaches_every_watcher_and_hears_them_back():
    [port] = free_ports(1)
    watchers = {name: peers.ChiefWatch(f"localhost:{port}", name)
                for name in ("ps:0", "worker:0", "evaluator")}
    # Before the beacon: nothing listens there yet; a watcher keeps waiting.
    for w in watchers.values():
        assert w.poll() is None
    acked = []
    beacon = threading.Thread(target=lambda: acked.append(
        peers.announce(port, 3, ["ps:0", "worker:0"], min_s=0.5, max_s=10)))
    t0 = time.monotonic()
    beacon.start()
    codes = {}
    while len(codes) < 3 and time.monotonic() - t0 < 10:
        for name, w in watchers.items():
            code = w.poll()
            if code is not None:
                codes[name] = code
        time.sleep(0.02)
    beacon.join(15)
    assert codes == {"ps:0": 3, "worker:0": 3, "evaluator": 3}
    # The beacon ended once both named tasks acknowledged (the evaluator may too).
    assert acked and {"ps:0", "worker:0"} <= acked[0]
    assert time.monotonic() - t0 < 5


def test_the_beacon_stops_at_max_s_without_answers_and_when_told_to():
    [port] = free_ports(1)
    t0 = time.monotonic()
    assert peers.announce(port, 0, ["ps:0"], min_s=0.1, max_s=0.5) == set()
    assert 0.4 < time.monotonic() - t0 < 3
    t0 = time.monotonic()
    assert peers.announce(port, 0, ["ps:0"], stop=lambda: True) == set()
    assert time.monotonic() - t0 < 1


def test_a_tf_server_is_not_mistaken_for_the_beacon():
    with socket.socket() as server:  # a server that accepts and says something else
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        watch = peers.ChiefWatch(f"127.0.0.1:{port}", "ps:0")
        deadline = time.monotonic() + 2
        conns = []
        server.settimeout(0.05)
        while time.monotonic() < deadline:
            assert watch.poll() is None
            try:
                conn, _ = server.accept()
                conn.send(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00")  # an HTTP/2 SETTINGS frame
                conns.append(conn)
            except TimeoutError:
                pass
        assert conns  # it did look
        for conn in conns:
            conn.close()


def test_ps_watch_reports_a_ps_lost_after_it_listened_and_why():
    with socket.socket() as ps0, socket.socket() as ps1:
        for s in (ps0, ps1):
            s.bind(("127.0.0.1", 0))
            s.listen()
        [starting] = free_ports(1)  # a ps still importing TF: nothing listens yet
        addr = {TaskId("ps", 0): f"127.0.0.1:{ps0.getsockname()[1]}",
                TaskId("ps", 1): f"127.0.0.1:{ps1.getsockname()[1]}",
                TaskId("ps", 2): f"127.0.0.1:{starting}"}
        watch = peers.PsWatch(addr)
        poll_until(lambda: (watch.poll(), watch.down() == [TaskId("ps", 2)])[1], 5)
        assert watch.lost() == []  # never listened: starting, not lost
        ps1.close()
        lost = poll_until(lambda: (watch.poll(), watch.lost())[1], 5)
    assert lost == [TaskId("ps", 1)]
    assert watch.why(TaskId("ps", 1)) == f"{addr[TaskId('ps', 1)]}: connection refused"
    watch.reset()  # the chief restarts: earlier losses no longer explain its failures
    assert watch.lost() == []


def test_ps_watch_counts_a_timeout_only_when_it_repeats(monkeypatch):
    watch = peers.PsWatch({TaskId("ps", 0): "ps-host:2222"})
    answers = iter([(True, ""), (False, "timed out"), (True, ""), (False, "timed out"),
                    (False, "timed out")])
    monkeypatch.setattr(peers, "probe_now", lambda address: next(answers))
    lost = []
    for _ in range(5):
        watch.check_now()
        lost.append(bool(watch.lost()))
    assert lost == [False, False, False, False, True]


def _plans(cluster: Cluster, *tasks: str):
    return plan_tasks(cluster, [TaskId.parse(t) for t in tasks], script="t.py", python="py",
                      one_per_host=True)


def test_what_each_launcher_watches():
    cluster = Cluster.from_dict({"chief": ["h0:1"], "ps": ["h1:1", "h2:1"],
                                 "worker": ["h3:1"], "evaluator": ["h4:1"]})
    ps_watch, chief_watch, beacon = peers.watches(_plans(cluster, "chief"), True)
    assert chief_watch is None and beacon == (1, ["ps:0", "ps:1", "worker:0"])
    assert ps_watch.down() == [TaskId("ps", 0), TaskId("ps", 1)]  # not probed yet
    for task in ("ps:1", "worker:0", "evaluator"):
        ps_watch, chief_watch, beacon = peers.watches(_plans(cluster, task), True)
        assert ps_watch is None and beacon is None and chief_watch.address == "h0:1"
    assert peers.watches(_plans(cluster, "chief"), False) == (None, None, None)
    everything = _plans(cluster, "chief", "ps:0", "ps:1", "worker:0")  # an all-local launch
    assert peers.watches(everything, True) == (None, None, None)


@pytest.mark.parametrize("env, engine", [
    ({"TF_CONFIG": json.dumps({"cluster": {}})}, True), ({"SLURM_PROCID": "3"}, True),
    ({"TF_CONFIG": ""}, False), ({}, False)])
def test_launchers_watch_each_other_only_when_an_engine_described_the_task(env, engine):
    assert peers.engine_launched(env) is engine


@pytest.mark.parametrize("data, code", [(b"tfps-chief done 0\n", 0), (b"tfps-chief done 143\n",
                                                                         143),
                                        (b"tfps-chief done x\n", None), (b"\x00\x00\x06", None),
                                        (b"", None), (b"tfps-chief done 12345\n", None)])
def test_parse_done(data, code):
    assert peers.parse_done(data) == code


# ---- the failure rule across hosts -----------------------------------------------------
CHIEF, PS0, PS1 = TaskId("chief", 0), TaskId("ps", 0), TaskId("ps", 1)


def test_a_chief_failing_after_a_remote_ps_was_lost_waits_for_it_and_restarts():
    decision = decide([Death(CHIEF, 1)], lost=[PS1, PS0])
    assert (decision.action, decision.restart, decision.wait_for) == (
        "restart", (CHIEF,), (PS1, PS0))
    # The lost ps come first in the table: the root cause.
    assert decision.failures == (Death(PS1, None), Death(PS0, None), Death(CHIEF, 1))


def test_without_a_lost_ps_the_chiefs_own_error_is_final():
    assert decide([Death(CHIEF, 3)], lost=[TaskId("worker", 0)]) == decide([Death(CHIEF, 3)])
    assert decide([Death(CHIEF, 3)]).action == "finish"
    assert decide([Death(CHIEF, 0)], lost=[PS0]).action == "finish"  # success is success


def test_failure_table_shows_a_remote_task_as_unreachable():
    table = failure_table([Failure(PS0, None, None, 12.0, True), Failure(CHIEF, 7, 1, 12.0, True)])
    row = table.splitlines()[2].split()
    assert row[:5] == ["ps:0", "ps", "0", "-", "unreachable"] and table.splitlines()[2].endswith(
        "<- root cause")
