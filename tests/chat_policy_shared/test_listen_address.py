"""Listen addresses: the HOST:PORT form, and whether something already listens there."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from chat_policy_shared.listen_address import bind_problem, listen_problem, parse_bind


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


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A socket listening on a free loopback port, with SO_REUSEPORT as gunicorn's workers."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_a_port_someone_listens_on_is_in_use(listener: socket.socket) -> None:
    """A listener there, even one with SO_REUSEPORT, makes the address in use."""
    port = listener.getsockname()[1]
    assert listen_problem(f"127.0.0.1:{port}") == f"127.0.0.1:{port} is already in use"


def test_a_host_name_is_in_use_when_any_of_its_addresses_is(listener: socket.socket) -> None:
    """localhost's port is in use when 127.0.0.1's is, whatever ::1's."""
    port = listener.getsockname()[1]
    assert listen_problem(f"localhost:{port}") == f"127.0.0.1:{port} is already in use"


def test_a_free_port_has_no_problem() -> None:
    """Port 0 and a port nothing listens on can be listened on."""
    assert listen_problem("127.0.0.1:0") is None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert listen_problem(f"127.0.0.1:{port}") is None


def test_an_address_of_another_host_is_a_problem() -> None:
    """An address no interface has cannot be listened on, and the reason says so."""
    assert listen_problem("192.0.2.1:8080") == "192.0.2.1:8080: Cannot assign requested address"
