"""Named callers in what the service records, on SQLite and PostgreSQL: a real `chat-policy
service` with an access file (tokens), the adapter's relayed events left out of the audit
trail, an operator's clear and another service's record in it with their callers, an access
reload audited, and the caller of each recorded decision; read back through ListAuditEvents,
`chat-policy audit list` and `chat-policy decisions list` with a token file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from chat_policy_shared.channel import ChannelSecurity, open_channel
from chatpolicy.v1 import audit_service_pb2, audit_service_pb2_grpc
from chatpolicy.v1 import creation_policy_service_pb2 as creation
from chatpolicy.v1 import creation_policy_service_pb2_grpc as creation_rpc
from chatpolicy.v1 import group_state_service_pb2 as pb
from chatpolicy.v1 import group_state_service_pb2_grpc as rpc
from policy_service.access.access_file import token_digest_line
from policy_service.clock import now_ms
from tests.e2e.deployment import Deployment, new_deployment
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

APP = 1400000000
CLEAR = "/chatpolicy.v1.GroupStateService/ClearGroupFull"
RECORD_FULL = "/chatpolicy.v1.GroupStateService/RecordGroupFull"
REASON = "member limit raised to 6000 (OPS-4712)"
TOKENS = {"adapter": "t-adapter-e2e", "ops": "t-ops-e2e", "janitor": "t-janitor-e2e"}
ACCESS = f"""\
[callers.adapter]
relays_chat = true
tokens = ["{token_digest_line(TOKENS["adapter"])}"]
allow = ["creation.check", "group-state.write"]

[callers.janitor]
tokens = ["{token_digest_line(TOKENS["janitor"])}"]
allow = ["group-state.write"]

[callers.ops]
tokens = ["{token_digest_line(TOKENS["ops"])}"]
allow = ["admin", "audit.read", "decisions.read", "creation.check"]
"""


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    """`chat-policy service` on database_url with ACCESS; operator commands run as ops."""
    (tmp_path / "access.toml").write_text(ACCESS)
    for name, token in TOKENS.items():
        (tmp_path / f"{name}.token").write_text(token + "\n")
    deployment = new_deployment(
        tmp_path,
        CHAT_POLICY_DATABASE_URL=database_url,
        CHAT_POLICY_ACCESS_FILE=str(tmp_path / "access.toml"),
        CHAT_POLICY_GRPC_TOKEN_FILE=str(tmp_path / "ops.token"),
    )
    try:
        deployment.start_service()
        yield deployment
    finally:
        deployment.stop_all()


def channel_as(deployment: Deployment, name: str) -> grpc.Channel:
    """A channel that presents caller `name`'s token on every call."""
    return open_channel(deployment.grpc_target, ChannelSecurity(token=TOKENS[name]))


def audit_events(deployment: Deployment, **filters: object) -> list[audit_service_pb2.AuditEvent]:
    """The first page of ListAuditEvents, asked as ops."""
    with channel_as(deployment, "ops") as channel:
        page = audit_service_pb2_grpc.AuditServiceStub(channel).ListAuditEvents(
            audit_service_pb2.ListAuditEventsRequest(**filters), timeout=5
        )
    return list(page.events)


def full(group_id: str) -> pb.RecordGroupFullRequest:
    request = pb.RecordGroupFullRequest(sdk_app_id=APP, group_id=group_id)
    request.event_time.FromMilliseconds(now_ms() - 1000)
    return request


def test_the_audit_trail_and_decisions_name_their_callers(
    service: Deployment, tmp_path: Path
) -> None:
    with channel_as(service, "adapter") as channel:
        rpc.GroupStateServiceStub(channel).RecordGroupFull(full("@TGS#RELAYED"), timeout=5)
        creation_rpc.CreationPolicyServiceStub(channel).CheckGroupCreation(
            creation.CheckGroupCreationRequest(sdk_app_id=APP, operator_account="alice"),
            timeout=5,
        )
    with channel_as(service, "janitor") as channel:
        rpc.GroupStateServiceStub(channel).RecordGroupFull(full("@TGS#BYHAND"), timeout=5)
    cleared = service.command("groups", "clear", str(APP), "@TGS#RELAYED", "--reason", REASON)
    assert cleared.returncode == 0, cleared.stderr
    dry = service.command("decide", "--operator", "bob")
    assert dry.returncode == 0, dry.stderr

    # The adapter's relayed event is not audited; the clear and the janitor's record are.
    listed = audit_events(service, sdk_app_id=APP)
    assert [(e.caller, e.action, e.group_id, e.reason, e.result) for e in listed] == [
        ("ops", CLEAR, "@TGS#RELAYED", REASON, "OK"),
        ("janitor", RECORD_FULL, "@TGS#BYHAND", "", "OK"),
    ]
    text = service.command("audit", "list", "--caller", "ops")
    assert text.returncode == 0, text.stderr
    (line,) = text.stdout.splitlines()[1:-1]
    assert line.split()[1:6] == ["ops", CLEAR, "OK", str(APP), "@TGS#RELAYED"]
    assert line.endswith(f"{REASON}: applied")

    # The live decision names the adapter; ops' dry run is not recorded.
    decisions = service.command("decisions", "list", "--json")
    assert decisions.returncode == 0, decisions.stderr
    records = json.loads(decisions.stdout)["decisions"]
    assert [(r["caller"], r["request"]["operator_account"]) for r in records] == [
        ("adapter", "alice")
    ]
    by_caller = service.command("decisions", "list", "--caller", "ops", "--json")
    assert json.loads(by_caller.stdout)["decisions"] == []

    # A caller without audit.read is refused the trail; a changed access file is audited.
    with channel_as(service, "janitor") as channel, pytest.raises(grpc.RpcError) as refused:
        audit_service_pb2_grpc.AuditServiceStub(channel).ListAuditEvents(
            audit_service_pb2.ListAuditEventsRequest(), timeout=5
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    (tmp_path / "access.toml").write_text(ACCESS.replace('"admin", ', ""))
    wait_for(
        lambda: len(audit_events(service, action="access.reload")) == 1,
        10,
        "the access reload's audit event",
    )
    (reload,) = audit_events(service, action="access.reload")
    assert (reload.caller, reload.reason, reload.result) == ("local", "file changed", "OK")
    denied = service.command("groups", "clear", str(APP), "@TGS#BYHAND", "--reason", "again")
    assert denied.returncode == 1
    assert "PERMISSION_DENIED" in denied.stderr
    assert "ERROR_REASON_METHOD_NOT_ALLOWED" in denied.stderr
