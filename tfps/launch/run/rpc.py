"""Is a TF task server alive? One gRPC call it must answer, spoken by hand. No TensorFlow.

A TCP connect cannot tell a hung task from a live one: the kernel completes the handshake for
a process that is stopped (SIGSTOP, a frozen VM), so a connect succeeds while nothing answers.
Only an answer from the process itself proves it runs. Every TF server (ps and worker tasks
alike: a ps is a worker in TF's sense) implements ``/tensorflow.WorkerService/GetStatus``,
whose request (``GetStatusRequest``) is an empty protobuf, so ``b""`` serialises it; a live
server answers within milliseconds, busy or not; a stopped one never does.

The launcher cannot use grpcio for this: it starts threads, and a launcher that made a PID
namespace for its tasks cannot (`tfps.launch.run.logs`). So `GetStatus` speaks the few bytes
of HTTP/2 that one unary call needs: the connection preface, an empty SETTINGS frame, one
HEADERS frame (HPACK literals, no Huffman, no dynamic table) and one DATA frame. The answer
is not decoded: a HEADERS (or RST_STREAM) frame on the call's stream means the server's
handler ran. Non-blocking, advanced by ``step()`` from the supervisor's loop, like
`tfps.launch.run.peers`; `call_now` blocks (for the chief's health thread and tests).

>>> len(request_bytes("localhost:2222")) > 24
True
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Mapping

from tfps.cluster import split_address

__all__ = ["GetStatus", "Prober", "call_now", "request_bytes"]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_PATH = b"/tensorflow.WorkerService/GetStatus"
# HTTP/2 frame types and flags (RFC 9113, section 6).
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0, 1, 3, 4, 6, 7
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4
_STREAM = 1  # the first stream a client opens
# A frame header: 24-bit length, type, flags, 31-bit stream id.
_FRAME = struct.Struct(">BHBBI")
# More than a GetStatus answer and the server's settings ever take: a peer that sends more
# without answering is not a TF server.
_MAX_READ = 1 << 16


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _FRAME.pack(size >> 16, size & 0xFFFF, kind, flags, stream) + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """HPACK's integer with an N-bit prefix (RFC 7541, 5.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out, value = [first | limit], value - limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes(out + [value])


def _hpack_string(text: bytes) -> bytes:
    return _hpack_int(len(text), 7) + text  # H=0: no Huffman


def request_bytes(address: str) -> bytes:
    """Everything a client sends for one GetStatus call to `address`."""
    fields = (
        b"\x83"  # :method POST (static table index 3)
        + b"\x86"  # :scheme http (index 6)
        + _hpack_int(4, 4) + _hpack_string(_PATH)  # :path, literal without indexing
        + _hpack_int(1, 4) + _hpack_string(address.encode("ascii", "replace"))  # :authority
        + b"\x00" + _hpack_string(b"content-type") + _hpack_string(b"application/grpc")
        + b"\x00" + _hpack_string(b"te") + _hpack_string(b"trailers"))
    message = b"\x00" + struct.pack(">I", 0)  # not compressed, 0 bytes: an empty protobuf
    return (_PREFACE + _frame(_SETTINGS, 0, 0)
            + _frame(_HEADERS, _END_HEADERS, _STREAM, fields)
            + _frame(_DATA, _END_STREAM, _STREAM, message))


