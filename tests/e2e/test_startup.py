"""`chat-policy service`, `adapter` and `run` that cannot start: a port in use, a bind without a
port, a data directory they cannot use. Each exits 2 with one line that names the variable,
and what already runs keeps running."""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.processes import free_port
from tests.chat_samples import OK
from tests.e2e.deployment import Deployment

pytestmark = pytest.mark.e2e

FULL = b'{"CallbackCommand":"Group.CallbackAfterGroupFull","GroupId":"@TGS#up","EventTime":1}'
QUERY = "SdkAppid=1400000000&CallbackCommand=Group.CallbackAfterGroupFull&contenttype=json"


def refusal(
    deployment: Deployment,
    command: str,
    extra_env: Mapping[str, str] = {},
    wrapper: Sequence[str] = (),
) -> str:
    """Run `chat-policy COMMAND` to its end; assert exit status 2 and output of JSON log lines
    only, without a traceback, one of them an error; return that line's message."""
    process = deployment.start(command, extra_env, wrapper=wrapper)
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


@pytest.fixture
def second(deployment: Deployment, tmp_path: Path) -> Iterator[Deployment]:
    """Another deployment on the first one's ports, with a directory (logs, data) of its own."""
    directory = tmp_path / "second"
    directory.mkdir()
    env = {**deployment.env, "CHAT_POLICY_DATA_DIR": str(directory / "data")}
    other = Deployment(directory, env, deployment.http_port, deployment.grpc_port)
    yield other
    other.stop_all()


def test_a_second_adapter_on_a_port_in_use_refuses_to_start(
    deployment: Deployment, second: Deployment
) -> None:
    """An adapter started on a running adapter's port, for another SdkAppid, exits 2 naming
    CHAT_POLICY_HTTP_BIND (without it, the two shared the port and some webhooks got 403);
    the first answers every webhook."""
    first = deployment.start_adapter()
    bind = f"127.0.0.1:{deployment.http_port}"

    message = refusal(second, "adapter", {"CHAT_POLICY_SDKAPPIDS": "1400000001"})
    assert message == (
        f"adapter cannot start: cannot listen on CHAT_POLICY_HTTP_BIND='{bind}':"
        f" {bind} is already in use"
    )
    assert [deployment.post(QUERY, FULL) for _ in range(12)] == [(200, OK)] * 12
    assert first.poll() is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_second_service_on_a_grpc_port_in_use_refuses_to_start(
    deployment: Deployment, second: Deployment, host: str
) -> None:
    """A service started on a running service's gRPC port exits 2 naming CHAT_POLICY_GRPC_BIND,
    also when the host has another address free there (grpc would listen on that one alone);
    the first keeps serving."""
    first = deployment.start_service()
    taken = f"127.0.0.1:{deployment.grpc_port}"
    bind = f"{host}:{deployment.grpc_port}"

    message = refusal(second, "service", {"CHAT_POLICY_GRPC_BIND": bind})
    assert message == (
        f"policy service cannot start: cannot listen on CHAT_POLICY_GRPC_BIND='{bind}':"
        f" {taken} is already in use"
    )
    deployment.wait_for_grpc(first)


def test_a_second_service_on_a_metrics_port_in_use_refuses_to_start(
    deployment: Deployment, second: Deployment
) -> None:
    """A service whose metrics port a running service serves on exits 2 naming
    CHAT_POLICY_METRICS_BIND; the first keeps serving its metrics."""
    first = deployment.start_service()
    served = re.search(r"serving metrics at http://127\.0\.0\.1:(\d+)/", deployment.log("service"))
    assert served is not None
    port = int(served[1])
    bind = f"127.0.0.1:{port}"

    message = refusal(
        second,
        "service",
        {"CHAT_POLICY_GRPC_BIND": f"127.0.0.1:{free_port()}", "CHAT_POLICY_METRICS_BIND": bind},
    )
    assert message == (
        f"policy service cannot start: cannot listen on CHAT_POLICY_METRICS_BIND='{bind}':"
        f" {bind} is already in use"
    )
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    assert first.poll() is None


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


