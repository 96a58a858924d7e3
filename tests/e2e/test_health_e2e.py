"""The adapter's /healthz and /readyz against a real gunicorn and a real policy service."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import time

import pytest

from tests.e2e.deployment import Deployment
from tests.e2e.postgres_cluster import PostgresCluster
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

# /readyz must notice a change within this; it asks the service on every request.
NOTICE_S = 1.5
# Two workers, each with its own channel: several answers in a row reach both (mostly: 6 all
# reach the same worker 3% of the time).
IN_A_ROW = 6
# Ready answers are quick: so many in a row that both workers' channels are surely connected
# (a worker left in reconnect backoff would answer "unreachable" where the test wants
# "deadline" next).
READY_IN_A_ROW = 24


def get(deployment: Deployment, path: str) -> tuple[int, dict[str, object]]:
    """GET a path of the adapter on a new connection: status and JSON body."""
    connection = http.client.HTTPConnection("127.0.0.1", deployment.http_port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def readiness_settles(deployment: Deployment, want: tuple[int, dict[str, object]]) -> bool:
    """True when IN_A_ROW (READY_IN_A_ROW when `want` is ready) consecutive /readyz answers
    are `want`."""
    in_a_row = READY_IN_A_ROW if want == READY else IN_A_ROW
    return all(get(deployment, "/readyz") == want for _ in range(in_a_row))


READY: tuple[int, dict[str, object]] = (200, {"status": "ready"})


def not_ready(reason: str) -> tuple[int, dict[str, object]]:
    """The /readyz answer naming `reason`."""
    body: dict[str, object] = {"status": "not ready", "reason": reason}
    return 503, body


def assert_alive(deployment: Deployment) -> None:
    """/healthz answers 200 alive, IN_A_ROW times."""
    for _ in range(IN_A_ROW):
        assert get(deployment, "/healthz") == (200, {"status": "alive"})


def test_readyz_follows_the_policy_service_and_healthz_does_not(deployment: Deployment) -> None:
    """/readyz is 200 with the service up, 503 unreachable within a second or so of its stop,
    503 deadline while it hangs, 200 again after; /healthz is 200 throughout."""
    service = deployment.start_service()
    deployment.start_adapter()
    wait_for(lambda: readiness_settles(deployment, READY), 5, "/readyz to be 200")
    assert_alive(deployment)

    service.send_signal(signal.SIGTERM)
    assert service.wait(10) == 0
    stopped = time.monotonic()
    wait_for(
        lambda: readiness_settles(deployment, not_ready("unreachable")),
        NOTICE_S,
        "/readyz to be 503 unreachable",
    )
    assert time.monotonic() - stopped < NOTICE_S
    assert_alive(deployment)

    service = deployment.start_service()
    wait_for(lambda: readiness_settles(deployment, READY), 3, "/readyz to be 200 again")

    # A service that takes the connection but never answers: the short deadline.
    service.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert get(deployment, "/readyz") == not_ready("deadline")
        assert time.monotonic() - started < 1.0
        assert readiness_settles(deployment, not_ready("deadline"))
        assert_alive(deployment)
    finally:
        service.send_signal(signal.SIGCONT)
    wait_for(lambda: readiness_settles(deployment, READY), 3, "/readyz to be 200 once more")


def test_readyz_says_not_serving_while_the_store_is_down(
    postgres_cluster: PostgresCluster, deployment: Deployment
) -> None:
    """With the service up but its PostgreSQL stopped, /readyz is 503 NOT_SERVING; once the
    database is back, 200."""
    deployment.env["CHAT_POLICY_DATABASE_URL"] = postgres_cluster.create_database("chat_policy")
    service: subprocess.Popen[bytes] = deployment.start_service()
    deployment.start_adapter()
    wait_for(lambda: readiness_settles(deployment, READY), 5, "/readyz to be 200")

    postgres_cluster.stop("fast")
    # The service pings its store every second; a ping waits up to a second for a connection.
    wait_for(
        lambda: readiness_settles(deployment, not_ready("NOT_SERVING")),
        5,
        "/readyz to be 503 NOT_SERVING",
    )
    assert_alive(deployment)
    assert service.poll() is None

    postgres_cluster.start()
    wait_for(lambda: readiness_settles(deployment, READY), 20, "/readyz to be 200 again")
