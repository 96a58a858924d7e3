"""ClearGroupFull, BatchGetGroupStates, CountGroupStates and ListFullGroups through gRPC."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import duration_pb2

from chatpolicy.v1 import group_state_pb2, group_state_service_pb2
from policy_service.clock import now_ms
from policy_service.errors import StoreUnavailable
from tests.policy_service.servers import APP, BrokenStore, Serve, Server, error_info, full_event

pb = group_state_service_pb2
REASON = "member limit raised to 500"
# A fixed EventTime for tests that do not depend on the service's clock.
T0 = 1_670_574_414_000


def topic_full(
    group_id: str, topic_id: str, event_time_ms: int, app: int = APP
) -> pb.RecordGroupFullRequest:
    """A RecordGroupFull request for one topic of a Community group."""
    request = full_event(group_id, event_time_ms, app=app)
    request.topic_id = topic_id
    return request


def member_exit(group_id: str, event_time_ms: int, app: int = APP) -> pb.RecordMemberExitRequest:
    """A RecordMemberExit request."""
    request = pb.RecordMemberExitRequest(sdk_app_id=app, group_id=group_id)
    request.event_time.FromMilliseconds(event_time_ms)
    return request


def destroyed(group_id: str, event_time_ms: int, app: int = APP) -> pb.RecordGroupDestroyedRequest:
    """A RecordGroupDestroyed request."""
    request = pb.RecordGroupDestroyedRequest(sdk_app_id=app, group_id=group_id)
    request.event_time.FromMilliseconds(event_time_ms)
    return request


def clear(
    group_id: str,
    reason: str = REASON,
    clear_time_ms: int | None = None,
    topic_id: str = "",
    app: int = APP,
) -> pb.ClearGroupFullRequest:
    """A ClearGroupFull request, stamped by the service unless clear_time_ms is given."""
    request = pb.ClearGroupFullRequest(
        sdk_app_id=app, group_id=group_id, topic_id=topic_id, reason=reason
    )
    if clear_time_ms is not None:
        request.clear_time.FromMilliseconds(clear_time_ms)
    return request


def get(
    server: Server, group_id: str, topic_id: str = "", app: int = APP
) -> group_state_pb2.GroupState:
    """The group's state as GetGroupState returns it."""
    request = pb.GetGroupStateRequest(sdk_app_id=app, group_id=group_id, topic_id=topic_id)
    return server.groups.GetGroupState(request).group_state


def ref(group_id: str, topic_id: str = "", app: int = APP) -> group_state_pb2.GroupRef:
    """A GroupRef."""
    return group_state_pb2.GroupRef(sdk_app_id=app, group_id=group_id, topic_id=topic_id)


def full_for(duration: duration_pb2.Duration, **request: object) -> pb.ListFullGroupsRequest:
    """A ListFullGroups request with min_full_duration set."""
    message = pb.ListFullGroupsRequest(**request)
    message.min_full_duration.CopyFrom(duration)
    return message


def minutes(count: float) -> duration_pb2.Duration:
    """A Duration of `count` minutes."""
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(int(count * 60_000))
    return duration


# ClearGroupFull


def test_clear_ends_fullness_and_keeps_the_reason(serve: Serve) -> None:
    """Clearing a full group applies: not full, last event CLEARED, the reason kept."""
    server = serve()
    server.groups.RecordGroupFull(full_event("@TGS#a", T0))
    server.groups.RecordGroupFull(full_event("@TGS#a", T0 + 1))
    cleared = server.groups.ClearGroupFull(clear("@TGS#a", clear_time_ms=T0 + 500))
    assert cleared.applied
    state = cleared.group_state
    assert (state.full, state.HasField("full_since"), state.full_event_count) == (False, False, 0)
    assert state.last_event_kind == group_state_pb2.GROUP_EVENT_KIND_CLEARED
    assert state.last_event_time.ToMilliseconds() == T0 + 500
    assert state.clear_reason == REASON
    assert get(server, "@TGS#a") == state


