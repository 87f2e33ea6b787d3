"""Task addresses: ``host:port``, IPv6 hosts in brackets (``[::1]:2222``). Pure Python.

One home for reading an address: `check_address` validates one as a cluster spec writes it,
`split_address` splits one that is valid into what a socket takes (the host without its
brackets, the port as an int), and `is_loopback_host` says whether a host is this machine's
loopback.

>>> split_address("node1:2222"), split_address("[::1]:2222")
(('node1', 2222), ('::1', 2222))
>>> is_loopback_host("127.0.0.1"), is_loopback_host("[::1]"), is_loopback_host("node1")
(True, True, False)
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from tfps import validate
from tfps.errors import ClusterSpecError

__all__ = ["check_address", "check_host", "is_loopback_host", "split_address"]

# RFC 1123 host names (underscores too: some schedulers use them); at most 253 characters.
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_MAX_HOST = 253
_PORT = re.compile(r"[0-9]{1,5}")
_LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of a valid ``host:port``: the host as a socket takes it (an IPv6
    address without its brackets), the port as an int.

    Raises:
      ValueError: `address` has no integer port (check it with `check_address` first).
    """
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (``127.0.0.1``, ``[::1]``)."""
    host = host.strip("[]")
    if host.lower() in _LOOPBACK_NAMES:  # host names are case-insensitive (RFC 4343)
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str) -> bool:
    """Whether `host` is a host name or an IP address (IPv6 in brackets), as a spec writes it."""
    if host.startswith("["):
        try:
            return host.endswith("]") and ipaddress.ip_address(host[1:-1]).version == 6
        except ValueError:
            return False
    if len(host) > _MAX_HOST:
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in host.split("."))


def check_address(address: Any, field: str, source: str | None) -> tuple[str, int]:
    """``(host, port)`` of a valid ``host:port``, the host as written (brackets kept).

    Raises:
      ClusterSpecError: naming `field` of spec `source` and what is wrong with the address.
    """
    if not isinstance(address, str):
        raise ClusterSpecError(f"{field}: expected a 'host:port' string, got "
                               f"{type(address).__name__} {validate.describe(address)}", source)
    shown = validate.describe(address, 60)
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ClusterSpecError(f"{field}: address {shown} has no port (expected 'host:port')",
                               source)
    if not host.strip("[]").strip():
        raise ClusterSpecError(f"{field}: empty host in address {shown}", source)
    if not _PORT.fullmatch(port):
        raise ClusterSpecError(f"{field}: port {validate.describe(port, 20)} is not an "
                               f"integer", source)
    if port.startswith("0") and port != "0":
        # gRPC gets the address as written: '08080' and '8080' would be one port under two
        # spellings, and TF compares task addresses as strings.
        raise ClusterSpecError(f"{field}: port {port!r} has a leading zero (write "
                               f"{int(port)})", source)
    if not 1 <= int(port) <= 65535:
        raise ClusterSpecError(f"{field}: port {int(port)} is out of range 1-65535", source)
    if not check_host(host):
        raise ClusterSpecError(f"{field}: host {validate.describe(host, 60)} is not a host name "
                               f"or IP address (IPv6 goes in brackets: '[::1]:2222')", source)
    return host, int(port)
