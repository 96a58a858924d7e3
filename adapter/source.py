"""Where a webhook came from: the peer, or the client a trusted proxy names in X-Forwarded-For."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(raw: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs or single addresses as networks; raises ValueError naming a bad item."""
    networks = []
    for item in raw:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR") from None
    return tuple(networks)


def parse_address(raw: str) -> Address | None:
    """An IP address (IPv4-mapped IPv6 read as IPv4), or None when `raw` is not one."""
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def contains(networks: Sequence[Network], address: Address) -> bool:
    """True when `address` is in one of `networks`."""
    return any(address in network for network in networks)


def client_address(
    peer: str, forwarded_for: str | None, trusted_proxies: Sequence[Network]
) -> Address | None:
    """The address the request came from; None when it cannot be told.

    X-Forwarded-For is believed only from a trusted proxy, and only as far back as the chain
    of trusted proxies goes: the client is the rightmost address that is not one of them, as
    anyone can put anything at the left of the header.
    """
    address = parse_address(peer)
    if address is None or not contains(trusted_proxies, address) or not forwarded_for:
        return address
    for hop in reversed(forwarded_for.split(",")):
        address = parse_address(hop)
        if address is None or not contains(trusted_proxies, address):
            return address
    return address