def test_clear_without_time_uses_the_service_clock(serve: Serve) -> None:
    """An unset clear_time stamps the clear with the service's clock."""
    server = serve()
    server.groups.RecordGroupFull(full_event("@TGS#a", now_ms() - 60_000))
    cleared = server.groups.ClearGroupFull(clear("@TGS#a"))
    assert cleared.applied
    stamped_s = cleared.group_state.last_event_time.ToMilliseconds() / 1000
    assert abs(stamped_s - time.time()) < 1.0


def test_clear_older_than_the_last_event_is_not_applied(serve: Serve) -> None:
    """A clear before the group's last event changes nothing; the group stays full."""
    server = serve()
    full = server.groups.RecordGroupFull(full_event("@TGS#a", T0)).group_state
    late = server.groups.ClearGroupFull(clear("@TGS#a", clear_time_ms=T0 - 1))
    assert not late.applied
    assert late.group_state == full
    assert get(server, "@TGS#a") == full


def test_clear_of_a_group_that_is_not_full_is_not_applied(serve: Serve) -> None:
    """Clearing a tracked group that is not full answers applied = false and changes nothing."""
    server = serve()
    server.groups.RecordGroupFull(full_event("@TGS#a", T0))
    left = server.groups.RecordMemberExit(member_exit("@TGS#a", T0 + 1)).group_state
    cleared = server.groups.ClearGroupFull(clear("@TGS#a", clear_time_ms=T0 + 2))
    assert not cleared.applied
    assert cleared.group_state == left
    assert get(server, "@TGS#a").clear_reason == ""


def test_clear_of_a_group_does_not_clear_its_topics(serve: Serve) -> None:
    """Clearing the group itself leaves a full topic of it full, and vice versa."""
    server = serve()
    server.groups.RecordGroupFull(full_event("@TGS#a", T0))
    server.groups.RecordGroupFull(topic_full("@TGS#a", "t1", T0))
    assert server.groups.ClearGroupFull(clear("@TGS#a", clear_time_ms=T0 + 1)).applied
    assert get(server, "@TGS#a", "t1").full
    cleared_topic = server.groups.ClearGroupFull(
        clear("@TGS#a", topic_id="t1", clear_time_ms=T0 + 2)
    )
    assert cleared_topic.applied
    assert cleared_topic.group_state.topic_id == "t1"
    assert not get(server, "@TGS#a", "t1").full


