"""Callers and permissions between real processes: `chat-policy service` with an access file
and mutual TLS, the adapter presenting a token file, the operator commands, reloads, and the
refusal to open a non-loopback port to everyone."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from chat_policy_shared.channel import ChannelSecurity, open_channel
from chatpolicy.v1 import group_state_service_pb2 as pb
from chatpolicy.v1 import group_state_service_pb2_grpc
from policy_service.access.access_file import token_digest_line
from tests.chat_samples import GROUP_FULL_SAMPLE, OK
from tests.e2e.deployment import CHAT_POLICY, Deployment
from tests.e2e.webhook_requests import SDKAPPID, body, query
from tests.policy_service.servers import error_info
from tests.tls_files import Pki
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

ADAPTER_TOKEN = "e2e-adapter-token"
OPS_TOKEN = "e2e-ops-token"
BILLING = "spiffe://example.org/billing"

ACCESS = f"""\
[callers.adapter]
relays_chat = true
tokens = ["{token_digest_line(ADAPTER_TOKEN)}"]
allow = ["creation.check", "group-state.write"]

[callers.billing]
certificates = ["{BILLING}"]
allow = ["group-state.read"]

[callers.ops]
tokens = ["{token_digest_line(OPS_TOKEN)}"]
allow = ["group-state.read", "admin"]
"""


@pytest.fixture
def guarded(deployment: Deployment, tmp_path: Path) -> tuple[Deployment, Pki]:
    """A deployment whose service requires mutual TLS and applies ACCESS; its clients (the
    adapter, the operator commands) present the unlisted certificate `client` and the
    adapter's token from a token file."""
    pki = Pki.make(tmp_path / "pki")
    pki.issue_client("billing", uris=(BILLING,), cn="billing")
    pki.issue_client("stranger", uris=("spiffe://example.org/stranger",))
    (tmp_path / "access.toml").write_text(ACCESS)
    (tmp_path / "adapter.token").write_text(ADAPTER_TOKEN + "\n")
    (tmp_path / "ops.token").write_text(OPS_TOKEN + "\n")
    deployment.env.update(pki.service_env(mutual=True))
    deployment.env.update(pki.client_env(mutual=True))
    deployment.env.update(
        CHAT_POLICY_SDKAPPIDS=str(SDKAPPID),
        CHAT_POLICY_ACCESS_FILE=str(tmp_path / "access.toml"),
        CHAT_POLICY_GRPC_TOKEN_FILE=str(tmp_path / "adapter.token"),
        CHAT_POLICY_GRPC_TLS_SERVER_NAME="localhost",
    )
    return deployment, pki


