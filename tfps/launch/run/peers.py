"""Launchers that watch each other across hosts: one task per launcher, under an engine.

Under Slurm or Kubeflow every task has a launcher of its own (``tfps-launch --from-env``) on
its own host. They share nothing but the cluster's addresses, so they learn about each other
through those, with plain TCP connections:

* **ps watch** (the chief's launcher, `PsWatch`): connects to every ps address twice a
  second while the chief runs. A refused (or timed-out) connection means that ps is gone; its
  own launcher restarts it in place. TF cannot recover a lost ps in place (the coordinator
  only tolerates worker failures), so the chief then fails (``UnavailableError``, exit 1).
  Knowing why, the chief's launcher waits until every ps accepts connections again and
  restarts the chief, which resumes from its latest checkpoint (`tfps.launch.run.failures`).
* **chief beacon** (the chief's launcher, `announce`): once the chief has finished for good,
  the launcher listens on the chief's own port, free again, and answers every connection
  with one line, ``tfps-chief done CODE``, until every ps and worker has acknowledged it
  (at least `BEACON_MIN_S`, at most `BEACON_MAX_S` seconds).
* **chief watch** (every other launcher, `ChiefWatch`): connects to the chief's address once
  a second; a TF server there says nothing tfps understands, the beacon says ``done``. Then
  the launcher ends its task and exits 0: a step (``srun``) ends when its chief does, and a
  side-car evaluator stops with the job.

No threads: a launcher that made a PID namespace cannot start any (`tfps.launch.run.logs`), so
every connection is non-blocking and advanced by ``poll()`` from the supervisor's loop.
Like TF's own ports, the beacon is unauthenticated: isolation is the network's job.

>>> done_line(0)
b'tfps-chief done 0\\n'
>>> parse_done(b"tfps-chief done 3\\n")
3
"""

from __future__ import annotations

import errno
import os
import select
import selectors
import socket
import time
from collections.abc import Callable, Mapping, Sequence

from tfps.cluster import TaskId, split_address
from tfps.launch.run.plan import TaskPlan, label

__all__ = ["BEACON_MAX_S", "BEACON_MIN_S", "PS_RETURN_S", "ChiefWatch", "PsWatch",
           "announce", "done_line", "engine_launched", "parse_done", "probe_now", "watches"]

# The chief's launcher probes each ps this often. A restarted ps may listen again within a
# second (a server imports no TF Python API), so a loss can fall between two looks: the
# process's incarnation in TF's GetStatus answers shows it then (`HangWatch.replaced_now`,
# asked at once when the chief fails).
_PS_EVERY_S = 0.5
# Other launchers look at the chief this often; the beacon outlasts several looks.
_CHIEF_EVERY_S = 1.0
# A connection not established by then counts as refused (a host gone, a dropped SYN).
_CONNECT_TIMEOUT_S = 2.0
# The beacon writes its line as soon as it accepts; a TF server writes no such line.
_READ_TIMEOUT_S = 0.5
# How long the beacon answers: at least a few of the watchers' looks (an evaluator is not in
# the chief's cluster, so it is not waited for by name), at most until every ps and worker
# acknowledged or this many seconds passed.
BEACON_MIN_S = 3.0
BEACON_MAX_S = 10.0
# How long the chief's launcher waits for a lost ps to listen again before it gives up.
PS_RETURN_S = 300.0
_TIMED_OUT = "timed out"
_SLOW_LOOK_FACTOR = 10
# A connection that merely timed out (a SYN dropped under load) counts as a loss only when
# the next one times out too; a refused one (nothing listens: the process is gone) at once.
_TIMEOUTS_FOR_LOSS = 2
_DONE = b"tfps-chief done "
_ACK = b"ack "


def done_line(code: int) -> bytes:
    return _DONE + str(code).encode() + b"\n"


def parse_done(data: bytes) -> int | None:
    """The chief's exit code from a beacon line, or None when `data` is anything else."""
    if not data.startswith(_DONE):
        return None
    text = data[len(_DONE):].split(b"\n", 1)[0]
    return int(text) if text.isdigit() and len(text) <= 3 else None


def engine_launched(environ: Mapping[str, str] | None = None) -> bool:
    """Whether an engine described this launcher's task (``--from-env``: a ``TF_CONFIG`` or a
    Slurm step in the environment): only then do launchers watch each other."""
    env = os.environ if environ is None else environ
    return bool(env.get("TF_CONFIG")) or "SLURM_PROCID" in env


