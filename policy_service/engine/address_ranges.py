"""Sets of IP networks (CIDR lists) with membership in logarithmic time."""

from __future__ import annotations

import bisect
import ipaddress
import socket
from collections.abc import Iterable

# An address as compared: (4 or 6, its integer value).
Address = tuple[int, int]
_MAPPED_V4 = ipaddress.IPv6Network("::ffff:0:0/96")


class AddressRanges:
    """The union of some IPv4 and IPv6 networks, kept as sorted disjoint integer ranges."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        """Parse the networks ("10.0.0.0/8", "2001:db8::/32", a bare address); ValueError
        names the first one that is not a network or has host bits set."""
        v4: list[ipaddress.IPv4Network] = []
        v6: list[ipaddress.IPv6Network] = []
        for cidr in cidrs:
            network = ipaddress.ip_network(cidr, strict=True)
            if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED_V4):
                # Addresses are compared as IPv4 (parse_address): so are these networks.
                network = ipaddress.IPv4Network(
                    (int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96)
                )
            if isinstance(network, ipaddress.IPv4Network):
                v4.append(network)
            else:
                v6.append(network)
        self._ranges = {
            4: _ranges(list(ipaddress.collapse_addresses(v4))),
            6: _ranges(list(ipaddress.collapse_addresses(v6))),
        }

    def __contains__(self, address: Address) -> bool:
        version, value = address
        starts, ends = self._ranges[version]
        index = bisect.bisect_right(starts, value) - 1
        return index >= 0 and value <= ends[index]


def parse_address(text: str) -> Address | None:
    """The address Chat sent (an IPv4-mapped IPv6 address counts as IPv4), None if invalid."""
    text = text.strip()
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        pass
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    except OSError:
        return None
    if value >> 32 == 0xFFFF:
        return 4, value & 0xFFFFFFFF
    return 6, value


def _ranges(
    networks: list[ipaddress.IPv4Network] | list[ipaddress.IPv6Network],
) -> tuple[list[int], list[int]]:
    return [int(n.network_address) for n in networks], [int(n.broadcast_address) for n in networks]
