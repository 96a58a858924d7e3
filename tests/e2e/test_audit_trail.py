"""The audit trail of a real `chat-policy service` on SQLite and on PostgreSQL: a clear and a
failed clear, a policy reload, ListAuditEvents, `chat-policy audit list`, and retention."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from chatpolicy.v1 import audit_service_pb2, audit_service_pb2_grpc
from chatpolicy.v1 import group_state_service_pb2 as pb
from chatpolicy.v1 import group_state_service_pb2_grpc as rpc
from policy_service.clock import now_ms
from tests.e2e.deployment import Deployment, new_deployment
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

APP = 1400000000
GROUP = "@TGS#AUDITE2E"
CLEAR = "/chatpolicy.v1.GroupStateService/ClearGroupFull"
REASON = "member limit raised to 6000 (OPS-4711)"
ALLOW_ALL = 'version = 1\n[default]\neffect = "allow"\n'
DENY_ALL = 'version = 1\n[default]\neffect = "deny"\nerror_code = 10150\nerror_info = "Closed."\n'


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    """`chat-policy service` on the store of database_url, with a policy file of its own."""
    (tmp_path / "policy.toml").write_text(ALLOW_ALL)
    deployment = new_deployment(
        tmp_path,
        CHAT_POLICY_DATABASE_URL=database_url,
        CHAT_POLICY_POLICY_FILE=str(tmp_path / "policy.toml"),
    )
    try:
        deployment.start_service()
        yield deployment
    finally:
        deployment.stop_all()


def events(deployment: Deployment, **filters: object) -> list[audit_service_pb2.AuditEvent]:
    """The first page of ListAuditEvents with the filters, newest first."""
    with grpc.insecure_channel(deployment.grpc_target) as channel:
        page = audit_service_pb2_grpc.AuditServiceStub(channel).ListAuditEvents(
            audit_service_pb2.ListAuditEventsRequest(**filters), timeout=5
        )
    return list(page.events)


def record_full_and_clear(deployment: Deployment, group_id: str) -> None:
    """Chat says the group is full (as the adapter would), then an operator clears it."""
    with grpc.insecure_channel(deployment.grpc_target) as channel:
        groups = rpc.GroupStateServiceStub(channel)
        full = pb.RecordGroupFullRequest(sdk_app_id=APP, group_id=group_id)
        full.event_time.FromMilliseconds(now_ms() - 1000)
        groups.RecordGroupFull(full, timeout=5)
        request = pb.ClearGroupFullRequest(sdk_app_id=APP, group_id=group_id, reason=REASON)
        assert groups.ClearGroupFull(request, timeout=5).applied


def test_clears_and_reloads_are_audited_and_listed(service: Deployment, tmp_path: Path) -> None:
    """A clear is listed with caller anonymous, its reason, group and OK (the adapter's full
    event is not); a clear of an unknown group with NOT_FOUND; a changed policy file as
    policy.reload by local; `chat-policy audit list` shows them, as text and JSON."""
    record_full_and_clear(service, GROUP)
    failed = service.command("groups", "clear", str(APP), "@TGS#NOPE", "--reason", "typo")
    assert failed.returncode == 1, failed.stderr
    listed = events(service)
    assert [(e.caller, e.action, e.group_id, e.reason, e.result) for e in listed] == [
        ("anonymous", CLEAR, "@TGS#NOPE", "typo", "NOT_FOUND"),
        ("anonymous", CLEAR, GROUP, REASON, "OK"),
    ]
    assert listed[1].detail == "applied"
    assert "@TGS#NOPE" in listed[0].detail

    (tmp_path / "policy.toml").write_text(DENY_ALL)
    wait_for(lambda: len(events(service, action="policy.reload")) == 1, 10, "the reload's event")
    (reload,) = events(service, action="policy.reload")
    assert (reload.caller, reload.reason, reload.result) == ("local", "file changed", "OK")
    assert reload.detail.startswith("revision sha256:")

    text = service.command("audit", "list")
    assert text.returncode == 0, text.stderr
    header, reloaded, not_found, cleared, count = text.stdout.splitlines()
    assert header.split() == [
        "OCCURRED",
        "AT",
        "CALLER",
        "ACTION",
        "RESULT",
        "GROUP",
        "REASON:",
        "DETAIL",
    ]
    assert reloaded.split()[1:5] == ["local", "policy.reload", "OK", "-"]
    assert not_found.split()[1:6] == ["anonymous", CLEAR, "NOT_FOUND", str(APP), "@TGS#NOPE"]
    assert cleared.split()[1:6] == ["anonymous", CLEAR, "OK", str(APP), GROUP]
    assert cleared.endswith(f"{REASON}: applied")
    assert count == "3 audit events"

    document = json.loads(service.command("audit", "list", "--group", GROUP, "--json").stdout)
    (only,) = document["events"]
    assert {key: only[key] for key in ("caller", "action", "group_id", "reason", "result")} == {
        "caller": "anonymous",
        "action": CLEAR,
        "group_id": GROUP,
        "reason": REASON,
        "result": "OK",
    }
    limited = service.command("audit", "list", "--caller", "anonymous", "--limit", "1")
    assert (
        limited.stdout.splitlines()[-1]
        == "1 audit event shown; there are more: --all lists every one"
    )
    assert "audit: " + CLEAR + " by anonymous" in service.log("service")


def test_retention_prunes_the_audit_trail(database_url: str, tmp_path: Path) -> None:
    """With a retention of 2 s the service itself deletes an audit event once it is older."""
    deployment = new_deployment(
        tmp_path, CHAT_POLICY_DATABASE_URL=database_url, CHAT_POLICY_AUDIT_RETENTION_S="2"
    )
    try:
        deployment.start_service()
        record_full_and_clear(deployment, GROUP)
        wait_for(lambda: events(deployment) == [], 15, "retention to delete the audit event")
        assert " 1 audit events and " in deployment.log("service")
    finally:
        deployment.stop_all()
