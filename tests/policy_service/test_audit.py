"""The audit trail through a real server on port 0: what is audited (clears, non-relayed
Record* calls, policy reloads), what each event says, its log line, and ListAuditEvents."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc
import pytest

from chatpolicy.v1 import audit_service_pb2, audit_service_pb2_grpc
from chatpolicy.v1 import creation_policy_service_pb2 as creation_pb
from chatpolicy.v1 import group_state_service_pb2 as pb
from policy_service.access.caller import Caller, calling_as
from policy_service.api.group_state_servicer import GroupStateServicer
from policy_service.audit.audit_log import AuditQuery
from policy_service.audit.trail import AuditTrail
from policy_service.clock import now_ms
from policy_service.engine.decision_log import DecisionRecord
from policy_service.engine.policy_file import parse_policy
from policy_service.errors import StoreUnavailable
from policy_service.groups.change_feed import ChangeFeed
from tests.event_loops import LoopThread
from tests.policy_service.servers import APP, BrokenStore, Serve, Server, error_info, full_event
from tests.policy_service.stores import open_fresh
from tests.waiting import wait_for

GROUP = "@TGS#2J4SZEAEL"
CLEAR = "/chatpolicy.v1.GroupStateService/ClearGroupFull"
RECORD_FULL = "/chatpolicy.v1.GroupStateService/RecordGroupFull"


def audit_stub(server: Server) -> audit_service_pb2_grpc.AuditServiceStub:
    """An AuditService stub on the server's channel."""
    return audit_service_pb2_grpc.AuditServiceStub(server.channel)


def list_events(server: Server, **fields: Any) -> audit_service_pb2.ListAuditEventsResponse:
    """One ListAuditEvents page."""
    response: audit_service_pb2.ListAuditEventsResponse = audit_stub(server).ListAuditEvents(
        audit_service_pb2.ListAuditEventsRequest(**fields), timeout=5
    )
    return response


def clear(server: Server, group_id: str = GROUP, reason: str = "cap raised to 6000") -> Any:
    """ClearGroupFull of a group of APP, with a request ID of the test's."""
    return server.groups.ClearGroupFull(
        pb.ClearGroupFullRequest(sdk_app_id=APP, group_id=group_id, reason=reason),
        metadata=(("x-request-id", "req-clear-1"),),
        timeout=5,
    )


