"""One writer per ``model_dir``: the chief's lease. Pure Python (no TensorFlow).

TF's `CheckpointManager` takes no lock: two jobs on one directory interleave their ``ckpt-*``
files and the ``checkpoint`` record silently. So the chief takes a lease, the file
``model_dir/.tfps-lease`` (`LEASE_FILE`), before its first write, and renews it every
`HEARTBEAT_S` seconds from a thread:

    {"host": "node1", "pid": 4242, "start": 1765011234.5, "heartbeat": 1765011300.1,
     "boot": "<kernel boot id>", "pidns": "pid:[4026531836]", "token": "<random>"}

Only what every filesystem does atomically is used, shared ones (NFS) included: creating a
file that must not exist (``O_CREAT | O_EXCL``), renaming over a file, hard links. No
``flock``: it is not shared between NFS clients everywhere. A lease is

* **live** while its holder renews it: a second chief exits 2 with one line naming the
  directory and the holder (`ModelDirInUse`);
* **stale** when its holder is gone: the same machine and PID namespace show its pid dead
  (a chief the launcher restarts sees this at once), or its heartbeat is older than
  `STALE_S`. A holder elsewhere whose heartbeat looks recent is watched for up to
  `STALE_S`: a heartbeat that advances is live; one that does not is stale (this needs no
  clock agreement between hosts). A stale lease is taken over, with a line saying so.

Taking over renames the stale file aside (one taker wins the rename), checks it was the one
judged stale, and creates a new one exclusively. A holder that finds its lease taken (it was
frozen longer than `STALE_S`) stops writing: `Lease.check` raises `LeaseLost`. Readers
(the evaluator, ``tfps.export``) take no lease.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import errno
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable

from tfps import exit_codes
from tfps.checkpoints import storage

__all__ = ["HEARTBEAT_S", "LEASE_FILE", "STALE_S", "Holder", "Lease", "LeaseLost",
           "ModelDirInUse", "acquire", "describe", "hold"]

log = logging.getLogger(__name__)

LEASE_FILE = ".tfps-lease"
# The holder renews its lease this often.
HEARTBEAT_S = 5.0
# A lease not renewed for this long is stale: several missed heartbeats, so that a loaded
# machine's late thread is not taken for a dead job.
STALE_S = 30.0
# How often a watcher looks at a lease held elsewhere.
_WATCH_EVERY_S = 1.0
# Take-overs lost to another chief taking the same stale lease at the same moment.
_TRIES = 20


class ModelDirInUse(SystemExit):
    """Another live job holds the lease of `model_dir`: exit `tfps.exit_codes.USAGE` (2);
    its one-line `message` has been printed to stderr."""

    def __init__(self, message: str):
        super().__init__(exit_codes.USAGE)
        self.message = message


class LeaseLost(RuntimeError):
    """This chief's lease was taken over (it did not renew it for `STALE_S`)."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lease: the fields of the lease file."""

    host: str
    pid: int
    start: float
    heartbeat: float
    boot: str = ""
    pidns: str = ""
    token: str = ""

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Holder:
        fields = json.loads(data.decode("utf-8"))
        return cls(host=str(fields["host"]), pid=int(fields["pid"]),
                   start=float(fields["start"]), heartbeat=float(fields["heartbeat"]),
                   boot=str(fields.get("boot", "")), pidns=str(fields.get("pidns", "")),
                   token=str(fields.get("token", "")))


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def this_process(now: float) -> Holder:
    """A `Holder` for this process, starting `now`, with a new token."""
    pidns = ""
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pass
    return Holder(host=socket.gethostname(), pid=os.getpid(), start=now, heartbeat=now,
                  boot=_read_text("/proc/sys/kernel/random/boot_id"), pidns=pidns,
                  token=uuid.uuid4().hex)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gone(holder: Holder, me: Holder, now: float) -> str | None:
    """Why `holder` is certainly gone (`me` looking at `now`), or None when it may be live.

    >>> me = Holder("a", 10, 0.0, 0.0, boot="b", pidns="p")
    >>> gone(Holder("a", 10, 0.0, 0.0, boot="b", pidns="p", token="x"), me, 1.0)
    'its pid 10 is this process'
    >>> gone(Holder("z", 10, 0.0, 0.0), me, 100.0)
    'heartbeat 100s old'
    """
    if me.boot and holder.boot == me.boot and holder.pidns == me.pidns:
        if holder.pid == me.pid:
            return f"its pid {holder.pid} is this process"
        if not _pid_alive(holder.pid):
            return f"pid {holder.pid} is gone"
    age = now - holder.heartbeat
    if age > STALE_S:
        return f"heartbeat {age:.0f}s old"
    return None