class GetStatus:
    """One GetStatus call to `address`, advanced by `step` (never blocks).

    ``result`` once finished: ``"answered"`` (the server's handler replied), ``"refused"``
    (nothing listens, or the host is unknown: a task not started yet, or gone),
    ``"silent"`` (connected, but no answer within `timeout` seconds: a hung task), or
    ``"garbled"`` (something else answered: not a TF server). ``reason`` says more, and
    ``seconds`` is the round trip of an answered call.
    """

    def __init__(self, address: str, now: float | None = None, timeout: float = 5.0):
        self.started = time.monotonic() if now is None else now
        self.timeout = timeout
        self.result: str | None = None
        self.reason = ""
        self.seconds: float | None = None
        self._out = request_bytes(address)
        self._in = b""
        self._message = b""  # the answer's DATA: a GetStatusResponse, gRPC-framed
        self.incarnation: int | None = None  # of the first device: new in every process
        self._connected = False
        self.sock: socket.socket | None = None
        try:
            host, port = split_address(address)
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, kind, proto, _, sockaddr = sorted(
                infos, key=lambda info: info[0] != socket.AF_INET)[0]
            self.sock = socket.socket(family, kind, proto)
            self.sock.setblocking(False)
            err = self.sock.connect_ex(sockaddr)
        except (OSError, ValueError, UnicodeError, IndexError) as e:
            self._finish("refused", getattr(e, "strerror", None) or "cannot resolve its host")
            return
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            self._finish("refused", os.strerror(err).lower())

    def _finish(self, result: str, reason: str = "") -> None:
        self.result, self.reason = result, reason
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    @property
    def sending(self) -> bool:
        """Whether bytes of the call still wait to be sent."""
        return bool(self._out)

    def cancel(self) -> None:
        """Gives up the call (closes its socket)."""
        if self.result is None:
            self._finish("refused", "cancelled")

    def step(self, now: float | None = None) -> str | None:
        """Sends and reads what it can now; returns `result` (None while in flight)."""
        now = time.monotonic() if now is None else now
        if self.result is not None:
            return self.result
        try:
            if not self._connected:
                _, writable, _ = select.select([], [self.sock], [], 0)
                if writable:
                    err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        self._finish("refused", os.strerror(err).lower())
                        return self.result
                    self._connected = True
            if self._connected and self._out:
                sent = self.sock.send(self._out)
                self._out = self._out[sent:]
            if self._connected:
                self._read(now)
        except BlockingIOError:
            pass
        except OSError as e:  # reset: the process went away mid-call
            self._finish("refused", (e.strerror or str(e)).lower())
        if self.result is None and self.seconds is not None and now - self.started > self.timeout:
            self._finish("answered", "no end of the answer")  # it started answering
        if self.result is None and now - self.started > self.timeout:
            self._finish("silent", f"no answer to GetStatus within {self.timeout:g}s"
                         if self._connected else f"connect timed out after {self.timeout:g}s")
        return self.result

    def _read(self, now: float) -> None:
        while self.result is None:
            chunk = self.sock.recv(_MAX_READ)  # BlockingIOError: nothing more for now
            if not chunk:
                self._finish("refused", "connection closed")
                return
            self._in += chunk
            self._parse(now)
            if self.result is None and len(self._in) > _MAX_READ:
                self._finish("garbled", "not an HTTP/2 server")

    def _parse(self, now: float) -> None:
        while len(self._in) >= _FRAME.size and self.result is None:
            high, low, kind, flags, stream = _FRAME.unpack_from(self._in)
            size = (high << 16) | low
            if len(self._in) < _FRAME.size + size:
                return
            payload = self._in[_FRAME.size:_FRAME.size + size]
            self._in = self._in[_FRAME.size + size:]
            stream &= 0x7FFFFFFF
            if kind == _SETTINGS and not flags & _ACK:
                self._out += _frame(_SETTINGS, _ACK, 0)
            elif stream == _STREAM and kind in (_HEADERS, _DATA, _RST_STREAM):
                if self.seconds is None:
                    self.seconds = now - self.started  # the handler ran: it answered
                if kind == _DATA:
                    self._message += payload
                if kind == _RST_STREAM or flags & _END_STREAM:
                    self.incarnation = incarnation(self._message)
                    self._finish("answered")
            elif kind == _GOAWAY:  # a live server that refuses the call still answered
                self.seconds = now - self.started
                self._finish("answered", "GOAWAY")
            elif kind > 9:
                self._finish("garbled", "not an HTTP/2 server")
        if self._out and self.sock is not None:
            try:
                sent = self.sock.send(self._out)
                self._out = self._out[sent:]
            except BlockingIOError:
                pass


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


