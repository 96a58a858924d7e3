"""Mutual TLS between real processes: the adapter and `chat-policy run` as TLS clients."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import grpc
import pytest

from chat_policy_shared.channel import ChannelSecurity, open_channel
from chatpolicy.v1 import group_state_service_pb2 as pb
from chatpolicy.v1 import group_state_service_pb2_grpc
from tests.chat_samples import GROUP_FULL_SAMPLE, OK
from tests.e2e.deployment import Deployment, adapter_serves
from tests.e2e.webhook_requests import SDKAPPID, body, query
from tests.tls_files import Pki
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """Fresh CAs and certificates for the deployment."""
    return Pki.make(tmp_path / "pki")


@pytest.fixture
def mutual_tls(deployment: Deployment, pki: Pki) -> Deployment:
    """A deployment whose service requires mutual TLS and whose callers present certificates."""
    deployment.env.update(CHAT_POLICY_SDKAPPIDS=str(SDKAPPID))
    deployment.env.update(pki.service_env(mutual=True))
    deployment.env.update(pki.client_env(mutual=True))
    return deployment


def full_since_ms(deployment: Deployment, security: ChannelSecurity, group_id: str) -> int:
    """GetGroupState over a channel with `security`: when the group became full."""
    with open_channel(deployment.grpc_target, security) as channel:
        stub = group_state_service_pb2_grpc.GroupStateServiceStub(channel)
        request = pb.GetGroupStateRequest(sdk_app_id=SDKAPPID, group_id=group_id)
        response: pb.GetGroupStateResponse = stub.GetGroupState(request, timeout=5)
    assert response.group_state.full
    return response.group_state.full_since.ToMilliseconds()


def test_webhooks_reach_the_service_over_mutual_tls(mutual_tls: Deployment) -> None:
    """The adapter dials the service with its certificate; plaintext callers are refused."""
    mutual_tls.start_service()
    mutual_tls.start_adapter()
    sample = body(GROUP_FULL_SAMPLE, GroupId="@TGS#tls", EventTime=1670574414123)
    assert mutual_tls.post(query("Group.CallbackAfterGroupFull"), sample) == (200, OK)
    security = ChannelSecurity.from_env(mutual_tls.env)
    assert full_since_ms(mutual_tls, security, "@TGS#tls") == 1670574414123
    with pytest.raises(grpc.RpcError) as refused:
        full_since_ms(mutual_tls, ChannelSecurity(), "@TGS#tls")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_adapter_without_a_client_certificate_spools_and_fails_open(
    mutual_tls: Deployment,
) -> None:
    """An adapter the service does not accept answers Chat in time and keeps the event."""
    mutual_tls.start_service()
    without_cert = {"CHAT_POLICY_GRPC_TLS_CLIENT_CERT": "", "CHAT_POLICY_GRPC_TLS_CLIENT_KEY": ""}
    mutual_tls.start_adapter(without_cert)
    sample = body(GROUP_FULL_SAMPLE, GroupId="@TGS#refused", EventTime=1670574414123)
    assert mutual_tls.post(query("Group.CallbackAfterGroupFull"), sample) == (200, OK)
    wait_for(lambda: "spooled" in mutual_tls.log("adapter"), 5, "the adapter to spool")


def test_unreadable_client_ca_stops_the_adapter_with_a_clear_message(
    mutual_tls: Deployment, tmp_path: Path
) -> None:
    """The adapter refuses to start, exit 2, naming the variable with the missing file."""
    missing = str(tmp_path / "missing-ca.pem")
    process = mutual_tls.start("adapter", {"CHAT_POLICY_GRPC_TLS_CA": missing})
    assert process.wait(20) == 2
    assert f"CHAT_POLICY_GRPC_TLS_CA='{missing}'" in mutual_tls.log("adapter")


def test_run_supervises_both_over_mutual_tls(mutual_tls: Deployment) -> None:
    """`chat-policy run` waits for the TLS service with the client certificate, then serves."""
    run = mutual_tls.start("run")
    wait_for(lambda: adapter_serves(mutual_tls.http_port), 30, "the adapter to answer")
    sample = body(GROUP_FULL_SAMPLE, GroupId="@TGS#run", EventTime=1670574414123)
    status, answer = mutual_tls.post(query("Group.CallbackAfterGroupFull"), sample)
    assert (status, json.loads(answer)["ErrorCode"]) == (200, 0)
    security = ChannelSecurity.from_env(mutual_tls.env)
    assert full_since_ms(mutual_tls, security, "@TGS#run") == 1670574414123
    run.send_signal(signal.SIGTERM)
    assert run.wait(30) == 0