def test_a_clear_is_audited_with_its_caller_reason_and_outcome(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """A clear that applies is stored as an event (caller, reason, group, OK, applied, the
    request ID, this replica) and logged on one line with those fields."""
    server = serve()
    server.groups.RecordGroupFull(full_event(GROUP, 1000), timeout=5)
    with caplog.at_level(logging.INFO, logger="policy_service.audit.trail"):
        assert clear(server).applied
    (event,) = list_events(server).events
    assert (event.caller, event.action, event.sdk_app_id, event.group_id, event.topic_id) == (
        "anonymous",
        CLEAR,
        APP,
        GROUP,
        "",
    )
    assert (event.reason, event.result, event.detail) == ("cap raised to 6000", "OK", "applied")
    assert event.request_id == "req-clear-1"
    assert event.replica == server.service.trail.replica
    (line,) = [r for r in caplog.records if r.name == "policy_service.audit.trail"]
    assert line.getMessage() == (
        f"audit: {CLEAR} by anonymous on group {GROUP} of SdkAppid {APP}"
        " (cap raised to 6000): OK, applied"
    )
    assert {
        field: getattr(line, field)
        for field in ("audit_id", "caller", "action", "group_id", "reason", "result", "detail")
    } == {
        "audit_id": event.audit_id,
        "caller": "anonymous",
        "action": CLEAR,
        "group_id": GROUP,
        "reason": "cap raised to 6000",
        "result": "OK",
        "detail": "applied",
    }


def test_a_clear_that_changes_nothing_is_audited_saying_why(serve: Serve) -> None:
    """Clearing a group that is not full is audited, OK, not applied."""
    server = serve()
    server.groups.RecordGroupFull(full_event(GROUP, 1000), timeout=5)
    clear(server)
    assert not clear(server, reason="again").applied
    newest = list_events(server).events[0]
    assert (newest.reason, newest.result, newest.detail) == (
        "again",
        "OK",
        "not applied: the group is not full",
    )


def test_a_failed_clear_is_audited_with_its_status(serve: Serve) -> None:
    """A clear of an unknown group (NOT_FOUND) and one without a reason (INVALID_ARGUMENT)
    are each audited with the status code's name and its message."""
    server = serve()
    for reason, code in (("cap raised", "NOT_FOUND"), ("", "INVALID_ARGUMENT")):
        with pytest.raises(grpc.RpcError) as raised:
            clear(server, group_id="@TGS#NOPE", reason=reason)
        assert raised.value.code().name == code
        event = list_events(server).events[0]
        assert (event.group_id, event.reason, event.result) == ("@TGS#NOPE", reason, code)
        assert event.detail == raised.value.details()
    assert [e.result for e in list_events(server).events] == ["INVALID_ARGUMENT", "NOT_FOUND"]


def test_records_relayed_from_chat_are_not_audited(serve: Serve) -> None:
    """The anonymous caller relays Chat: its Record* calls, applied or failed, leave no event."""
    server = serve()
    server.groups.RecordGroupFull(full_event(GROUP, 1000), timeout=5)
    exit_event = pb.RecordMemberExitRequest(sdk_app_id=APP, group_id=GROUP)
    exit_event.event_time.FromMilliseconds(2000)
    server.groups.RecordMemberExit(exit_event, timeout=5)
    with pytest.raises(grpc.RpcError):
        server.groups.RecordGroupDestroyed(
            pb.RecordGroupDestroyedRequest(sdk_app_id=APP, group_id=GROUP), timeout=5
        )
    assert list(list_events(server).events) == []


def test_a_store_that_is_down_fails_the_clear_and_its_audit_without_masking(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """With the store down the clear is UNAVAILABLE (its own error), and the audit event that
    could not be stored is logged as such."""
    server = serve(store=BrokenStore(StoreUnavailable("SQLite: disk I/O error")))
    with (
        caplog.at_level(logging.INFO, logger="policy_service.audit.trail"),
        pytest.raises(grpc.RpcError) as raised,
    ):
        clear(server)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(raised.value).reason == "ERROR_REASON_STORE_UNAVAILABLE"
    messages = [r.getMessage() for r in caplog.records if r.name == "policy_service.audit.trail"]
    assert messages[0].endswith("(cap raised to 6000): UNAVAILABLE, SQLite: disk I/O error")
    assert messages[1].startswith("audit event ")
    assert messages[1].endswith("could not be stored: SQLite: disk I/O error")


class FakeContext:
    """What the servicer's error mapping asks of a grpc.aio context, for calls made directly."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    def time_remaining(self) -> float | None:
        return None

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        pass

    def set_trailing_metadata(self, metadata: object) -> None:
        pass


def test_records_of_a_caller_that_does_not_relay_chat_are_audited(
    request: pytest.FixtureRequest, tmp_path: Path, event_loop_thread: LoopThread
) -> None:
    """Served as a caller that is not the adapter, a RecordGroupFull is audited as that caller,
    applied or not, and a refused one with its status."""
    store = open_fresh("sqlite", request, tmp_path)
    servicer = GroupStateServicer(
        store.target,
        ChangeFeed(store.target),
        AuditTrail(store.target),
        watch_heartbeat_s=10,
        watch_max_streams=10,
        max_event_ahead_s=300,
    )

    async def as_janitor(message: Any, context: FakeContext) -> Any:
        with calling_as(Caller("janitor")):
            return await servicer.RecordGroupFull(message, context)

    try:
        for message in (full_event(GROUP, 1000), full_event(GROUP, 1000)):
            assert event_loop_thread.run(as_janitor(message, FakeContext())) is not None
        refused = FakeContext()
        no_time = pb.RecordGroupFullRequest(sdk_app_id=APP, group_id=GROUP)
        assert event_loop_thread.run(as_janitor(no_time, refused)) is None
        assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
        events = store.list_audit_events(AuditQuery(), 10, None)
        assert [(e.caller, e.action) for e in events] == [("janitor", RECORD_FULL)] * 3
        assert sorted((e.result, e.detail) for e in events) == [
            ("INVALID_ARGUMENT", "event_time: is required"),
            ("OK", "applied"),
            ("OK", "not applied: the group's last event is not older"),
        ]
    finally:
        store.close()


ALLOW_ALL = b'version = 1\n[default]\neffect = "allow"\n'
DENY_ALL = b'version = 1\n[default]\neffect = "deny"\nerror_code = 10150\nerror_info = "Closed."\n'


def test_policy_reloads_are_audited_loaded_or_refused(serve: Serve, tmp_path: Path) -> None:
    """A changed policy file is audited as policy.reload by "local": OK with the revision it
    loaded; a broken one REFUSED with why."""
    policy_file = tmp_path / "policy.toml"
    policy_file.write_bytes(ALLOW_ALL)
    server = serve(policy=policy_file)
    policy_file.write_bytes(DENY_ALL)
    wait_for(lambda: len(list_events(server, action="policy.reload").events) == 1)
    (loaded,) = list_events(server).events
    revision = parse_policy(DENY_ALL).revision
    assert (loaded.caller, loaded.reason, loaded.result) == ("local", "file changed", "OK")
    assert loaded.detail == f"revision {revision}"
    assert (loaded.sdk_app_id, loaded.group_id, loaded.request_id) == (0, "", "")
    policy_file.write_bytes(b"version = [")
    wait_for(lambda: len(list_events(server, action="policy.reload").events) == 2)
    refused = list_events(server).events[0]
    assert (refused.result, refused.caller) == ("REFUSED", "local")
    assert f"{policy_file}:" in refused.detail
    server.service.policy_watcher.request_reload()
    wait_for(lambda: len(list_events(server, action="policy.reload").events) == 3)
    assert list_events(server).events[0].reason == "SIGHUP"


def test_audit_events_are_listed_in_pages_with_filters(serve: Serve) -> None:
    """Pages of 2 walk every event newest first; filters keep their events; a token is
    bound to its filters; page_size 0 means 100."""
    server = serve()
    groups = [f"@TGS#G{n}" for n in range(5)]
    for n, group in enumerate(groups):
        server.groups.RecordGroupFull(full_event(group, 1000 + n), timeout=5)
        clear(server, group_id=group, reason=f"reason {n}")
    listed: list[str] = []
    token = ""
    while True:
        page = list_events(server, page_size=2, page_token=token)
        assert len(page.events) <= 2
        listed += [event.group_id for event in page.events]
        token = page.next_page_token
        if not token:
            break
    assert listed == groups[::-1]
    assert [e.reason for e in list_events(server, group_id="@TGS#G3").events] == ["reason 3"]
    assert list(list_events(server, caller="someone else").events) == []
    assert len(list_events(server, sdk_app_id=APP, action=CLEAR, page_size=0).events) == 5
    everything = list_events(server).events
    newest_ms = everything[0].occurred_at.ToMilliseconds()
    at_or_after = list_events(server, occurred_at_or_after=everything[0].occurred_at).events
    assert all(e.occurred_at.ToMilliseconds() >= newest_ms for e in at_or_after)
    token = list_events(server, page_size=1).next_page_token
    with pytest.raises(grpc.RpcError) as raised:
        list_events(server, page_size=1, page_token=token, caller="anonymous")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).reason == "ERROR_REASON_INVALID_PAGE_TOKEN"


def test_list_decisions_filters_on_and_returns_the_caller(serve: Serve) -> None:
    """ListDecisions keeps one caller's decisions and says whose each one is."""
    server = serve()
    now = now_ms()
    server.store.append_decisions(
        [
            DecisionRecord(
                decision_id=f"d-{n}",
                decided_at_ms=now + n,
                sdk_app_id=APP,
                operator_account="alice",
                effect="allow",
                error_code=0,
                error_info="",
                rule_id="default",
                reason="",
                policy_revision="rev-1",
                shadow_rule_ids=(),
                latency_us=1,
                request_json=(
                    '{"sdk_app_id": 1400000000, "operator_account": "alice", "owner_account": "",'
                    ' "group_type": "", "name": "", "create_group_num": null,'
                    ' "member_accounts": [], "event_time_ms": null, "client_ip": "",'
                    ' "opt_platform": ""}'
                ),
                caller=caller,
            )
            for n, caller in enumerate(["adapter", "crm", "adapter"])
        ]
    )
    listed = server.creation.ListDecisions(creation_pb.ListDecisionsRequest(), timeout=5)
    assert [d.caller for d in listed.decisions] == ["adapter", "crm", "adapter"]
    crm = server.creation.ListDecisions(creation_pb.ListDecisionsRequest(caller="crm"), timeout=5)
    assert [(d.decision_id, d.caller) for d in crm.decisions] == [("d-1", "crm")]
