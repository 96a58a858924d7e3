"""Listen addresses: the HOST:PORT form."""

from __future__ import annotations

import pytest

from policy_service.listen_address import bind_problem, parse_bind


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:0", ("::1", 0)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("localhost:50051", ("localhost", 50051)),
        ("[::]:8080", ("::", 8080)),
    ],
)
def test_parse_bind_accepts_host_and_port(bind: str, expected: tuple[str, int]) -> None:
    """HOST:PORT and [IPv6]:PORT give their host and port."""
    assert parse_bind(bind) == expected


@pytest.mark.parametrize(
    "bind",
    [
        "localhost",
        "127.0.0.1",
        "9464",
        ":9464",
        "host:",
        "host:http",
        "host:70000",
        "host:+80",
        "::1:9464",
        "[::1]",
        "[localhost]:80",
        "[::1:80",
        "my host:80",
        " localhost:80",
    ],
)
def test_parse_bind_refuses_what_is_no_address(bind: str) -> None:
    """Without a host, a numeric port in range, or brackets around an IPv6 host: refused,
    saying the form."""
    with pytest.raises(ValueError, match=r"must be HOST:PORT \(an IPv6 address as \[::1\]:PORT\)"):
        parse_bind(bind)


def test_port_zero_is_a_problem_only_where_it_is_not_allowed() -> None:
    """Port 0 (any free port) is accepted or refused as the caller says."""
    assert bind_problem("127.0.0.1:0", port_zero_allowed=True) is None
    assert bind_problem("127.0.0.1:0", port_zero_allowed=False) == "needs a port from 1 to 65535"
    assert bind_problem("127.0.0.1:8080", port_zero_allowed=False) is None