@dataclass(frozen=True)
class Unwritable:
    """A directory no file can be created in, when the command runs under `wrapper`."""

    directory: Path
    wrapper: tuple[str, ...]
    cause: str


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Unwritable]:
    """Mode 0555, or, for root (which mode bits do not stop), a read-only bind mount in a mount
    namespace of the command's own; where root may not make one, skipped (failed when CI is set)."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o555)
        yield Unwritable(directory, (), "Permission denied")
        directory.chmod(0o755)
        return
    remount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    wrapper = ("unshare", "--mount", "--propagation", "private", "sh", "-c", remount)
    wrapper += (str(directory),)
    if shutil.which("unshare") is None or subprocess.run([*wrapper, "true"]).returncode != 0:
        reason = "root ignores mode bits, and may not make a read-only bind mount here"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
        pytest.skip(f"{reason}; set CI=1 to make this a failure")
    yield Unwritable(directory, wrapper, "Read-only file system")


def data_dir_case(case: str, deployment: Deployment) -> tuple[dict[str, str], list[str]]:
    """The environment of a data directory case, and what its line must say."""
    data = deployment.tmp_path / "data"
    if case == "a file":
        data.write_text("")
        return {}, [f"CHAT_POLICY_DATA_DIR='{data}'", f"{data} is not a directory"]
    if case == "sqlite without a path":
        return (
            {"CHAT_POLICY_DATABASE_URL": "sqlite:///"},
            ["CHAT_POLICY_DATABASE_URL='sqlite:///' names no file: expected sqlite:///"],
        )
    assert case == "spool only"  # the service's database is elsewhere: the adapter refuses
    data.write_text("")
    database = f"sqlite:///{deployment.tmp_path / 'db' / 'chat-policy.db'}"
    return (
        {"CHAT_POLICY_DATABASE_URL": database},
        ["adapter cannot start", f"CHAT_POLICY_DATA_DIR='{data}'", f"{data} is not a directory"],
    )


@pytest.mark.parametrize(
    ("command", "case"),
    [
        ("service", "a file"),
        ("adapter", "a file"),
        ("run", "a file"),
        ("service", "sqlite without a path"),
        ("run", "sqlite without a path"),
        ("run", "spool only"),
    ],
)
def test_a_data_directory_that_cannot_be_used_is_refused(
    deployment: Deployment, command: str, case: str
) -> None:
    """A file where the data directory should be, or an SQLite URL without a path: exit 2 and
    one line with the variable, the path and the cause, no traceback."""
    env, expected = data_dir_case(case, deployment)
    message = refusal(deployment, command, env)
    for part in expected:
        assert part in message


@pytest.mark.parametrize("command", ["service", "adapter", "run"])
def test_a_data_directory_that_cannot_be_written_is_refused(
    deployment: Deployment, unwritable: Unwritable, command: str
) -> None:
    """A data directory no file can be created in: exit 2 and one line with the variable, the
    path and the operating system's reason, no traceback."""
    directory = unwritable.directory
    message = refusal(
        deployment, command, {"CHAT_POLICY_DATA_DIR": str(directory)}, unwritable.wrapper
    )
    assert f"CHAT_POLICY_DATA_DIR='{directory}'" in message
    assert f"cannot create files in {directory}: {unwritable.cause}" in message


def test_a_connection_cap_beyond_the_open_file_limit_is_refused(deployment: Deployment) -> None:
    """CHAT_POLICY_HTTP_MAX_CONNECTIONS that a worker could not open files for, under the hard
    limit the adapter inherits: exit 2 and one line naming the variable and the limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    message = refusal(deployment, "adapter", {"CHAT_POLICY_HTTP_MAX_CONNECTIONS": str(hard)})
    assert message.startswith(f"adapter cannot start: CHAT_POLICY_HTTP_MAX_CONNECTIONS={hard}: ")
    assert f"the hard limit (ulimit -Hn) is {hard}" in message


@pytest.mark.parametrize("command", ["service", "adapter", "run"])
@pytest.mark.parametrize(
    ("variable", "value"),
    [("OTEL_TRACES_EXPORTER", "zipkin"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")],
)
def test_an_unshipped_trace_exporter_is_refused(
    deployment: Deployment, command: str, variable: str, value: str
) -> None:
    """Tracing asked of an exporter or protocol not shipped exits 2 naming the variable,
    rather than running untraced (docs/tracing.md)."""
    extra = {variable: value, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}
    message = refusal(deployment, command, extra)
    assert f"{variable}={value!r}" in message
