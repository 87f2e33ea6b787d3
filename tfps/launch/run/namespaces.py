"""Linux namespaces for the launcher's tasks: a private network, and a PID namespace.

**Network.** An all-local cluster runs in a network namespace with only loopback, invisible
from outside.

TF's gRPC servers listen on ``0.0.0.0:PORT`` with no authentication, whatever host the spec
names, so anyone who can reach a port can run arbitrary TF ops in that task. When every task
runs on this machine, none of them needs to be reachable from elsewhere: the launcher moves
*itself* into a new network namespace (``unshare(CLONE_NEWNET)``) before it starts any task, and
brings its loopback up. Every task it spawns inherits that namespace, so all of them share one
loopback and nothing else; the launcher stays their parent, so signals and cleanup work as
without a namespace. The namespace disappears with its last process.

Without ``CAP_SYS_ADMIN`` it tries an unprivileged user namespace as well
(``CLONE_NEWUSER | CLONE_NEWNET``, the current uid/gid mapped to themselves, as
``unshare --net --map-current-user`` does). Both are first tried in a forked probe so that a half
success never strands the launcher in a namespace without loopback.

**Processes.** `PidNamespace` puts every task in a new PID namespace whose init is a tiny
reaper forked by the launcher, with ``PR_SET_PDEATHSIG=SIGKILL``. If the launcher is killed
(even by SIGKILL), the reaper dies, and the kernel kills *every* process of the namespace: a
task's descendants too, even those that left the task's process group or session (a daemon, a
``setsid`` child), which killing process groups cannot reach. Where namespaces are not allowed,
tasks run in the launcher's PID namespace and only the process groups are covered.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import socket
import struct
import sys
import time

from tfps.cluster import is_loopback_host

__all__ = ["PidNamespace", "death_signal_setup", "enter_private_network", "is_loopback_host",
           "set_death_signal"]

# From <sched.h>.
_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
# From <sys/prctl.h>.
_PR_SET_PDEATHSIG = 1
# From <linux/sockios.h> and <net/if.h>: read/write interface flags; IFF_UP.
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
# struct ifreq: 16-byte name, then a 24-byte union whose first member is `short ifr_flags`.
_IFREQ = "16sH22x"


def _unshare(flags: int) -> None:
    libc = _libc()
    if libc.unshare(flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))


def _enter(user_namespace: bool) -> None:
    if not user_namespace:
        _unshare(_CLONE_NEWNET)
    else:
        uid, gid = os.getuid(), os.getgid()
        # Needs a single-threaded process: the launcher has started no thread yet.
        _unshare(_CLONE_NEWUSER | _CLONE_NEWNET)
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    _loopback_up()


def _probe(user_namespace: bool) -> int:
    """Tries `_enter` in a forked child; returns 0 or the errno it failed with."""
    pid = os.fork()
    if pid == 0:  # child: never returns into the launcher's code
        code = 0
        try:
            _enter(user_namespace)
        except OSError as e:
            code = e.errno or errno.EPERM
        except BaseException:  # noqa: BLE001 - a forked child must reach os._exit, whatever
            code = errno.EPERM
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def enter_private_network() -> str | None:
    """Moves this process into a new network namespace whose only interface is loopback, up.

    Returns:
      None on success; otherwise why it could not (one line, for the launcher's warning). On
      failure this process is left in the namespace it was in.
    """
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    first_error = None
    for user_namespace in (False, True):
        code = _probe(user_namespace)
        if code == 0:
            _enter(user_namespace)
            return None
        first_error = first_error or code
    return f"cannot create a network namespace: {os.strerror(first_error)}"


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def set_death_signal(libc=None) -> None:
    """Asks the kernel to SIGKILL this process when its parent dies (Linux only)."""
    (libc or _libc()).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _reaper(parent_pid: int) -> None:
    """The namespace's init: ignores signals, reaps orphans, dies with the launcher."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    set_death_signal()
    if os.getppid() != parent_pid and os.getppid() != 0:
        os._exit(1)  # the launcher died before the death signal was armed
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(1.0)
        except InterruptedError:
            pass


class PidNamespace:
    """A PID namespace for the launcher's future children, held open by a reaper (its init).

    `enter` returns None on success, or why it could not (then nothing changed). `close`
    kills the reaper, and with it anything still running in the namespace.
    """

    def __init__(self):
        self.reaper_pid: int | None = None

    def enter(self) -> str | None:
        if not sys.platform.startswith("linux"):
            return f"PID namespaces need Linux (this is {sys.platform})"
        try:
            _unshare(_CLONE_NEWPID)
        except OSError as e:
            return f"cannot create a PID namespace: {e.strerror}"
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pid 1 of the new namespace; never returns into the launcher's code
            try:
                _reaper(parent)
            finally:
                os._exit(1)
        self.reaper_pid = pid
        return None

    def close(self) -> None:
        if self.reaper_pid is None:
            return
        try:
            os.kill(self.reaper_pid, signal.SIGKILL)
            os.waitpid(self.reaper_pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        self.reaper_pid = None


def death_signal_setup():
    """A ``preexec_fn`` that makes each task die with the launcher, or None off Linux.

    libc is loaded here, in the parent: the child must not dlopen between fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent_pid = os.getpid()

    def child_setup() -> None:
        set_death_signal(libc)
        # The launcher died before the death signal was armed: the child has been reparented.
        # (In the launcher's PID namespace the parent shows as 0: it is outside.)
        if os.getppid() not in (parent_pid, 0):
            os._exit(1)

    return child_setup
