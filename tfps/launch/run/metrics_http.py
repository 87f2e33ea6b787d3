"""``--metrics-port PORT``: the chief's Prometheus metrics at http://127.0.0.1:PORT/metrics.

The chief renders its metrics into a file (`tfps.train.metrics`); the launcher serves that
file. The launcher binds the port *before* it enters the tasks' private network namespace
(`listen`), so the socket stays on the host's loopback: ``curl 127.0.0.1:PORT/metrics`` works
on the launcher's host however the tasks are isolated, and nothing else of the cluster is
reachable through it. Without the flag nothing listens.

Like the rest of the launcher, no threads: `MetricsServer.serve` accepts and answers what is
pending, non-blocking, from the supervisor's loop. Only ``GET /metrics`` (and ``/``) are
answered; HTTP/1.0 semantics, one request per connection.
"""

from __future__ import annotations

import errno
import socket
import time

__all__ = ["MetricsServer", "listen"]

# A request head bigger than this is not a scraper's.
_MAX_REQUEST = 8192
# A client that has not sent its request by then is dropped.
_CLIENT_TIMEOUT_S = 5.0
_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_EMPTY = b"# tfps: the chief has not reported metrics yet\n"


def listen(port: int, host: str = "127.0.0.1") -> socket.socket:
    """A listening, non-blocking socket on `host`:`port`. Raises OSError (EADDRINUSE, ...)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Client:
    def __init__(self, sock: socket.socket, now: float):
        self.sock, self.started = sock, now
        self.request = b""
        self.reply: bytes | None = None


class MetricsServer:
    """Serves the file at `path` as ``/metrics`` on the listening socket `sock`."""

    def __init__(self, sock: socket.socket, path: str | None):
        self._sock, self._path = sock, path
        self._clients: list[_Client] = []

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    def serve(self) -> None:
        """Accepts new connections and advances every open one; never blocks."""
        now = time.monotonic()
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ECONNABORTED):
                    break
                raise
            conn.setblocking(False)
            self._clients.append(_Client(conn, now))
        self._clients = [c for c in self._clients if self._step(c, now)]

    def _step(self, client: _Client, now: float) -> bool:
        """Advances `client`; False once it is closed."""
        try:
            if client.reply is None:
                chunk = client.sock.recv(_MAX_REQUEST)
                client.request += chunk
                if b"\r\n\r\n" in client.request or b"\n\n" in client.request or not chunk:
                    client.reply = self._answer(client.request)
                elif len(client.request) > _MAX_REQUEST:
                    client.reply = _response(431, b"request too large\n")
            if client.reply is not None:
                sent = client.sock.send(client.reply)
                client.reply = client.reply[sent:]
                if not client.reply:
                    client.sock.close()
                    return False
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            client.sock.close()
            return False
        if now - client.started > _CLIENT_TIMEOUT_S:
            client.sock.close()
            return False
        return True

    def _answer(self, request: bytes) -> bytes:
        words = request.split(b"\r\n", 1)[0].split()
        if len(words) < 2 or words[0] not in (b"GET", b"HEAD"):
            return _response(405, b"only GET\n")
        if words[1].split(b"?", 1)[0] not in (b"/metrics", b"/"):
            return _response(404, b"not found: try /metrics\n")
        body = _EMPTY
        if self._path:
            try:
                with open(self._path, "rb") as f:
                    body = f.read()
            except FileNotFoundError:
                pass
            except OSError as e:
                return _response(503, f"cannot read the metrics: {e.strerror}\n".encode())
        return _response(200, b"" if words[0] == b"HEAD" else body, _CONTENT_TYPE)

    def close(self) -> None:
        for client in self._clients:
            client.sock.close()
        self._clients.clear()
        self._sock.close()


def _response(status: int, body: bytes, content_type: str = "text/plain") -> bytes:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
              431: "Request Header Fields Too Large", 503: "Service Unavailable"}[status]
    head = (f"HTTP/1.0 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body
