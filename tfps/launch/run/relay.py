"""Launchers asking each other to restart a hung task, while the chief runs: UDP datagrams.

Under an engine (``--from-env``) every task has a launcher of its own, on its own host. The
chief finds a worker hung (`tfps.train.health`), but only the worker's own launcher can kill
and restart it. TF's servers hold the cluster's TCP ports, so the request travels as a UDP
datagram to the worker's own address and port number (TF serves TCP only; the worker's
launcher binds the same number for UDP). The chief's launcher sends

    tfps-hung <cluster> <task> <seconds> <nonce>

every half second until the worker's launcher answers ``tfps-ack <nonce>`` (at most
`_SEND_FOR_S` seconds); ``<cluster>`` is a digest of the cluster's addresses, so that a
datagram meant for another cluster is ignored. Like TF's own ports and the chief's beacon
(`tfps.launch.run.peers`), this is unauthenticated: isolation is the network's job, and a
network policy must let UDP through on the task ports. No threads: `Relay.poll` is called
from the supervisor's loop.

>>> parse_request(request_line("c0ffee", "worker:1", 63.2, "n1"), "c0ffee")
('worker:1', 63.2, 'n1')
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import time
from collections.abc import Callable, Mapping

from tfps.cluster import split_address

__all__ = ["Relay", "cluster_key", "parse_request", "request_line"]

_REQUEST = b"tfps-hung "
_ACK = b"tfps-ack "
# A request is sent again this often until acknowledged, for at most this long.
_RESEND_S = 0.5
_SEND_FOR_S = 15.0


def cluster_key(cluster: Mapping) -> str:
    """A short digest of a cluster's addresses (``TF_CONFIG``'s ``cluster``)."""
    text = json.dumps({k: list(v) for k, v in sorted(cluster.items()) if k != "evaluator"},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def request_line(key: str, task: str, seconds: float, nonce: str) -> bytes:
    return _REQUEST + f"{key} {task} {seconds:.1f} {nonce}\n".encode()


def parse_request(data: bytes, key: str) -> tuple[str, float, str] | None:
    """``(task, seconds, nonce)`` of a request for cluster `key`, or None."""
    if not data.startswith(_REQUEST):
        return None
    words = data[len(_REQUEST):].decode("ascii", "replace").split()
    if len(words) != 4 or words[0] != key:
        return None
    try:
        return words[1], float(words[2]), words[3]
    except ValueError:
        return None


def _bind(port: int) -> socket.socket:
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError:
            continue
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, port))
            sock.setblocking(False)
            return sock
        except OSError:
            sock.close()
            if family == socket.AF_INET:
                raise
    raise OSError("no UDP socket")


class Relay:
    """One launcher's end: receives requests for its own task on `port` (None: only sends).

    Args:
      key: the cluster's `cluster_key`.
      port: this launcher's task port, to receive requests on; None for the chief's.
      clock: seconds, monotonic (tests pass a fake).
    """

    def __init__(self, key: str, port: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._key, self._clock = key, clock
        self._sock = _bind(0 if port is None else port)
        self._pending: dict[str, tuple[bytes, tuple, float, float]] = {}  # nonce -> ...
        self._seen: set[str] = set()

    def ask(self, address: str, task: str, seconds: float) -> None:
        """Asks the launcher of `task` (at `address`) to restart it; sent until answered."""
        host, port = split_address(address)
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError):
            return
        family = self._sock.family
        match = [i for i in info if i[0] == family] or info
        sockaddr = match[0][4]
        if family == socket.AF_INET6 and match[0][0] == socket.AF_INET:
            sockaddr = ("::ffff:" + sockaddr[0], sockaddr[1], 0, 0)
        nonce = secrets.token_hex(6)
        now = self._clock()
        self._pending[nonce] = (request_line(self._key, task, seconds, nonce), sockaddr, now, 0.0)

    def poll(self) -> list[tuple[str, float]]:
        """Sends what is due; returns ``(task, seconds)`` of each new request received."""
        received = []
        while True:
            try:
                data, sender = self._sock.recvfrom(512)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if data.startswith(_ACK):
                self._pending.pop(data[len(_ACK):].decode("ascii", "replace").strip(), None)
                continue
            request = parse_request(data, self._key)
            if request is None:
                continue
            task, seconds, nonce = request
            self._send(_ACK + nonce.encode() + b"\n", sender)
            if nonce not in self._seen:
                self._seen.add(nonce)
                received.append((task, seconds))
        now = self._clock()
        for nonce, (line, sockaddr, first, last) in list(self._pending.items()):
            if now - first > _SEND_FOR_S:
                del self._pending[nonce]
            elif now - last >= _RESEND_S:
                self._send(line, sockaddr)
                self._pending[nonce] = (line, sockaddr, first, now)
        return received

    def _send(self, data: bytes, sockaddr) -> None:
        try:
            self._sock.sendto(data, sockaddr)
        except OSError:
            pass

    @property
    def unanswered(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        self._sock.close()
