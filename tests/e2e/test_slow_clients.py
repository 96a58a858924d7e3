"""Slow and surplus HTTP clients against the real adapter: real webhooks are still answered,
a request that does not arrive in time gets 408, connections beyond the cap get 503.

On the gthread adapter this replaced, the first test fails (50 connections trickling their
headers hold every worker thread, and the webhooks time out), and the other two have nothing
to find (no read deadline, no cap answered 503).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from adapter.signature import compute_sign
from tests.chat_samples import BEFORE_CREATE_SAMPLE, GROUP_FULL_SAMPLE, OK
from tests.e2e.deployment import Deployment
from tests.e2e.webhook_requests import SDKAPPID, body, query
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

TOKEN = "slow-clients-token"
SLOW_CLIENTS = 50
# Far longer than any answer here takes: these tests assert answers, never times.
CLIENT_TIMEOUT_S = 15


def timeout_answer() -> dict[str, object]:
    return {
        "ActionStatus": "FAIL",
        "ErrorCode": 408,
        "ErrorInfo": "the request was not received in time",
    }


def start(deployment: Deployment, **env: str) -> Deployment:
    """The service and the adapter, signatures checked, with `env` on top."""
    deployment.env.update(
        CHAT_POLICY_SDKAPPIDS=str(SDKAPPID), CHAT_POLICY_CALLBACK_TOKENS=TOKEN, **env
    )
    deployment.start_service()
    deployment.start_adapter()
    return deployment


def signed_post(
    deployment: Deployment, command: str, document: bytes, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """POST a webhook signed as Chat signs it, with `headers` added, on a new connection;
    status and body."""
    now = str(int(time.time()))
    connection = http.client.HTTPConnection(
        "127.0.0.1", deployment.http_port, timeout=CLIENT_TIMEOUT_S
    )
    try:
        url = f"/?{query(command, RequestTime=now, Sign=compute_sign(TOKEN, now))}"
        connection.request("POST", url, body=document, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def connect(deployment: Deployment) -> socket.socket:
    """A raw TCP connection to the adapter."""
    return socket.create_connection(("127.0.0.1", deployment.http_port), CLIENT_TIMEOUT_S)


def read_to_close(client: socket.socket) -> bytes:
    """Everything the adapter sends until it closes the connection."""
    chunks = []
    while chunk := client.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def still_open(client: socket.socket) -> bool:
    """True while the adapter has neither closed the connection nor written to it."""
    client.setblocking(False)
    try:
        client.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        client.setblocking(True)
    return False


def limit_refusals(deployment: Deployment, limit: str) -> float:
    """chat_policy_adapter_http_limit_refusals_total{limit=...}, added up over the workers."""
    connection = http.client.HTTPConnection("127.0.0.1", deployment.http_port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    name = f'chat_policy_adapter_http_limit_refusals_total{{limit="{limit}"}} '
    return sum(
        float(line.removeprefix(name)) for line in text.splitlines() if line.startswith(name)
    )


@pytest.fixture
def trickling() -> Iterator[list[socket.socket]]:
    """Connections put in the list send a request's headers a byte at a time, forever (each
    from the start); closed after the test."""
    clients: list[socket.socket] = []
    sent: dict[socket.socket, int] = {}
    stop = threading.Event()
    headers = f"POST /?{query('Group.CallbackBeforeCreateGroup')} HTTP/1.1\r\nHost: x\r\n"
    endless = (headers + "X-Padding: " + "a" * 100_000).encode()

    def trickle() -> None:
        while not stop.wait(0.05):
            for client in list(clients):
                position = sent.get(client, 0)
                try:
                    client.send(endless[position : position + 1])
                except OSError:
                    continue  # closed by the adapter: the test sees it
                sent[client] = position + 1

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    yield clients
    stop.set()
    thread.join()
    for client in clients:
        client.close()


def test_webhooks_are_answered_while_slow_clients_hold_connections(
    deployment: Deployment, trickling: list[socket.socket]
) -> None:
    """50 connections sending their headers a byte at a time, held open (the read deadline is
    long here), and every real signed webhook meanwhile answered as Chat expects."""
    start(deployment, CHAT_POLICY_HTTP_READ_TIMEOUT_S="120")
    slow = [connect(deployment) for _ in range(SLOW_CLIENTS)]
    trickling.extend(slow)
    time.sleep(0.5)  # the slow clients are under way: a few bytes of headers each, not more

    answers = []
    for number in range(10):
        answers.append(
            signed_post(
                deployment,
                "Group.CallbackBeforeCreateGroup",
                body(BEFORE_CREATE_SAMPLE, Name=f"group {number}"),
            )
        )
        answers.append(
            signed_post(
                deployment,
                "Group.CallbackAfterGroupFull",
                body(GROUP_FULL_SAMPLE, GroupId=f"@TGS#slow{number}"),
            )
        )

    assert answers == [(200, OK)] * 20
    assert all(still_open(client) for client in slow)


def test_a_request_not_received_within_the_deadline_gets_408(deployment: Deployment) -> None:
    """A connection that sends nothing, one whose headers never end and one whose body stops
    short each get 408 in Chat's JSON after CHAT_POLICY_HTTP_READ_TIMEOUT_S, and are closed;
    each is counted, and the first logged."""
    start(deployment, CHAT_POLICY_HTTP_READ_TIMEOUT_S="1")
    now = str(int(time.time()))
    signed = query("Group.CallbackAfterGroupFull", RequestTime=now, Sign=compute_sign(TOKEN, now))
    request = f"POST /?{signed} HTTP/1.1\r\nHost: x\r\n"
    silent = connect(deployment)
    endless_headers = connect(deployment)
    endless_headers.sendall(request.encode())
    short_body = connect(deployment)
    short_body.sendall(f"{request}Content-Length: 100\r\n\r\n{{}}".encode())

    for client in (silent, endless_headers, short_body):
        with client:
            response = read_to_close(client)
        head, _, content = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), response
        assert b"content-type: application/json" in head.lower()
        assert json.loads(content) == timeout_answer()

    assert limit_refusals(deployment, "read_deadline") == 3
    assert "no whole request within 1 s" in deployment.log("adapter")
    # A request that arrives whole in time is answered as ever.
    assert signed_post(deployment, "Group.CallbackAfterGroupFull", body(GROUP_FULL_SAMPLE)) == (
        200,
        OK,
    )


def test_a_request_whose_headers_go_on_past_the_cap_gets_431(deployment: Deployment) -> None:
    """A request line and headers sent on past 32 KB get 431 in Chat's JSON and the
    connection is closed, before the read deadline; counted. Headers under it are answered."""
    start(deployment, CHAT_POLICY_HTTP_READ_TIMEOUT_S="120")
    now = str(int(time.time()))
    signed = query("Group.CallbackAfterGroupFull", RequestTime=now, Sign=compute_sign(TOKEN, now))
    client = connect(deployment)
    with client:
        client.sendall(f"POST /?{signed} HTTP/1.1\r\nHost: x\r\n".encode())
        client.sendall(b"X-Padding: " + b"a" * 40_000)  # and no end of the headers
        response = read_to_close(client)
    head, _, content = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), response[:200]
    assert json.loads(content) == {
        "ActionStatus": "FAIL",
        "ErrorCode": 431,
        "ErrorInfo": "the request line and headers are too large",
    }
    assert limit_refusals(deployment, "header_size") == 1

    padded = {"X-Padding": "a" * 16_000}
    answer = signed_post(
        deployment, "Group.CallbackAfterGroupFull", body(GROUP_FULL_SAMPLE), padded
    )
    assert answer == (200, OK)


def test_headers_past_the_cap_in_one_read_get_431(deployment: Deployment) -> None:
    """A whole request whose headers are past 32 KB gets 431 even when its line, headers and
    end of headers arrive in one read (the app never sees it); the next is answered."""
    start(deployment, CHAT_POLICY_HTTP_READ_TIMEOUT_S="120")
    now = str(int(time.time()))
    signed = query("Group.CallbackAfterGroupFull", RequestTime=now, Sign=compute_sign(TOKEN, now))
    document = body(GROUP_FULL_SAMPLE)

    def request(padding: int) -> bytes:
        return (
            f"POST /?{signed} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
            + f"X-Padding: {'a' * padding}\r\n".encode()
            + f"Content-Length: {len(document)}\r\n\r\n".encode()
            + document
        )

    client = connect(deployment)
    with client:
        client.sendall(request(40_000))
        response = read_to_close(client)
    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
    # The same, as the second request of a kept-alive connection.
    client = connect(deployment)
    with client:
        client.sendall(request(10))
        # The whole first answer (its head and body may come in separate reads).
        first = http.client.HTTPResponse(client)
        first.begin()
        assert (first.status, first.read()) == (200, OK)
        client.sendall(request(40_000))
        response = read_to_close(client)
    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
    assert limit_refusals(deployment, "header_size") == 2
    assert signed_post(deployment, "Group.CallbackAfterGroupFull", document) == (200, OK)


def test_requests_beyond_the_connection_cap_get_503(deployment: Deployment) -> None:
    """With a cap of 4 connections on one worker, a webhook on a 4th connection is answered,
    one on a 5th gets 503 in Chat's JSON, and once the idle connections go it is answered."""
    start(
        deployment,
        CHAT_POLICY_HTTP_WORKERS="1",
        CHAT_POLICY_HTTP_MAX_CONNECTIONS="4",
        CHAT_POLICY_HTTP_READ_TIMEOUT_S="120",
    )
    idle = [connect(deployment) for _ in range(3)]
    document = body(GROUP_FULL_SAMPLE)
    assert signed_post(deployment, "Group.CallbackAfterGroupFull", document) == (200, OK)

    idle.append(connect(deployment))
    refused: list[tuple[int, bytes]] = []
    wait_for(
        lambda: (
            refused.append(signed_post(deployment, "Group.CallbackAfterGroupFull", document))
            or refused[-1][0] == 503
        ),
        CLIENT_TIMEOUT_S,
        "the 5th connection to be refused",
    )
    assert json.loads(refused[-1][1]) == {
        "ActionStatus": "FAIL",
        "ErrorCode": 503,
        "ErrorInfo": "the adapter has too many open connections; retry later",
    }
    assert all(answer == (200, OK) for answer in refused[:-1])

    for client in idle:
        client.close()
    answered: list[tuple[int, bytes]] = []
    wait_for(
        lambda: (
            answered.append(signed_post(deployment, "Group.CallbackAfterGroupFull", document))
            or answered[-1] == (200, OK)
        ),
        CLIENT_TIMEOUT_S,
        "webhooks to be answered again",
    )
    assert limit_refusals(deployment, "max_connections") >= 1
