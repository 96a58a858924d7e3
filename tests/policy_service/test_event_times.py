"""Event times the service refuses, through a real server on port 0 and the generated stubs:
too far ahead of its clock (CHAT_POLICY_MAX_EVENT_AHEAD_S), or no valid Timestamp at all."""

from __future__ import annotations

import re
import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from chatpolicy.v1 import creation_policy_service_pb2 as cpb
from chatpolicy.v1 import group_state_service_pb2 as pb
from tests.policy_service.servers import APP, Serve, error_info, full_event

YEAR_MS = 365 * 86_400_000

RECORD_REQUESTS = [
    pb.RecordGroupFullRequest,
    pb.RecordMemberExitRequest,
    pb.RecordGroupDestroyedRequest,
]


def clock_ms() -> int:
    """This machine's clock, the service's too, in Unix milliseconds."""
    return time.time_ns() // 1_000_000


def refusal(call: grpc.UnaryUnaryMultiCallable, request: object) -> tuple[str, str]:
    """The field named by the INVALID_ARGUMENT the call fails with, and its message."""
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return error_info(raised.value).metadata["field"], raised.value.details()


@pytest.mark.parametrize("request_type", RECORD_REQUESTS, ids=lambda t: t.__name__)
def test_an_event_a_year_ahead_is_refused_and_records_nothing(
    serve: Serve, request_type: type
) -> None:
    """Every Record* RPC refuses an event_time a year ahead, saying by how much and the
    limit's setting; the group stays unknown."""
    server = serve()
    request = request_type(sdk_app_id=APP, group_id="@TGS#future")
    request.event_time.FromMilliseconds(clock_ms() + YEAR_MS)
    method = getattr(server.groups, request_type.__name__.removesuffix("Request"))
    field, message = refusal(method, request)
    assert field == "event_time"
    assert re.fullmatch(
        r"event_time: is 315360\d\d s ahead of this service's clock"
        r" \(limit CHAT_POLICY_MAX_EVENT_AHEAD_S=300\)",
        message,
    ), message
    with pytest.raises(grpc.RpcError) as raised:
        server.groups.GetGroupState(
            pb.GetGroupStateRequest(sdk_app_id=APP, group_id="@TGS#future"), timeout=5
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_clear_a_year_ahead_is_refused_and_one_without_a_time_still_clears(
    serve: Serve,
) -> None:
    """ClearGroupFull with a clear_time a year ahead is refused naming clear_time; the group
    stays full, and a clear stamped now clears it."""
    server = serve()
    server.groups.RecordGroupFull(full_event("@TGS#g", clock_ms()), timeout=5)
    clear = pb.ClearGroupFullRequest(sdk_app_id=APP, group_id="@TGS#g", reason="room again")
    clear.clear_time.FromMilliseconds(clock_ms() + YEAR_MS)
    field, message = refusal(server.groups.ClearGroupFull, clear)
    assert field == "clear_time"
    assert "ahead of this service's clock (limit CHAT_POLICY_MAX_EVENT_AHEAD_S=300)" in message
    clear.ClearField("clear_time")
    cleared = server.groups.ClearGroupFull(clear, timeout=5)
    assert cleared.applied and not cleared.group_state.full


def test_the_limit_is_the_services_setting(serve: Serve) -> None:
    """With max_event_ahead_s 60, an event 30 s ahead is recorded and one 120 s ahead is
    refused, naming the limit."""
    server = serve(max_event_ahead_s=60.0)
    assert server.groups.RecordGroupFull(full_event("@TGS#a", clock_ms() + 30_000)).applied
    field, message = refusal(
        server.groups.RecordGroupFull, full_event("@TGS#b", clock_ms() + 120_000)
    )
    assert field == "event_time"
    assert message.endswith(
        "s ahead of this service's clock (limit CHAT_POLICY_MAX_EVENT_AHEAD_S=60)"
    )


def invalid_timestamp() -> Timestamp:
    """A Timestamp after the year 9999, which protobuf refuses to convert."""
    return Timestamp(seconds=2**40)


def test_timestamps_out_of_protobufs_range_are_invalid_argument(serve: Serve) -> None:
    """A Timestamp protobuf cannot convert is INVALID_ARGUMENT naming its field, on each RPC
    that reads one (it was INTERNAL)."""
    server = serve()
    record = pb.RecordGroupFullRequest(sdk_app_id=APP, group_id="@TGS#g")
    record.event_time.CopyFrom(invalid_timestamp())
    clear = pb.ClearGroupFullRequest(sdk_app_id=APP, group_id="@TGS#g", reason="room again")
    clear.clear_time.CopyFrom(invalid_timestamp())
    check = cpb.CheckGroupCreationRequest(sdk_app_id=APP)
    check.event_time.CopyFrom(invalid_timestamp())
    after = cpb.ListDecisionsRequest()
    after.decided_at_or_after.CopyFrom(invalid_timestamp())
    before = cpb.ListDecisionsRequest()
    before.decided_at_or_before.CopyFrom(invalid_timestamp())
    message = "is not a valid Timestamp (years 1 to 9999, nanos 0 to 999,999,999)"
    for call, request, field in [
        (server.groups.RecordGroupFull, record, "event_time"),
        (server.groups.ClearGroupFull, clear, "clear_time"),
        (server.creation.CheckGroupCreation, check, "event_time"),
        (server.creation.ListDecisions, after, "decided_at_or_after"),
        (server.creation.ListDecisions, before, "decided_at_or_before"),
    ]:
        assert refusal(call, request) == (field, f"{field}: {message}")