def _fields(data: bytes):
    """``(number, wire type, value)`` of each field of a protobuf message (no schema)."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, i = _varint(data, i)
        elif kind == 1:
            value, i = data[i:i + 8], i + 8
        elif kind == 2:
            size, i = _varint(data, i)
            value, i = data[i:i + size], i + size
        elif kind == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {kind}")
        yield number, kind, value


def incarnation(message: bytes) -> int | None:
    """The incarnation of the first device in a gRPC-framed ``GetStatusResponse``
    (``device_attributes = 1``; `DeviceAttributes.incarnation = 6`, a fixed64 that TF draws
    at random when a process starts: tensorflow/core/framework/device_attributes.proto).

    >>> device = bytes([0x31]) + (7).to_bytes(8, "little")  # field 6, fixed64: 7
    >>> response = bytes([0x0A, len(device)]) + device  # field 1: that device
    >>> incarnation(b"\\0" + len(response).to_bytes(4, "big") + response)
    7
    """
    try:
        for number, kind, device in _fields(message[5:5 + int.from_bytes(message[1:5], "big")]):
            if number == 1 and kind == 2:
                for field, wire, value in _fields(device):
                    if field == 6 and wire == 1:
                        return int.from_bytes(value, "little")
                return None
    except (ValueError, IndexError):
        pass
    return None


def call_now(address: str, timeout: float = 5.0) -> GetStatus:
    """A finished GetStatus call to `address` (blocks at most about `timeout` seconds)."""
    call = GetStatus(address, timeout=timeout)
    while call.step() is None:
        if call.sock is not None:
            select.select([call.sock], [call.sock] if call.sending else [], [], 0.05)
    return call


class Prober:
    """Keeps one GetStatus call in flight to each of `addresses`, one a second; knows when
    each last answered. `poll` never blocks.

    A task that never answered yet is starting (importing TensorFlow takes seconds), not hung:
    `silent_for` counts only from its first answer. `restarted` forgets a task's answers.

    Args:
      addresses: ``{key: "host:port"}``.
      timeout: how long one call may wait for its answer (a hung task's calls all do).
      every: seconds between the starts of two calls to one task.
    """

    def __init__(self, addresses: Mapping, *, timeout: float = 5.0, every: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self._addresses = dict(addresses)
        self._timeout, self._every, self._clock = timeout, every, clock
        self._calls: dict = {}
        self._due: dict = {key: 0.0 for key in self._addresses}
        self.answered_at: dict = {}  # key -> clock() of the latest answer
        self.answering_since: dict = {}  # key -> clock() since which it answers every call
        self.round_trip: dict = {}  # key -> seconds of the latest answer
        self.incarnation: dict = {}  # key -> the process's incarnation in its latest answer
        self.replaced: list = []  # keys whose incarnation changed (a new process), oldest first

    def restarted(self, key) -> None:
        """`key`'s task was restarted: forget it answered; it is starting again."""
        call = self._calls.pop(key, None)
        if call is not None:
            call.cancel()
        self.answered_at.pop(key, None)
        self.answering_since.pop(key, None)
        self.incarnation.pop(key, None)
        self._due[key] = 0.0

    def poll(self) -> None:
        now = self._clock()
        for key, address in self._addresses.items():
            call = self._calls.get(key)
            if call is not None and call.step(now) is not None:
                del self._calls[key]
                self._record(key, call, now)
            if key not in self._calls and now >= self._due[key]:
                self._calls[key] = GetStatus(address, now, timeout=self._timeout)
                self._due[key] = now + self._every

    def check_now(self, keys) -> None:
        """Asks each of `keys` at once, blocking (a couple of seconds at most each), and
        records its answer as `poll` does: a new process there shows in `replaced` now."""
        for key in keys:
            call = self._calls.pop(key, None)
            if call is not None:
                call.cancel()
            call = call_now(self._addresses[key], timeout=min(self._timeout, 2.0))
            self._record(key, call, self._clock())

    def _record(self, key, call: GetStatus, now: float) -> None:
        if call.result != "answered":
            self.answering_since.pop(key, None)
            return
        self.answering_since.setdefault(key, now)
        self.answered_at[key] = now
        self.round_trip[key] = call.seconds
        if call.incarnation is not None:
            if self.incarnation.get(key, call.incarnation) != call.incarnation:
                self.replaced.append(key)
            self.incarnation[key] = call.incarnation

    @property
    def busy(self) -> bool:
        """Whether a call is in flight (a caller polls often then, for exact round trips)."""
        return bool(self._calls)

    def settled_since(self) -> float | None:
        """Since when (clock) every task answers, each within the last two periods; None
        while one does not (starting, restarting, or silent)."""
        now = self._clock()
        if any(now - self.answered_at.get(key, -1e18) > 2 * self._every + 0.5
               or key not in self.answering_since for key in self._addresses):
            return None
        return max(self.answering_since.values(), default=now)

    def silent_for(self, key) -> float:
        """Seconds since `key` last answered; 0 for a task that never answered yet."""
        answered = self.answered_at.get(key)
        return 0.0 if answered is None else max(0.0, self._clock() - answered)

    def close(self) -> None:
        for call in self._calls.values():
            call.cancel()
        self._calls.clear()