def test_clear_of_an_unknown_group_is_not_found(serve: Serve) -> None:
    """Clearing a group the service never saw is NOT_FOUND with GROUP_NOT_FOUND."""
    with pytest.raises(grpc.RpcError) as raised:
        serve().groups.ClearGroupFull(clear("@TGS#none", topic_id="t1"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(raised.value)
    assert info.reason == "ERROR_REASON_GROUP_NOT_FOUND"
    assert dict(info.metadata) == {
        "sdk_app_id": str(APP),
        "group_id": "@TGS#none",
        "topic_id": "t1",
    }


@pytest.mark.parametrize(
    "reason", ["", "   ", "\t\n", "x" * 257], ids=["empty", "spaces", "ws", "257"]
)
def test_missing_blank_or_long_reason_is_invalid_argument(serve: Serve, reason: str) -> None:
    """A clear needs a non-blank reason of at most 256 characters."""
    server = serve()
    server.groups.RecordGroupFull(full_event("@TGS#a", T0))
    with pytest.raises(grpc.RpcError) as raised:
        server.groups.ClearGroupFull(clear("@TGS#a", reason=reason, clear_time_ms=T0 + 1))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(raised.value)
    assert (info.reason, info.metadata["field"]) == ("ERROR_REASON_INVALID_ARGUMENT", "reason")
    assert get(server, "@TGS#a").full


@pytest.mark.parametrize(
    "reason", ["x" * 256, "é" * 256, "满" * 256], ids=["ascii", "latin", "cjk"]
)
def test_reason_of_256_characters_is_accepted(serve: Serve, reason: str) -> None:
    """256 characters is allowed, whatever their encoded length in bytes."""
    server = serve()
    server.groups.RecordGroupFull(full_event("@TGS#a", T0))
    cleared = server.groups.ClearGroupFull(clear("@TGS#a", reason=reason, clear_time_ms=T0 + 1))
    assert cleared.applied
    assert get(server, "@TGS#a").clear_reason == reason


def test_full_event_after_a_clear_makes_the_group_full_again(serve: Serve) -> None:
    """A full event newer than the clear makes the group full and empties clear_reason."""
    server = serve()
    server.groups.RecordGroupFull(full_event("@TGS#a", T0))
    server.groups.ClearGroupFull(clear("@TGS#a", clear_time_ms=T0 + 10))
    assert not server.groups.RecordGroupFull(full_event("@TGS#a", T0 + 5)).applied
    refilled = server.groups.RecordGroupFull(full_event("@TGS#a", T0 + 20))
    assert refilled.applied
    state = get(server, "@TGS#a")
    assert state == refilled.group_state
    assert (state.full, state.full_since.ToMilliseconds(), state.full_event_count) == (
        True,
        T0 + 20,
        1,
    )
    assert state.last_event_kind == group_state_pb2.GROUP_EVENT_KIND_FULL
    assert state.clear_reason == ""


# BatchGetGroupStates


def test_batch_get_returns_known_and_missing_in_request_order(serve: Serve) -> None:
    """Known states and unknown refs come back in request order, topics apart, duplicates once."""
    server = serve()
    server.groups.RecordGroupFull(full_event("b", T0))
    server.groups.RecordGroupFull(full_event("a", T0 + 1))
    server.groups.RecordGroupFull(topic_full("a", "t1", T0 + 2))
    server.groups.RecordGroupFull(full_event("a", T0 + 3, app=APP + 1))
    requested = [
        ref("x"),
        ref("a", "t1"),
        ref("b"),
        ref("a", app=APP + 1),
        ref("a"),
        ref("b", "t1"),
        ref("x"),
        ref("b"),
        ref("w"),
        ref("a", "t1"),
    ]
    answer = server.groups.BatchGetGroupStates(pb.BatchGetGroupStatesRequest(groups=requested))
    found = [(s.sdk_app_id, s.group_id, s.topic_id) for s in answer.group_states]
    assert found == [(APP, "a", "t1"), (APP, "b", ""), (APP + 1, "a", ""), (APP, "a", "")]
    assert list(answer.missing) == [ref("x"), ref("b", "t1"), ref("w")]
    assert list(answer.group_states) == [
        get(server, "a", "t1"),
        get(server, "b"),
        get(server, "a", app=APP + 1),
        get(server, "a"),
    ]


def test_batch_get_of_1000_groups_works(serve: Serve) -> None:
    """The largest batch, 1000 groups, answers every one of them."""
    server = serve()
    for i in range(0, 1000, 100):
        server.groups.RecordGroupFull(full_event(f"g{i}", T0 + i))
    requested = [ref(f"g{i}") for i in range(1000)]
    answer = server.groups.BatchGetGroupStates(pb.BatchGetGroupStatesRequest(groups=requested))
    assert [s.group_id for s in answer.group_states] == [f"g{i}" for i in range(0, 1000, 100)]
    assert len(answer.missing) == 990
    assert answer.missing[0] == ref("g1")


@pytest.mark.parametrize("count", [0, 1001])
def test_batch_get_of_no_or_too_many_groups_is_invalid_argument(serve: Serve, count: int) -> None:
    """A batch must name 1 to 1000 groups."""
    request = pb.BatchGetGroupStatesRequest(groups=[ref(f"g{i}") for i in range(count)])
    with pytest.raises(grpc.RpcError) as raised:
        serve().groups.BatchGetGroupStates(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(raised.value)
    assert (info.reason, info.metadata["field"]) == ("ERROR_REASON_INVALID_ARGUMENT", "groups")


@pytest.mark.parametrize(
    ("bad", "field"),
    [(ref("g", app=0), "sdk_app_id"), (ref(""), "group_id"), (ref("g\x00"), "group_id")],
    ids=["no-app", "no-group", "nul"],
)
def test_batch_get_with_an_invalid_ref_is_invalid_argument(
    serve: Serve, bad: group_state_pb2.GroupRef, field: str
) -> None:
    """One invalid GroupRef among valid ones fails the whole call, naming the field."""
    server = serve()
    server.groups.RecordGroupFull(full_event("g", T0))
    request = pb.BatchGetGroupStatesRequest(groups=[ref("g"), bad, ref("h")])
    with pytest.raises(grpc.RpcError) as raised:
        server.groups.BatchGetGroupStates(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(raised.value)
    assert info.reason == "ERROR_REASON_INVALID_ARGUMENT"
    assert info.metadata["field"] == f"groups[1].{field}"


# CountGroupStates


def test_count_group_states_by_condition_and_app(serve: Serve) -> None:
    """Counts cover groups and topics, full and destroyed ones; sdk_app_id narrows them."""
    server = serve()
    groups = server.groups
    groups.RecordGroupFull(full_event("full", T0))
    groups.RecordGroupFull(full_event("left", T0))
    groups.RecordMemberExit(member_exit("left", T0 + 1))
    groups.RecordMemberExit(member_exit("never-full", T0))
    groups.RecordGroupFull(topic_full("community", "t1", T0))
    groups.RecordGroupFull(topic_full("community", "t2", T0))
    groups.RecordGroupFull(full_event("gone", T0))
    groups.RecordGroupFull(topic_full("gone", "t1", T0))
    groups.RecordGroupDestroyed(destroyed("gone", T0 + 1))
    groups.RecordGroupFull(full_event("full", T0, app=APP + 1))
    groups.RecordGroupFull(full_event("other", T0, app=APP + 1))
    groups.RecordGroupDestroyed(destroyed("other-gone", T0, app=APP + 1))

    def counts(app: int) -> tuple[int, int, int]:
        answer = groups.CountGroupStates(pb.CountGroupStatesRequest(sdk_app_id=app))
        return answer.tracked_count, answer.full_count, answer.destroyed_count

    # APP: full, left, never-full, community/t1, community/t2, gone, gone/t1.
    assert counts(APP) == (7, 3, 2)
    # APP + 1: full, other, other-gone.
    assert counts(APP + 1) == (3, 2, 1)
    assert counts(0) == (10, 5, 3)
    assert counts(APP + 2) == (0, 0, 0)


# ListFullGroups with min_full_duration


@pytest.fixture
def aged(serve: Serve) -> Server:
    """A server with groups full since 10 minutes, 2 minutes and 10 seconds ago, by the clock."""
    server = serve()
    now = now_ms()
    server.groups.RecordGroupFull(full_event("recent", now - 10_000))
    server.groups.RecordGroupFull(full_event("ten-minutes", now - 600_000))
    server.groups.RecordGroupFull(full_event("two-minutes", now - 120_000))
    server.groups.RecordGroupFull(full_event("other-app", now - 600_000, app=APP + 1))
    return server


def test_min_full_duration_lists_only_groups_full_that_long(aged: Server) -> None:
    """min_full_duration 1 minute lists the groups full for longer, oldest first."""
    page = aged.groups.ListFullGroups(full_for(minutes(1), sdk_app_id=APP))
    assert [s.group_id for s in page.group_states] == ["ten-minutes", "two-minutes"]
    assert page.next_page_token == ""
    everything = aged.groups.ListFullGroups(pb.ListFullGroupsRequest(sdk_app_id=APP))
    assert [s.group_id for s in everything.group_states] == [
        "ten-minutes",
        "two-minutes",
        "recent",
    ]
    longest = aged.groups.ListFullGroups(full_for(minutes(5)))
    assert [(s.sdk_app_id, s.group_id) for s in longest.group_states] == [
        (APP, "ten-minutes"),
        (APP + 1, "other-app"),
    ]


def test_paging_keeps_the_min_full_duration(aged: Server) -> None:
    """Pages of one, with the same filter, end after the groups full long enough."""
    pages, token = [], ""
    for _ in range(5):
        page = aged.groups.ListFullGroups(
            full_for(minutes(1), sdk_app_id=APP, page_size=1, page_token=token)
        )
        pages.append([s.group_id for s in page.group_states])
        token = page.next_page_token
        if not token:
            break
    assert pages == [["ten-minutes"], ["two-minutes"]]


@pytest.mark.parametrize(
    "changed",
    [
        {"min_full_duration": minutes(2)},
        {"min_full_duration": duration_pb2.Duration()},
        {"sdk_app_id": 0},
        {"sdk_app_id": APP + 1},
    ],
    ids=["longer", "unset", "all-apps", "other-app"],
)
def test_page_token_needs_the_same_filter(aged: Server, changed: dict[str, object]) -> None:
    """A page token used with another min_full_duration or sdk_app_id is INVALID_PAGE_TOKEN."""
    token = aged.groups.ListFullGroups(
        full_for(minutes(1), sdk_app_id=APP, page_size=1)
    ).next_page_token
    assert token
    request = full_for(minutes(1), sdk_app_id=APP, page_size=1, page_token=token)
    for name, value in changed.items():
        if name == "min_full_duration":
            request.ClearField("min_full_duration")
            request.min_full_duration.CopyFrom(value)
        else:
            setattr(request, name, value)
    with pytest.raises(grpc.RpcError) as raised:
        aged.groups.ListFullGroups(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).reason == "ERROR_REASON_INVALID_PAGE_TOKEN"


@pytest.mark.parametrize(
    "duration",
    [
        duration_pb2.Duration(seconds=-1),
        duration_pb2.Duration(seconds=-60, nanos=-500_000_000),
        duration_pb2.Duration(nanos=-1000),
    ],
    ids=["-1s", "-60.5s", "-1us"],
)
def test_negative_min_full_duration_is_invalid_argument(
    serve: Serve, duration: duration_pb2.Duration
) -> None:
    """A negative min_full_duration is INVALID_ARGUMENT naming the field."""
    with pytest.raises(grpc.RpcError) as raised:
        serve().groups.ListFullGroups(full_for(duration))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(raised.value)
    assert (info.reason, info.metadata["field"]) == (
        "ERROR_REASON_INVALID_ARGUMENT",
        "min_full_duration",
    )


# Store failures


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("ClearGroupFull", clear("@TGS#a")),
        ("BatchGetGroupStates", pb.BatchGetGroupStatesRequest(groups=[ref("@TGS#a")])),
        ("CountGroupStates", pb.CountGroupStatesRequest()),
        ("CountGroupStates", pb.CountGroupStatesRequest(sdk_app_id=APP)),
        ("ListFullGroups", full_for(minutes(1))),
    ],
    ids=["clear", "batch-get", "count-all", "count-app", "list-min-duration"],
)
def test_store_unavailable_is_unavailable(serve: Serve, method: str, request_: object) -> None:
    """A store that is down makes the queries UNAVAILABLE with STORE_UNAVAILABLE."""
    server = serve(store=BrokenStore(StoreUnavailable("down")))
    with pytest.raises(grpc.RpcError) as raised:
        getattr(server.groups, method)(request_)
    assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.UNAVAILABLE, "down")
    assert error_info(raised.value).reason == "ERROR_REASON_STORE_UNAVAILABLE"
