"""A private network namespace for an all-local cluster: only loopback, invisible from outside.

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
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import os
import socket
import struct
import sys

__all__ = ["enter_private_network", "is_loopback_host"]

# From <sched.h>.
_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
# From <linux/sockios.h> and <net/if.h>: read/write interface flags; IFF_UP.
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
# struct ifreq: 16-byte name, then a 24-byte union whose first member is `short ifr_flags`.
_IFREQ = "16sH22x"


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (``127.0.0.1``, ``[::1]``)."""
    host = host.strip("[]")
    if host in ("localhost", "ip6-localhost", "ip6-loopback"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
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
        except BaseException:
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
