"""Both services through a real gRPC server on port 0 and the generated stubs."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from chatpolicy.v1 import (
    creation_policy_service_pb2,
    group_state_service_pb2,
)
from policy_service.engine.policy_file import load_policy, parse_policy
from policy_service.engine.policy_reload import PolicyHolder
from policy_service.errors import StoreUnavailable
from policy_service.server import BindError, PolicyService
from policy_service.settings import ServiceSettings
from policy_service.stores.store import open_store
from tests.policy_service.servers import APP, BrokenStore, Serve, error_info, full_event

pb = group_state_service_pb2


def test_record_then_get_round_trips_milliseconds(serve: Serve) -> None:
    """RecordGroupFull returns the new state; GetGroupState returns the same, to the ms."""
    server = serve()
    recorded = server.groups.RecordGroupFull(full_event("@TGS#a", 1670574414123))
    assert recorded.applied
    got = server.groups.GetGroupState(pb.GetGroupStateRequest(sdk_app_id=APP, group_id="@TGS#a"))
    assert got.group_state == recorded.group_state
    assert got.group_state.full_since.ToMilliseconds() == 1670574414123
    assert got.group_state.full_event_count == 1
    assert not server.groups.RecordGroupFull(full_event("@TGS#a", 1670574414123)).applied


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.RecordGroupFullRequest(sdk_app_id=APP, group_id="g"), "event_time"),
        (full_event("", 1), "group_id"),
        (full_event("g", 1, app=0), "sdk_app_id"),
    ],
)
def test_incomplete_event_is_invalid_argument_naming_the_field(
    serve: Serve, request_: pb.RecordGroupFullRequest, field: str
) -> None:
    """A RecordGroupFull without a required field is INVALID_ARGUMENT with ErrorInfo."""
    with pytest.raises(grpc.RpcError) as raised:
        serve().groups.RecordGroupFull(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(raised.value)
    assert (info.reason, info.domain, info.metadata["field"]) == (
        "ERROR_REASON_INVALID_ARGUMENT",
        "chatpolicy.v1",
        field,
    )


def test_member_exit_and_destruction_end_fullness(serve: Serve) -> None:
    """RecordMemberExit and RecordGroupDestroyed clear a full group; repeats are not applied."""
    server = serve()
    server.groups.RecordGroupFull(full_event("@TGS#a", 1000))
    exit_request = pb.RecordMemberExitRequest(sdk_app_id=APP, group_id="@TGS#a")
    exit_request.event_time.FromMilliseconds(2000)
    exited = server.groups.RecordMemberExit(exit_request)
    assert exited.applied
    assert (exited.group_state.full, exited.group_state.HasField("full_since")) == (False, False)
    assert not server.groups.RecordMemberExit(exit_request).applied
    destroy_request = pb.RecordGroupDestroyedRequest(sdk_app_id=APP, group_id="@TGS#a")
    destroy_request.event_time.FromMilliseconds(3000)
    assert server.groups.RecordGroupDestroyed(destroy_request).group_state.destroyed
    got = server.groups.GetGroupState(pb.GetGroupStateRequest(sdk_app_id=APP, group_id="@TGS#a"))
    assert (got.group_state.full, got.group_state.destroyed) == (False, True)
    assert not server.groups.RecordGroupFull(full_event("@TGS#a", 2500)).applied


@pytest.mark.parametrize(
    "request_",
    [
        pb.RecordMemberExitRequest(sdk_app_id=APP, group_id="g"),
        pb.RecordGroupDestroyedRequest(sdk_app_id=APP, group_id="g"),
    ],
)
def test_whole_group_event_without_time_is_invalid_argument(
    serve: Serve, request_: pb.RecordMemberExitRequest | pb.RecordGroupDestroyedRequest
) -> None:
    """Exit and destruction events need an event_time too."""
    server = serve()
    method = type(request_).__name__.removesuffix("Request")
    with pytest.raises(grpc.RpcError) as raised:
        getattr(server.groups, method)(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).metadata["field"] == "event_time"


def test_unknown_group_is_not_found_with_reason(serve: Serve) -> None:
    """GetGroupState of a group never seen is NOT_FOUND naming the group."""
    request = pb.GetGroupStateRequest(sdk_app_id=APP, group_id="@TGS#none", topic_id="t1")
    with pytest.raises(grpc.RpcError) as raised:
        serve().groups.GetGroupState(request)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(raised.value)
    assert info.reason == "ERROR_REASON_GROUP_NOT_FOUND"
    assert dict(info.metadata) == {
        "sdk_app_id": str(APP),
        "group_id": "@TGS#none",
        "topic_id": "t1",
    }


def test_not_found_echoes_a_long_id_cut_to_a_prefix(serve: Serve) -> None:
    """GetGroupState and ClearGroupFull of an unknown group and topic with IDs of the full
    256 bytes are NOT_FOUND; the message and ErrorInfo metadata carry each ID's first 64
    characters and its length, not the whole ID."""
    server = serve()
    group_id, topic_id = "g" * 256, "t" * 256
    expected = {
        "sdk_app_id": str(APP),
        "group_id": f"{'g' * 64}… (256 characters)",
        "topic_id": f"{'t' * 64}… (256 characters)",
    }
    calls = [
        (
            server.groups.GetGroupState,
            pb.GetGroupStateRequest(sdk_app_id=APP, group_id=group_id, topic_id=topic_id),
        ),
        (
            server.groups.ClearGroupFull,
            pb.ClearGroupFullRequest(
                sdk_app_id=APP, group_id=group_id, topic_id=topic_id, reason="room again"
            ),
        ),
    ]
    for call, request in calls:
        with pytest.raises(grpc.RpcError) as raised:
            call(request, timeout=5)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert dict(error_info(raised.value).metadata) == expected
        assert raised.value.details() == (
            f"group '{expected['group_id']}' topic '{expected['topic_id']}'"
            f" of SdkAppid {APP} is not known"
        )


def test_a_10kb_unknown_id_gets_an_answer_the_client_accepts(serve: Serve) -> None:
    """GetGroupState of a 10 KB group ID is refused as INVALID_ARGUMENT with a short message,
    not failed by the client as RESOURCE_EXHAUSTED (metadata over its 16 KB limit) because
    the answer repeated the ID."""
    server = serve()
    with pytest.raises(grpc.RpcError) as raised:
        server.groups.GetGroupState(
            pb.GetGroupStateRequest(sdk_app_id=APP, group_id="g" * 10_240), timeout=5
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "group_id: must be at most 256 bytes of UTF-8 (it is 10240)"


def test_list_full_groups_pages_to_the_end(serve: Serve) -> None:
    """Pages of 2 over 5 groups return all, oldest first; the last page has no token."""
    server = serve()
    for i in range(5):
        server.groups.RecordGroupFull(full_event(f"g{i}", 5000 - i))
    server.groups.RecordGroupFull(full_event("other-app", 1, app=APP + 1))
    pages, token = [], ""
    while True:
        page = server.groups.ListFullGroups(
            pb.ListFullGroupsRequest(sdk_app_id=APP, page_size=2, page_token=token)
        )
        pages.append([state.group_id for state in page.group_states])
        token = page.next_page_token
        if not token:
            break
    assert pages == [["g4", "g3"], ["g2", "g1"], ["g0"]]
    everything = server.groups.ListFullGroups(pb.ListFullGroupsRequest())
    assert len(everything.group_states) == 6
    assert everything.next_page_token == ""


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (pb.ListFullGroupsRequest(page_size=-1), "ERROR_REASON_INVALID_ARGUMENT"),
        (pb.ListFullGroupsRequest(page_token="garbage"), "ERROR_REASON_INVALID_PAGE_TOKEN"),
    ],
)
def test_bad_list_requests_are_invalid_argument(
    serve: Serve, request_: pb.ListFullGroupsRequest, reason: str
) -> None:
    """A negative page size or a foreign page token is INVALID_ARGUMENT with its reason."""
    with pytest.raises(grpc.RpcError) as raised:
        serve().groups.ListFullGroups(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).reason == reason


def test_token_from_another_app_filter_is_refused(serve: Serve) -> None:
    """A page token only continues the listing it came from."""
    server = serve()
    for i in range(3):
        server.groups.RecordGroupFull(full_event(f"g{i}", 1000 + i))
    token = server.groups.ListFullGroups(
        pb.ListFullGroupsRequest(sdk_app_id=APP, page_size=1)
    ).next_page_token
    with pytest.raises(grpc.RpcError) as raised:
        server.groups.ListFullGroups(pb.ListFullGroupsRequest(sdk_app_id=0, page_token=token))
    assert error_info(raised.value).reason == "ERROR_REASON_INVALID_PAGE_TOKEN"


@pytest.mark.parametrize(
    ("error", "code", "reason", "message"),
    [
        (
            StoreUnavailable("SQLite: disk I/O error"),
            grpc.StatusCode.UNAVAILABLE,
            "ERROR_REASON_STORE_UNAVAILABLE",
            "SQLite: disk I/O error",
        ),
        (
            RuntimeError("secret detail"),
            grpc.StatusCode.INTERNAL,
            "ERROR_REASON_INTERNAL",
            "internal error",
        ),
    ],
)
def test_store_failures_map_to_canonical_codes(
    serve: Serve, error: Exception, code: grpc.StatusCode, reason: str, message: str
) -> None:
    """A failing store gives UNAVAILABLE, an unexpected error INTERNAL; never UNKNOWN."""
    server = serve(store=BrokenStore(error))
    with pytest.raises(grpc.RpcError) as raised:
        server.groups.GetGroupState(pb.GetGroupStateRequest(sdk_app_id=APP, group_id="g"))
    assert (raised.value.code(), raised.value.details()) == (code, message)
    assert error_info(raised.value).reason == reason


DENY_PUBLIC = b"""version = 1
[[rules]]
id = "no-public"
effect = "deny"
error_code = 10150
error_info = "no public groups"
group_types = ["Public"]
"""


def test_check_group_creation_returns_the_whole_decision(serve: Serve) -> None:
    """A denied creation returns decision, code, info, rule, revision and a decision id."""
    policy = parse_policy(DENY_PUBLIC)
    server = serve(policy=policy)
    cpb = creation_policy_service_pb2
    denied = server.creation.CheckGroupCreation(
        cpb.CheckGroupCreationRequest(sdk_app_id=APP, group_type="Public", create_group_num=0)
    )
    assert (denied.decision, denied.error_code, denied.error_info, denied.rule_id) == (
        cpb.DECISION_DENY,
        10150,
        "no public groups",
        "no-public",
    )
    assert denied.policy_revision == policy.revision
    assert len(denied.decision_id) == 32
    allowed = server.creation.CheckGroupCreation(
        cpb.CheckGroupCreationRequest(sdk_app_id=APP, group_type="Work")
    )
    assert (allowed.decision, allowed.error_code, allowed.rule_id) == (
        cpb.DECISION_ALLOW,
        0,
        "default",
    )
    assert allowed.decision_id != denied.decision_id


def test_check_group_creation_requires_the_app(serve: Serve) -> None:
    """A creation check without sdk_app_id is INVALID_ARGUMENT."""
    with pytest.raises(grpc.RpcError) as raised:
        serve().creation.CheckGroupCreation(creation_policy_service_pb2.CheckGroupCreationRequest())
    assert error_info(raised.value).metadata["field"] == "sdk_app_id"


def test_binding_a_taken_port_is_a_bind_error(serve: Serve, tmp_path: Path) -> None:
    """A second server on the same address fails with BindError naming the variable."""
    server = serve()

    async def build() -> None:
        store = await open_store(f"sqlite:///{tmp_path / 'other.db'}")
        try:
            with pytest.raises(BindError, match="CHAT_POLICY_GRPC_BIND"):
                PolicyService(
                    ServiceSettings(grpc_bind=server.target),
                    store,
                    PolicyHolder(None, load_policy(None)),
                )
        finally:
            await store.close()

    server.loop.run(build())
