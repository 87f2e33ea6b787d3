"""Hang detection without TensorFlow: the GetStatus probe against fake HTTP/2 servers (one
that answers, one that never reads: a stopped process), the chief's closure tracker and its
timeout rule, the chief's reports, the launcher's `HangWatch`, the relay between launchers,
and the failure table's ``hung`` rows."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import pytest

from tfps.cluster import Cluster, TaskId
from tfps.launch.run import channel, relay, rpc
from tfps.launch.run.failures import EXIT_GAVE_UP, Death, Failure, decide, failure_table
from tfps.launch.run.hangs import HangWatch
from tfps.launch.run.plan import plan_tasks
from tfps.train.health import ClosureTracker, derive_timeout


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ fake servers
def _frame(kind, flags, stream, payload=b""):
    return struct.pack(">BHBBI", len(payload) >> 16, len(payload) & 0xFFFF, kind, flags,
                       stream) + payload


def _status_message(incarnation: int) -> bytes:
    """A gRPC-framed GetStatusResponse with one device of `incarnation`."""
    device = bytes([0x0A, 3]) + b"cpu" + bytes([0x31]) + incarnation.to_bytes(8, "little")
    body = bytes([0x0A, len(device)]) + device
    return b"\0" + len(body).to_bytes(4, "big") + body


class H2Server:
    """Answers every connection's first request as a TF server does: SETTINGS, HEADERS, the
    GetStatusResponse (its device's `incarnation`) ending the stream; or never reads
    (`stopped`)."""

    def __init__(self, stopped: bool = False, incarnation: int = 41):
        self.incarnation = incarnation
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        if not stopped:  # a stopped process: the kernel completes connects, nobody reads
            threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                data = b""
                while b"/tensorflow.WorkerService/GetStatus" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                conn.sendall(_frame(4, 0, 0) + _frame(1, 4, 1, b"\x88")
                             + _frame(0, 1, 1, _status_message(self.incarnation)))

    def close(self):
        self._stop.set()
        self.sock.close()


@pytest.fixture
def servers():
    made = []
    yield lambda **kw: made.append(H2Server(**kw)) or made[-1]
    for server in made:
        server.close()


def test_get_status_is_answered_by_a_live_server(servers):
    server = servers()
    call = rpc.call_now(server.address, timeout=5)
    assert call.result == "answered" and call.seconds < 5 and call.incarnation == 41
    request = server.requests[0]
    assert request.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert b"application/grpc" in request


def test_a_stopped_server_accepts_the_connection_but_never_answers(servers):
    server = servers(stopped=True)
    socket.create_connection(("127.0.0.1", int(server.address.rsplit(":", 1)[1]))).close()
    call = rpc.call_now(server.address, timeout=0.5)
    assert call.result == "silent"
    assert "no answer to GetStatus within 0.5s" in call.reason


def test_nothing_listening_is_refused_not_silent():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    call = rpc.call_now(f"127.0.0.1:{port}", timeout=2)
    assert call.result == "refused"


def test_the_hpack_integer_of_a_long_authority_is_multi_byte():
    assert rpc.request_bytes("h" * 300 + ":1").count(b"h" * 300) == 1


def test_prober_counts_silence_only_after_a_first_answer(servers):
    clock = FakeClock()
    server = servers()
    prober = rpc.Prober({"ps:0": server.address, "ps:1": "127.0.0.1:1"}, timeout=5,
                        clock=clock)
    deadline = time.monotonic() + 5
    while "ps:0" not in prober.answered_at and time.monotonic() < deadline:
        prober.poll()
        time.sleep(0.01)
    assert "ps:0" in prober.answered_at
    clock.now += 42
    assert prober.silent_for("ps:0") == 42
    assert prober.silent_for("ps:1") == 0  # never answered: starting, not hung
    assert prober.settled_since() is None  # not every task answers
    assert prober.replaced == []
    server.incarnation = 42  # a new process serves ps:0 (a restart between two looks)
    deadline = time.monotonic() + 5
    while not prober.replaced and time.monotonic() < deadline:
        clock.now += 1
        prober.poll()
        time.sleep(0.01)
    assert prober.replaced == ["ps:0"]
    prober.restarted("ps:0")
    assert prober.silent_for("ps:0") == 0
    prober.close()


def test_check_now_sees_a_new_process_without_waiting_for_the_next_look(servers):
    """A chief that failed because its ps was restarted exits within a second; the launcher
    asks the ps at once rather than at the next poll, whose look may be a second away."""
    clock = FakeClock()
    server = servers()
    prober = rpc.Prober({"ps:0": server.address}, timeout=5, every=3600, clock=clock)
    prober.check_now(["ps:0"])
    assert prober.incarnation == {"ps:0": 41} and prober.replaced == []
    prober.poll()  # a look in flight, due again in an hour
    server.incarnation = 42
    prober.check_now(["ps:0"])
    assert prober.replaced == ["ps:0"] and prober.incarnation == {"ps:0": 42}
    prober.close()


# ------------------------------------------------------------------ the chief's tracker
def test_derived_timeout_has_a_floor_and_follows_slow_closures():
    assert derive_timeout(30, []) == 30
    assert derive_timeout(30, [0.1, 0.2]) == 30
    assert derive_timeout(5, [1.5, 0.7]) == 15


def test_a_worker_holding_a_closure_past_the_timeout_is_hung():
    clock, wall = FakeClock(), FakeClock(5000.0)
    tracker = ClosureTracker(2, floor=10, clock=clock, wall=wall)
    for worker in (0, 1):  # one finished closure each: no first-run allowance any more
        tracker.started(worker, 100 + worker, "train")
        clock.now += 0.5
        tracker.ended(worker, "done")
    tracker.started(0, 1, "train")
    tracker.started(1, 2, "train")
    clock.now += 0.5
    tracker.ended(1, "done")
    clock.now += 9
    assert tracker.hung() == []
    clock.now += 1
    [hung] = tracker.hung()
    assert hung.task == "worker:0" and hung.seconds == pytest.approx(10.5)
    assert hung.since == 5000.0  # the episode: when worker 0 took the closure
    assert tracker.done == {0: 1, 1: 2}


def test_first_runs_get_three_timeouts():
    clock = FakeClock()
    tracker = ClosureTracker(1, floor=10, clock=clock)
    tracker.started(0, 1, "train")
    clock.now += 25
    assert tracker.hung() == []  # a worker's first closure registers the function
    clock.now += 6
    assert [h.task for h in tracker.hung()] == ["worker:0"]


def test_a_put_back_closure_run_again_counts_as_failed_and_rerun():
    tracker = ClosureTracker(2, floor=10, clock=FakeClock())
    tracker.started(1, 7, "train")
    tracker.ended(1, "put_back")  # worker 1 died: TF puts its closure back
    tracker.started(0, 7, "train")
    tracker.ended(0, "done")
    assert tracker.failed[1] == 1 and tracker.rerun[0] == 1 and tracker.done[0] == 1
    assert tracker.hung() == []


# ------------------------------------------------------------------ reports and the watch
def _plans(tmp_path, **counts):
    cluster = Cluster.local(**counts)
    return plan_tasks(cluster, [t for t, _ in cluster.tasks()], script="train.py",
                      python="python")


def test_report_round_trip_and_garbage(tmp_path):
    path = str(tmp_path / "r.json")
    assert channel.read_report(path) is None
    report = channel.ChiefReport(heartbeat=1.0, timeout=30.0,
                                 hung=(channel.HungTask("worker:0", 40.0, 2.0),), step=7)
    channel.write_atomic(path, report.to_json().encode())
    assert channel.read_report(path) == report
    (tmp_path / "r.json").write_text("{not json")
    assert channel.read_report(path) is None


def test_hang_watch_reads_the_chief_report_once_per_episode(tmp_path, monkeypatch):
    clock, wall = FakeClock(), FakeClock(5000.0)
    watch = HangWatch(_plans(tmp_path, num_ps=1, num_workers=2), timeout=10, clock=clock,
                      wall=wall)
    env = watch.env_for(TaskId("chief", 0))
    assert env[channel.HANG_TIMEOUT_ENV] == "10"
    path = env[channel.HEALTH_FILE_ENV]
    report = channel.ChiefReport(heartbeat=5000.0, timeout=10.0,
                                 hung=(channel.HungTask("worker:1", 12.0, 4980.0),))
    channel.write_atomic(path, report.to_json().encode())
    running = lambda task: True  # noqa: E731
    [hang] = watch.poll(running)
    assert hang.task == TaskId("worker", 1) and hang.why == "no progress for 12 s"
    assert "said the chief" in hang.how and hang.elsewhere is None
    assert watch.poll(running) == []  # the same episode is acted on once
    wall.now += 11  # the chief's reports stopped, but a server does not answer (yet):
    assert watch.poll(running) == []  # TF may block the chief while it reconnects
    settled = clock.now - 30  # every server has answered for 30 s
    monkeypatch.setattr(rpc.Prober, "settled_since", lambda self: settled)
    [hang] = watch.poll(running)
    assert hang.task == TaskId("chief", 0) and "no report" in hang.how
    settled = clock.now - 5  # a server came back 5 s ago: the chief gets the timeout again
    assert watch.poll(running) == []
    channel.write_atomic(path, channel.ChiefReport(heartbeat=4000.0, timeout=10.0,
                                                   exiting=True).to_json().encode())
    settled = clock.now - 30
    assert watch.poll(running) == []  # exiting: TF's teardown may block it, not a hang
    env = watch.env_for(TaskId("chief", 0))  # a restarted chief reports elsewhere
    assert env[channel.HEALTH_FILE_ENV] != path
    assert watch.poll(running) == []
    watch.close()


def test_hang_watch_declares_a_silent_server_hung(servers):
    clock = FakeClock()
    server = servers()  # the fake stands in for ps:0
    cluster = Cluster.from_dict({"chief": ["localhost:1"], "ps": [server.address],
                                 "worker": ["localhost:2"]})
    plans = plan_tasks(cluster, [TaskId("ps", 0)], script="train.py", python="python")
    ps = plans[0]
    watch = HangWatch(plans, timeout=5, clock=clock)
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        assert watch.poll(lambda t: True) == []
        time.sleep(0.01)
    time.sleep(0.1)
    assert watch.poll(lambda t: True) == []  # the answer is in
    server.close()
    clock.now += 6
    hangs = watch.poll(lambda t: True)
    assert [(h.task, h.why) for h in hangs] == [(ps.task, "no progress for 6 s")]
    assert watch.poll(lambda t: False) == []  # killed: no longer running
    watch.close()


# ------------------------------------------------------------------ relay
def test_relay_delivers_a_request_once_and_stops_resending_when_acknowledged():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = relay.cluster_key({"chief": ["a:1"], "worker": [f"localhost:{port}"]})
    worker_end, chief_end = relay.Relay(key, port), relay.Relay(key)
    other_cluster = relay.Relay("0" * 16)
    chief_end.ask(f"localhost:{port}", "worker:0", 63.0)
    other_cluster.ask(f"localhost:{port}", "worker:0", 1.0)
    got = []
    deadline = time.monotonic() + 5
    while chief_end.unanswered and time.monotonic() < deadline:
        chief_end.poll()
        other_cluster.poll()
        got += worker_end.poll()
        time.sleep(0.05)
    assert got == [("worker:0", 63.0)] and chief_end.unanswered == 0
    for end in (worker_end, chief_end, other_cluster):
        end.close()


# ------------------------------------------------------------------ failures
def test_a_hung_task_is_a_death_and_its_row_says_hung():
    worker = TaskId("worker", 1)
    decision = decide([Death(worker, -9, hung="no progress for 63 s")])
    assert decision.action == "restart" and decision.restart == (worker,)
    ps = decide([Death(TaskId("ps", 0), -9, hung="no progress for 5 s")])
    assert ps.restart == (TaskId("ps", 0), TaskId("chief", 0))
    table = failure_table([Failure(worker, 41, -9, 80.0, True, hung="no progress for 63 s")])
    assert "hung (no progress for 63 s)" in table.splitlines()[2]


def test_giving_up_is_retryable():
    assert EXIT_GAVE_UP == 143


def test_report_json_is_plain():
    report = channel.ChiefReport(heartbeat=1.5, timeout=30.0)
    assert json.loads(report.to_json()) == {"heartbeat": 1.5, "timeout": 30.0, "hung": [],
                                            "step": 0, "exiting": False}


def test_a_ps_served_by_a_new_process_counts_as_lost_for_the_chief():
    from tfps.launch.run.peers import PsWatch

    ps = TaskId("ps", 0)
    watch = PsWatch({ps: "node1:2222"}, clock=FakeClock())
    watch.mark_lost(ps, "restarted: a new process answers")
    watch.mark_lost(TaskId("worker", 0), "not a ps of this watch")
    assert watch.lost() == [ps]
    assert watch.why(ps) == "node1:2222: restarted: a new process answers"
    watch.reset()  # the chief restarted
    assert watch.lost() == []
