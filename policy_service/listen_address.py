"""HOST:PORT listen addresses (CHAT_POLICY_HTTP_BIND, _GRPC_BIND, _METRICS_BIND): their form.

Shared by both deployables; imports neither grpc nor Falcon.
"""

from __future__ import annotations

import ipaddress

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


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True
