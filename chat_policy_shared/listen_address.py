"""HOST:PORT listen addresses (CHAT_POLICY_HTTP_BIND, _GRPC_BIND, _METRICS_BIND): their form,
and whether this host lets us listen on one.

Shared by both deployables; imports neither grpc nor Falcon.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

FORM = "HOST:PORT (an IPv6 address as [::1]:PORT)"


def parse_bind(bind: str) -> tuple[str, int]:
    """Host and port of HOST:PORT or [IPv6]:PORT; ValueError saying the form if it is not one."""
    host, sep, port = bind.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        host_ok = _is_ipv6(host)
    else:
        host_ok = bool(host) and not any(c in host for c in ":[]")
    if (
        not sep
        or not host_ok
        or host != host.strip()
        or any(c.isspace() for c in host)
        or not (port.isascii() and port.isdigit())
        or int(port) > 65535
    ):
        raise ValueError(f"must be {FORM}")
    return host, int(port)


def bind_problem(bind: str, *, port_zero_allowed: bool) -> str | None:
    """What keeps `bind` from being a listen address, as a phrase to follow its name, or None."""
    try:
        _, port = parse_bind(bind)
    except ValueError as error:
        return str(error)
    if port == 0 and not port_zero_allowed:
        return "needs a port from 1 to 65535"
    return None


def listen_problem(bind: str) -> str | None:
    """Why nothing could listen on `bind` now, or None.

    Binds a throwaway socket to every address the host resolves to, with SO_REUSEADDR (a
    connection of a previous run in TIME_WAIT is no conflict) and without SO_REUSEPORT, so
    that a listener already there is a conflict whatever its options, another chat-policy
    adapter included. An address in use is always a problem, even when another of the host's
    addresses is free (grpc would listen on those alone); other errors only when no address
    can be bound. Another process may still take the port after this check: it narrows the
    window, the real bind closes it where the server binds without SO_REUSEPORT.
    """
    try:
        host, port = parse_bind(bind)
    except ValueError as error:
        return str(error)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        return f"cannot resolve {host!r}: {error.strerror}"
    failures: list[str] = []
    for family, kind, protocol, _, address in addresses:
        shown = _shown(family, address)
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return f"{shown} is already in use"
            failures.append(f"{shown}: {error.strerror}")
    if failures and len(failures) == len(addresses):
        return "; ".join(failures)
    return None


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _shown(family: int, address: tuple[object, ...]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