def watches(plans: Sequence[TaskPlan], enabled: bool):
    """What a launcher running `plans` watches: ``(ps_watch, chief_watch, beacon)``.

    The chief's launcher gets a `PsWatch` of the ps tasks it does not run, and a beacon
    ``(chief's port, labels of the other tasks)``; any other launcher a `ChiefWatch`. All
    None when not `enabled`, or when this launcher runs every task of its cluster.
    """
    cluster = plans[0].tf_config.get("cluster", {}) if plans else {}
    here = {p.task: p for p in plans}
    others = {TaskId(role, i): address for role, addresses in cluster.items()
              for i, address in enumerate(addresses) if TaskId(role, i) not in here}
    chief = TaskId("chief", 0)
    if not (enabled and others):
        return None, None, None
    if chief in here:
        port = split_address(here[chief].address)[1]
        return (PsWatch({t: a for t, a in others.items() if t.type == "ps"}), None,
                (port, [label(t) for t in others]))
    if chief in others:
        return None, ChiefWatch(others[chief], plans[0].label), None
    return None, None, None


def _addresses(address: str):
    host, port = split_address(address)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # IPv4 first: the beacon may have only an IPv4 socket; TF servers listen on both.
    return sorted(infos, key=lambda info: info[0] != socket.AF_INET)


def _next_look(started: float, now: float, every: float) -> float:
    # Resolving a host name blocks (getaddrinfo cannot be made asynchronous here): when it
    # was slow, look less often, so that the supervisor's loop stays responsive.
    return now + max(every, _SLOW_LOOK_FACTOR * (now - started))


def probe_now(address: str, timeout: float = _CONNECT_TIMEOUT_S) -> tuple[bool, str]:
    """Whether `address` accepts a TCP connection now (blocking, at most `timeout`), and
    if not, why."""
    try:
        host, port = split_address(address)
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except TimeoutError:
        return False, _TIMED_OUT
    except (socket.gaierror, UnicodeError, ValueError):
        return False, "cannot resolve its host"
    except OSError as e:
        return False, (e.strerror or str(e)).lower()


class _Probe:
    """One non-blocking connection to `address`; `step` advances it, `result` ends it.

    result: ``"up"`` (connected), ``"down"`` (refused, unresolvable or timed out); with
    `ack`, also reads what the server says first into `data` and answers a beacon with `ack`.
    """

    def __init__(self, address: str, now: float, ack: bytes | None = None):
        self.started, self.ack = now, ack
        self.connected_at: float | None = None
        self.result: str | None = None
        self.reason = ""  # why "down": refused, timed out, cannot resolve
        self.data = b""
        self.sock: socket.socket | None = None
        try:
            family, kind, proto, _, sockaddr = _addresses(address)[0]
        except (OSError, ValueError, UnicodeError, IndexError):
            self._finish("down", "cannot resolve its host")
            return
        try:
            self.sock = socket.socket(family, kind, proto)
            self.sock.setblocking(False)
            err = self.sock.connect_ex(sockaddr)
        except OSError as e:
            err = e.errno or errno.EIO
        if err == 0:
            self._connected(now)
        elif err not in (errno.EINPROGRESS, errno.EAGAIN):
            self._finish("down", os.strerror(err).lower())

    def _connected(self, now: float) -> None:
        self.connected_at = now
        if self.ack is None:
            self._finish("up")

    def _finish(self, result: str, reason: str = "") -> None:
        self.result, self.reason = result, reason
        if self.sock is not None:
            if parse_done(self.data) is not None and self.ack:
                try:
                    self.sock.send(self.ack)
                except OSError:
                    pass
            self.sock.close()
            self.sock = None

    def step(self, now: float) -> None:
        if self.result is not None:
            return
        if self.connected_at is None:
            _, writable, _ = select.select([], [self.sock], [], 0)
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if writable else 0
            if writable and not err:
                self._connected(now)
            elif writable:
                self._finish("down", os.strerror(err).lower())
            elif now - self.started > _CONNECT_TIMEOUT_S:
                self._finish("down", _TIMED_OUT)
            return
        try:
            self.data = self.sock.recv(256)
            self._finish("up")
        except BlockingIOError:
            if now - self.connected_at > _READ_TIMEOUT_S:
                self._finish("up")
        except OSError:
            self._finish("up")


