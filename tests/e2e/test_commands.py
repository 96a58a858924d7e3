"""`chat-policy run`, `service` and `adapter` as a user starts and stops them."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from chat_policy_shared.version import version
from tests.chat_samples import OK
from tests.e2e.deployment import Deployment, adapter_serves
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

FULL = b'{"CallbackCommand":"Group.CallbackAfterGroupFull","GroupId":"@TGS#run","EventTime":1}'
QUERY = "SdkAppid=1400000000&CallbackCommand=Group.CallbackAfterGroupFull&contenttype=json"


def children(pid: int) -> list[int]:
    """The direct child processes of `pid` (Linux /proc)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start_run(deployment: Deployment) -> tuple[subprocess.Popen[bytes], list[int]]:
    """Start `chat-policy run`, wait until the adapter answers; return it and its two children."""
    run = deployment.start("run")
    wait_for(
        lambda: run.poll() is None and adapter_serves(deployment.http_port),
        30,
        "chat-policy run to serve webhooks",
    )
    wait_for(lambda: len(children(run.pid)) == 2, 10, "both children to be running")
    return run, children(run.pid)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_run_serves_webhooks_and_a_signal_stops_both(
    deployment: Deployment, stop_signal: signal.Signals
) -> None:
    """`run` brings up service and adapter; Ctrl-C or SIGTERM stops both and exits 0."""
    run, (service, adapter) = start_run(deployment)
    assert deployment.post(QUERY, FULL) == (200, OK)

    run.send_signal(stop_signal)
    assert run.wait(timeout=15) == 0
    assert not is_running(service)
    assert not is_running(adapter)
    assert "policy service stopped" in deployment.log("run")
    # Both start lines name the version installed.
    assert f"policy service {version()} listening on" in deployment.log("run")
    assert f"adapter {version()} listening on" in deployment.log("run")


def test_run_exits_nonzero_and_stops_the_adapter_when_the_service_dies(
    deployment: Deployment,
) -> None:
    """If the policy service is killed, `run` stops the adapter too and exits 1."""
    run, (service, adapter) = start_run(deployment)

    os.kill(service, signal.SIGKILL)
    assert run.wait(timeout=15) == 1
    assert not is_running(adapter)
    assert "policy service exited with status -9" in deployment.log("run")


@pytest.mark.parametrize(
    ("command", "variable", "value", "message"),
    [
        ("run", "CHAT_POLICY_GRPC_DEADLINE_MS", "2500", "must be below Chat's 2000 ms timeout"),
        ("adapter", "CHAT_POLICY_SDKAPPIDS", "demo", "must be a comma list of numbers"),
        ("service", "CHAT_POLICY_POLICY_FILE", "/nonexistent/policy.toml", "cannot read"),
        ("service", "CHAT_POLICY_DATABASE_URL", "mysql://x", "unsupported database URL"),
        ("adapter", "CHAT_POLICY_ON_POLICY_ERROR", "maybe", "CHAT_POLICY_ON_POLICY_ERROR"),
        (
            "adapter",
            "CHAT_POLICY_DATA_DIR",
            "/proc/chat-policy",
            "CHAT_POLICY_DATA_DIR='/proc/chat-policy': cannot create directory /proc/chat-policy",
        ),
    ],
)
def test_bad_configuration_is_refused_with_a_clear_message(
    deployment: Deployment, command: str, variable: str, value: str, message: str
) -> None:
    """A setting the command cannot use: exit status 2, one line naming it, no traceback."""
    process = deployment.start(command, {variable: value})
    assert process.wait(timeout=30) == 2
    log = deployment.log(command)
    assert message in log
    assert "Traceback" not in log


def test_service_refuses_an_invalid_policy_file(deployment: Deployment) -> None:
    """An invalid policy names the rule and field at fault, and the service does not start."""
    policy = deployment.tmp_path / "policy.toml"
    policy.write_text('version = 1\n[[rules]]\nid = "r1"\neffect = "deny"\nerror_code = 42\n')
    process = deployment.start("service", {"CHAT_POLICY_POLICY_FILE": str(policy)})
    assert process.wait(timeout=30) == 2
    assert (
        f"{policy}:5: rule 'r1' field 'error_code': must be 1 or in [10100, 10200], got 42"
        in deployment.log("service")
    )
