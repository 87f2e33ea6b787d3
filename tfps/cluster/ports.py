"""Ports on this host: free ones for local clusters, and whether a task's port is taken.

TF's gRPC server binds ``0.0.0.0:PORT`` *and* ``[::]:PORT`` whatever host a spec names
(docs/tensorflow-notes.md, "gRPC binds all interfaces"), so a port counts as free only if
both families can bind it. The launcher and ``--doctor`` use the same check.
"""

from __future__ import annotations

import contextlib
import errno
import socket

__all__ = ["free_ports", "port_in_use"]


def free_ports(count: int, host: str = "localhost") -> list[int]:
    """``count`` distinct ports that are free on ``host`` right now (all held until chosen)."""
    address = socket.gethostbyname(host)
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((address, 0))
            ports.append(s.getsockname()[1])
        return ports


def port_in_use(port: int) -> str | None:
    """None if a server could listen on `port` on all interfaces (IPv4 and IPv6), else why."""
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this host: nothing can listen there either
        with s:
            # REUSEADDR, as gRPC sets it: a port in TIME_WAIT (a task just restarted) is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind((host, port))
            except OSError as e:
                if family == socket.AF_INET6 and e.errno != errno.EADDRINUSE:
                    continue  # IPv6 disabled
                return e.strerror or str(e)
    return None