class PsWatch:
    """The chief's launcher: which ps tasks (on other hosts) became unreachable, and why.

    Args:
      ps: ``{TaskId("ps", i): "host:port"}`` of every ps task the launcher does not run.
      clock: seconds, monotonic (tests pass a fake).
    """

    def __init__(self, ps: Mapping[TaskId, str], clock: Callable[[], float] = time.monotonic):
        self._ps = dict(ps)
        self._clock = clock
        self._probes: dict[TaskId, _Probe] = {}
        self._due = 0.0
        self._up: dict[TaskId, bool] = {}
        self._timeouts: dict[TaskId, int] = {}
        self._seen_up: set[TaskId] = set()
        self._lost: dict[TaskId, tuple[float, str]] = {}

    def reset(self) -> None:
        """Forgets losses: called whenever the chief (re)starts."""
        self._lost.clear()

    def _record(self, task: TaskId, up: bool, reason: str, now: float) -> None:
        self._up[task] = up
        timeouts = self._timeouts[task] = (self._timeouts.get(task, 0) + 1
                                           if reason == _TIMED_OUT else 0)
        if up:
            self._seen_up.add(task)
        # A ps that never listened yet is starting (importing TF takes seconds), not lost.
        elif task in self._seen_up and (reason != _TIMED_OUT or
                                        timeouts >= _TIMEOUTS_FOR_LOSS):
            self._lost.setdefault(task, (now, reason))

    def poll(self) -> None:
        now = self._clock()
        for task, p in list(self._probes.items()):
            p.step(now)
            if p.result is not None:
                del self._probes[task]
                self._record(task, p.result == "up", p.reason, now)
        if now >= self._due and not self._probes:
            self._probes = {t: _Probe(a, now) for t, a in self._ps.items()}
            self._due = _next_look(now, self._clock(), _PS_EVERY_S)

    def check_now(self) -> None:
        """Probes every ps at once (blocking, a few seconds at most): the chief may have
        failed on a lost ps before the next look."""
        for task, address in self._ps.items():
            up, reason = probe_now(address)
            self._record(task, up, reason, self._clock())

    def mark_lost(self, task: TaskId, reason: str) -> None:
        """Records `task` as lost for `reason` (seen otherwise: a new process answers there)."""
        if task in self._ps:
            self._lost.setdefault(task, (self._clock(), reason))

    def lost(self) -> list[TaskId]:
        """The ps tasks seen unreachable since the last `reset`, first loss first."""
        return sorted(self._lost, key=lambda t: self._lost[t][0])

    def why(self, task: TaskId) -> str:
        """``host:port: connection refused``: where `task` was lost, and how."""
        return f"{self._ps[task]}: {self._lost.get(task, (0, 'reachable'))[1]}"

    def down(self) -> list[TaskId]:
        """The ps tasks whose latest probe failed."""
        return [t for t in self._ps if not self._up.get(t, False)]


class ChiefWatch:
    """Any other launcher: polls the chief's address until its launcher says it is done.

    Args:
      address: the chief's ``host:port``.
      label: this launcher's task (``ps:0``), sent back as the acknowledgement.
    """

    def __init__(self, address: str, label: str, clock: Callable[[], float] = time.monotonic):
        self.address = address
        self._ack = _ACK + label.encode() + b"\n"
        self._clock = clock
        self._probe: _Probe | None = None
        self._due = 0.0

    def poll(self) -> int | None:
        """The chief's exit code once its launcher announced it, else None."""
        now = self._clock()
        if self._probe is not None:
            self._probe.step(now)
            if self._probe.result is None:
                return None
            code = parse_done(self._probe.data)
            self._probe = None
            if code is not None:
                return code
        if now >= self._due:
            self._probe = _Probe(self.address, now, ack=self._ack)
            self._due = _next_look(now, self._clock(), _CHIEF_EVERY_S)
        return None


def _listen(port: int) -> socket.socket:
    """A listening socket on `port`, all interfaces, IPv6 and IPv4 where possible."""
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind((host, port))
            s.listen(128)
            s.setblocking(False)
            return s
        except OSError:
            s.close()
            if family == socket.AF_INET:
                raise
    raise OSError(errno.EAFNOSUPPORT, "no IPv4 or IPv6 socket")


def announce(port: int, code: int, expected: Sequence[str],
             stop: Callable[[], bool] = lambda: False, *, min_s: float = BEACON_MIN_S,
             max_s: float = BEACON_MAX_S) -> set[str]:
    """Serves ``tfps-chief done CODE`` on `port` (module docstring); returns who acknowledged.

    Returns once every label of `expected` acknowledged and `min_s` passed, after `max_s`, or
    as soon as `stop()` is true. Raises OSError if the port cannot be bound.
    """
    line, acked = done_line(code), set()
    listener = _listen(port)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    t0 = time.monotonic()
    try:
        while not stop():
            elapsed = time.monotonic() - t0
            if elapsed >= max_s or (elapsed >= min_s and acked.issuperset(expected)):
                break
            for key, _ in selector.select(0.1):
                if key.fileobj is listener:
                    try:
                        conn, _ = listener.accept()
                        conn.setblocking(False)
                        conn.send(line)
                    except OSError:
                        continue
                    selector.register(conn, selectors.EVENT_READ)
                    continue
                conn = key.fileobj
                try:
                    data = conn.recv(256)
                except OSError:
                    data = b""
                for ack in data.splitlines():
                    if ack.startswith(_ACK):
                        acked.add(ack[len(_ACK):].decode("ascii", "replace"))
                selector.unregister(conn)
                conn.close()
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()
        selector.close()
    return acked