def describe(holder: Holder, now: float) -> str:
    """``host node1, pid 4242, started 12:00:01, heartbeat 2s ago``."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.start))
    return (f"host {holder.host}, pid {holder.pid}, started {started}, heartbeat "
            f"{max(0.0, now - holder.heartbeat):.0f}s ago")


class Lease:
    """A lease this process holds; renewed by a daemon thread until `release`."""

    def __init__(self, path: str, holder: Holder, clock: Callable[[], float] = time.time):
        self.path, self.holder, self._clock = path, holder, clock
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # A renewal and the release, one at a time: a renewal that read the lease before the
        # release removed it would otherwise write it back (a lease nobody renews, left on
        # model_dir until it turns stale).
        self._lock = threading.Lock()

    def start(self, every: float = HEARTBEAT_S) -> Lease:
        """Renews every `every` seconds from a daemon thread; released at the process's exit
        (a process killed leaves it: the next chief finds its pid gone, or its heartbeat old)."""
        self._thread = threading.Thread(target=self._renew_loop, args=(every,),
                                        name="tfps-lease", daemon=True)
        self._thread.start()
        atexit.register(self.release)
        return self

    def _renew_loop(self, every: float) -> None:
        failing = False
        while not self._stop.wait(every) and self.lost is None:
            try:
                self.renew()
                failing = False
            except OSError as e:  # a full or unreachable disk: the next save says so
                if not failing:
                    log.warning("tfps: cannot renew the lease %s: %s", self.path,
                                e.strerror or e)
                failing = True

    def renew(self) -> None:
        """Rewrites the heartbeat, unless the lease was taken over (then `lost` says so) or
        released."""
        with self._lock:
            if self._stop.is_set():
                return
            current = _read(self.path)
            if current is None or current.token != self.holder.token:
                self.lost = (f"taken over by {describe(current, self._clock())}" if current
                             else "its file was removed")
                log.error("tfps: lost the lease of %s: %s", os.path.dirname(self.path),
                          self.lost)
                return
            self.holder = dataclasses.replace(self.holder, heartbeat=self._clock())
            _write_replace(self.path, self.holder.to_json())

    def check(self) -> None:
        """Raises `LeaseLost` if another chief took the lease over."""
        if self.lost is not None:
            raise LeaseLost(f"model_dir {os.path.dirname(self.path)}: this job lost its lease "
                            f"({self.lost}); it stops writing")

    def release(self) -> None:
        """Stops renewing and removes the lease file (if still ours)."""
        self._stop.set()
        atexit.unregister(self.release)
        with self._lock:  # after a renewal in flight, never before its write
            current = _read(self.path)
            if current is not None and current.token == self.holder.token:
                try:
                    os.unlink(self.path)
                except OSError:
                    pass


def _read(path: str) -> Holder | None:
    try:
        with open(path, "rb") as f:
            return Holder.from_json(f.read(1 << 16))
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def _write_replace(path: str, data: bytes) -> None:
    temp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _create(path: str, data: bytes) -> bool:
    """Creates `path` with `data` if it does not exist; False if it does."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError:  # a full disk: leave no empty lease behind
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return True


def acquire(model_dir: str, *, clock: Callable[[], float] = time.time,
            sleep: Callable[[float], None] = time.sleep,
            say: Callable[[str], None] = lambda line: print(line, flush=True)) -> Lease:
    """Takes the lease of `model_dir` (created if missing) for this process.

    Returns a started `Lease`. Raises `ModelDirInUse` (after printing its line to stderr)
    when another live job holds it; `OSError` when the directory cannot be written.
    """
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, LEASE_FILE)
    me = this_process(clock())
    watched: dict[str, tuple[float, float]] = {}  # token -> (its heartbeat, when first seen)
    races = 0
    while not _create(path, me.to_json()):
        holder, now = _read(path), clock()
        if holder is None:  # being written, or garbage: stale once old enough
            try:
                age = now - os.stat(path).st_mtime
            except FileNotFoundError:
                continue
            if age <= STALE_S:
                sleep(_WATCH_EVERY_S / 10)
                continue
            holder = Holder("?", 0, 0.0, 0.0)
        why = gone(holder, me, now)
        if why is None:
            if me.boot and holder.boot == me.boot and holder.pidns == me.pidns:
                _in_use(model_dir, holder, now)  # its pid runs here: live
            heartbeat, seen = watched.setdefault(holder.token, (holder.heartbeat, now))
            if holder.heartbeat != heartbeat:
                _in_use(model_dir, holder, now)  # it renewed while watched: live
            if now - seen <= STALE_S:
                sleep(_WATCH_EVERY_S)
                continue
            why = f"its heartbeat did not change in {now - seen:.0f}s"
        if _take_over(path, holder, me):
            say(f"tfps: took over the lease of model_dir {model_dir} from "
                f"{describe(holder, now)} ({why})")
            break
        races += 1
        if races > _TRIES:
            raise OSError(errno.EBUSY, "the lease kept changing hands", path)
    return Lease(path, me, clock).start()


def hold(model_dir: str) -> Lease:
    """`acquire` for a writer of `model_dir` (the Trainer's checkpoints, `tfps.keras.fit`):
    a directory the storage refuses ends the process with one line and exit 1
    (`tfps.checkpoints.storage`), as its later writes would.

    Raises:
      ModelDirInUse: another live job holds the lease (exit 2, its line printed).
      tfps.checkpoints.storage.StorageFailed: `model_dir` cannot be written.
    """
    try:
        return acquire(model_dir)
    except OSError as e:
        reason = storage.storage_error(e) or e.strerror or str(e)
        raise storage.fail("model_dir", model_dir, reason, "nothing was written") from None


def _take_over(path: str, stale: Holder, me: Holder) -> bool:
    """Replaces the stale lease with ours; False if someone else was faster."""
    aside = f"{path}.stale.{me.token}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = _read(aside)
    if moved is not None and moved.token != stale.token:
        # Not the lease judged stale: a faster taker's new one. Put it back, if still free.
        try:
            os.link(aside, path)
        except OSError:
            pass
        os.unlink(aside)
        return False
    os.unlink(aside)
    return _create(path, me.to_json())


def _in_use(model_dir: str, holder: Holder, now: float) -> None:
    message = (f"tfps: model_dir {model_dir} is in use by another job ({describe(holder, now)}); "
               f"one writer per model_dir: wait for it to end, or choose another model_dir")
    print(message, file=sys.stderr, flush=True)
    raise ModelDirInUse(message)