def as_certificate(deployment: Deployment, pki: Pki, name: str, token: str = "") -> Any:
    """A GroupStateService stub presenting client certificate `name` (and `token`)."""
    security = ChannelSecurity.from_env({**deployment.env, **pki.client_security_env(name)})
    security = ChannelSecurity(
        security.ca_file, security.cert_file, security.key_file, "localhost", token=token
    )
    return group_state_service_pb2_grpc.GroupStateServiceStub(
        open_channel(deployment.grpc_target, security)
    )


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    """The status code `call` ends with."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def get(stub: Any, group_id: str) -> Any:
    """GetGroupState of one group of SDKAPPID."""
    request = pb.GetGroupStateRequest(sdk_app_id=SDKAPPID, group_id=group_id)
    return stub.GetGroupState(request, timeout=5)


def record(stub: Any, group_id: str) -> Any:
    """RecordGroupFull of one group of SDKAPPID, now."""
    request = pb.RecordGroupFullRequest(sdk_app_id=SDKAPPID, group_id=group_id)
    request.event_time.GetCurrentTime()
    return stub.RecordGroupFull(request, timeout=5)


def groups_get(
    deployment: Deployment, group_id: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`chat-policy groups get SDKAPPID GROUP` in the deployment's environment and `env`."""
    return subprocess.run(
        [str(CHAT_POLICY), "groups", "get", str(SDKAPPID), group_id],
        env={**deployment.env, **env},
        cwd=deployment.tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_each_caller_gets_what_the_file_allows(guarded: tuple[Deployment, Pki]) -> None:
    """The adapter relays a webhook with its token; a certificate-named caller reads but may
    not write (PERMISSION_DENIED with the permission); `groups get` works with the token file
    of a caller that may read, and is UNAUTHENTICATED with a token of none."""
    deployment, pki = guarded
    deployment.start_service()
    deployment.start_adapter()
    assert "access sha256:" in deployment.log("service")
    sample = body(GROUP_FULL_SAMPLE, GroupId="@TGS#acl", EventTime=1670574414123)
    assert deployment.post(query("Group.CallbackAfterGroupFull"), sample) == (200, OK)
    billing = as_certificate(deployment, pki, "billing")
    assert get(billing, "@TGS#acl").group_state.full
    with pytest.raises(grpc.RpcError) as refused:
        record(billing, "@TGS#other")
    info = error_info(refused.value)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (info.reason, info.metadata["caller"], info.metadata["permission"]) == (
        "ERROR_REASON_METHOD_NOT_ALLOWED",
        "billing",
        "group-state.write",
    )
    shown = groups_get(
        deployment, "@TGS#acl", CHAT_POLICY_GRPC_TOKEN_FILE=str(deployment.tmp_path / "ops.token")
    )
    assert shown.returncode == 0, shown.stderr
    assert "full          yes" in shown.stdout
    as_adapter = groups_get(deployment, "@TGS#acl")
    assert as_adapter.returncode == 1
    assert "PERMISSION_DENIED" in as_adapter.stderr
    assert "ERROR_REASON_METHOD_NOT_ALLOWED" in as_adapter.stderr
    # The adapter's call was admitted (recorded, not spooled); its line is the adapter's, the
    # service's line for it being DEBUG. The refused call's line names its caller.
    relayed = [json.loads(line) for line in deployment.log("adapter").splitlines()]
    assert [line["outcome"] for line in relayed if line.get("command")] == ["recorded"]
    lines = [json.loads(line) for line in deployment.log("service").splitlines()]
    callers = {line.get("caller") for line in lines if line.get("rpc_method", "").endswith("Full")}
    assert callers == {"billing"}


def test_unknown_certificates_and_tokens_are_unauthenticated(
    guarded: tuple[Deployment, Pki],
) -> None:
    """A certificate of the CA that the file does not list, and a token it does not list,
    are refused UNAUTHENTICATED with ERROR_REASON_UNKNOWN_CALLER."""
    deployment, pki = guarded
    deployment.start_service()
    for stub in (
        as_certificate(deployment, pki, "stranger"),
        as_certificate(deployment, pki, "billing", token="not-a-listed-token"),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            get(stub, "@TGS#x")
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(refused.value).reason == "ERROR_REASON_UNKNOWN_CALLER"


def test_the_file_reloads_without_a_restart(guarded: tuple[Deployment, Pki]) -> None:
    """Giving a caller a permission takes effect while the service runs; a broken file is
    refused with an error line and the last good rules stay, on SIGHUP too."""
    deployment, pki = guarded
    service = deployment.start_service()
    billing = as_certificate(deployment, pki, "billing")
    assert code_of(lambda: record(billing, "@TGS#r")) == grpc.StatusCode.PERMISSION_DENIED
    access_file = deployment.tmp_path / "access.toml"
    access_file.write_text(
        ACCESS.replace('["group-state.read"]', '["group-state.read", "admin", "group-state.write"]')
    )
    wait_for(
        lambda: code_of(lambda: record(billing, "@TGS#r")) == grpc.StatusCode.OK,
        what="the new permission to apply",
    )
    access_file.write_text(ACCESS + "[callers.broken]\nallow = ['creation.check']\n")
    wait_for(
        lambda: "access file reload refused" in deployment.log("service"),
        what="the broken file to be refused",
    )
    service.send_signal(signal.SIGHUP)
    wait_for(
        lambda: deployment.log("service").count("access file reload refused") >= 2,
        what="the SIGHUP reload to be refused",
    )
    assert code_of(lambda: record(billing, "@TGS#r")) == grpc.StatusCode.OK
    assert service.poll() is None


def test_an_open_port_beyond_loopback_needs_saying_so(deployment: Deployment) -> None:
    """Binding 0.0.0.0 with neither an access file nor mutual TLS stops the service (exit 2,
    naming the ways out); CHAT_POLICY_GRPC_OPEN_ACCESS=true starts it with a warning."""
    bind = {"CHAT_POLICY_GRPC_BIND": f"0.0.0.0:{deployment.grpc_port}"}
    refused = deployment.start("service", bind)
    assert refused.wait(timeout=60) == 2
    log = deployment.log("service")
    assert "CHAT_POLICY_GRPC_OPEN_ACCESS=true to accept an open port knowingly" in log
    (deployment.tmp_path / "service.log").unlink()
    process = deployment.start("service", {**bind, "CHAT_POLICY_GRPC_OPEN_ACCESS": "true"})
    deployment.wait_for_grpc(process)
    warnings = [
        json.loads(line) for line in deployment.log("service").splitlines() if '"WARNING"' in line
    ]
    assert any("is open: any caller" in line["message"] for line in warnings)


def test_the_adapter_will_not_start_without_its_token(deployment: Deployment) -> None:
    """A token file that cannot be read stops the adapter at start (exit 2), naming it."""
    missing = str(deployment.tmp_path / "adapter.token")
    process = deployment.start("adapter", {"CHAT_POLICY_GRPC_TOKEN_FILE": missing})
    assert process.wait(timeout=60) == 2
    errors = [
        json.loads(line)["message"]
        for line in deployment.log("adapter").splitlines()
        if '"ERROR"' in line
    ]
    assert errors == [
        f"adapter cannot start: CHAT_POLICY_GRPC_TOKEN_FILE={missing!r}: No such file or directory"
    ]
