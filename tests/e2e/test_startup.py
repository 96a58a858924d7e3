"""`chat-policy service`, `adapter` and `run` that cannot start: a port in use, a bind without a
port, a data directory they cannot use. Each exits 2 with one line that names the variable,
and what already runs keeps running."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.e2e


def refusal(deployment: Deployment, command: str, extra_env: Mapping[str, str] = {}) -> str:
    """Run `chat-policy COMMAND` to its end; assert exit status 2 and output of JSON log lines
    only, without a traceback, one of them an error; return that line's message."""
    process = deployment.start(command, extra_env)
    status = process.wait(timeout=60)
    log = deployment.log(command)
    assert status == 2, log
    assert "Traceback" not in log
    records = []
    for line in log.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a log line: {line!r} in\n{log}")
    [message] = [record["message"] for record in records if record["level"] == "ERROR"]
    assert isinstance(message, str)
    return message


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        ("service", "CHAT_POLICY_GRPC_BIND", "localhost"),
        ("adapter", "CHAT_POLICY_HTTP_BIND", "127.0.0.1"),
        ("run", "CHAT_POLICY_METRICS_BIND", "127.0.0.1"),
    ],
)
def test_a_bind_without_a_port_is_refused(
    deployment: Deployment, command: str, variable: str, value: str
) -> None:
    """A listen address without a port exits 2 with a line naming the variable and the form
    (it was port 443 for gRPC, 8000 for the adapter)."""
    message = refusal(deployment, command, {variable: value})
    assert f"{variable}={value!r} must be HOST:PORT (an IPv6 address as [::1]:PORT)" in message
