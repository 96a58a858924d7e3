"""The policy service's edge refuses text no store can keep (field_limits), naming the field,
before anything reaches the store: through a real server on port 0 and the generated stubs."""

from __future__ import annotations

import grpc
import pytest

from chatpolicy.v1 import creation_policy_service_pb2 as cpb
from chatpolicy.v1 import group_state_pb2
from chatpolicy.v1 import group_state_service_pb2 as pb
from tests.policy_service.servers import APP, Serve, error_info, full_event
from tests.postgres import PostgresSchema

# 86 characters of 3 bytes: 258 bytes of UTF-8, over a 256-byte limit.
CHINESE_258_BYTES = "群" * 86


def refused_field(call: grpc.UnaryUnaryMultiCallable, request: object) -> tuple[str, str]:
    """The field named by the INVALID_ARGUMENT the call fails with, and its message."""
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(raised.value)
    assert info.reason == "ERROR_REASON_INVALID_ARGUMENT"
    return info.metadata["field"], raised.value.details()


@pytest.mark.parametrize(
    ("group_id", "topic_id", "field", "message"),
    [
        ("a" * 257, "", "group_id", "group_id: must be at most 256 bytes of UTF-8 (it is 257)"),
        (
            CHINESE_258_BYTES,
            "",
            "group_id",
            "group_id: must be at most 256 bytes of UTF-8 (it is 258)",
        ),
        (
            "@TGS#_g",
            "t" * 257,
            "topic_id",
            "topic_id: must be at most 256 bytes of UTF-8 (it is 257)",
        ),
        ("@TGS#_g", "t\x00", "topic_id", "topic_id: must not contain NUL characters"),
    ],
    ids=["ascii", "chinese", "topic", "topic_nul"],
)
def test_an_id_too_long_or_with_nul_is_refused_by_every_group_rpc(
    serve: Serve, group_id: str, topic_id: str, field: str, message: str
) -> None:
    """Record, clear, get and batch-get refuse the ID as INVALID_ARGUMENT naming the field and
    its size in bytes, never echoing the ID; nothing is recorded."""
    server = serve()
    event = full_event(group_id, 1000)
    event.topic_id = topic_id
    clear = pb.ClearGroupFullRequest(
        sdk_app_id=APP, group_id=group_id, topic_id=topic_id, reason="room again"
    )
    get = pb.GetGroupStateRequest(sdk_app_id=APP, group_id=group_id, topic_id=topic_id)
    assert refused_field(server.groups.RecordGroupFull, event) == (field, message)
    assert refused_field(server.groups.ClearGroupFull, clear) == (field, message)
    assert refused_field(server.groups.GetGroupState, get) == (field, message)
    batch = pb.BatchGetGroupStatesRequest(
        groups=[
            group_state_pb2.GroupRef(sdk_app_id=APP, group_id="@TGS#ok"),
            group_state_pb2.GroupRef(sdk_app_id=APP, group_id=group_id, topic_id=topic_id),
        ]
    )
    assert refused_field(server.groups.BatchGetGroupStates, batch) == (
        f"groups[1].{field}",
        f"groups[1].{message}",
    )
    assert server.groups.CountGroupStates(pb.CountGroupStatesRequest()).tracked_count == 0


def test_ids_of_exactly_256_bytes_are_kept(serve: Serve) -> None:
    """A group and topic ID of 256 bytes each (here 85 Chinese characters and a letter) are
    recorded and read back."""
    server = serve()
    group_id = "群" * 85 + "g"
    event = full_event(group_id, 1000)
    event.topic_id = "话" * 85 + "t"
    recorded = server.groups.RecordGroupFull(event, timeout=5)
    assert (recorded.group_state.group_id, recorded.group_state.topic_id) == (
        group_id,
        event.topic_id,
    )


def test_a_10kb_group_id_is_invalid_argument_on_postgresql_not_unavailable(
    serve: Serve, postgres_schema: PostgresSchema
) -> None:
    """With PostgreSQL, whose index refuses a 10 KB row, RecordGroupFull of a 10 KB group ID
    is INVALID_ARGUMENT naming group_id (it was UNAVAILABLE, which the adapter retries
    forever), and the service goes on recording."""
    server = serve(store=postgres_schema.url)
    field, message = refused_field(server.groups.RecordGroupFull, full_event("g" * 10_240, 1000))
    assert (field, message) == (
        "group_id",
        "group_id: must be at most 256 bytes of UTF-8 (it is 10240)",
    )
    assert server.groups.RecordGroupFull(full_event("@TGS#ok", 1000), timeout=5).applied


def test_a_clear_reason_with_nul_is_refused(serve: Serve) -> None:
    """ClearGroupFull with NUL in its reason is INVALID_ARGUMENT naming reason."""
    server = serve()
    server.groups.RecordGroupFull(full_event("@TGS#g", 1000), timeout=5)
    clear = pb.ClearGroupFullRequest(sdk_app_id=APP, group_id="@TGS#g", reason="raised\x00")
    assert refused_field(server.groups.ClearGroupFull, clear) == (
        "reason",
        "reason: must not contain NUL characters",
    )


CREATION_FIELDS = [
    ("operator_account", {"operator_account": "a" * 257}, 256),
    ("owner_account", {"owner_account": CHINESE_258_BYTES}, 256),
    ("member_accounts[1]", {"member_accounts": ["bob", "m" * 257]}, 256),
    ("name", {"name": "n" * 1025}, 1024),
    ("group_type", {"group_type": "P" * 257}, 256),
    ("client_ip", {"client_ip": "1" * 257}, 256),
    ("opt_platform", {"opt_platform": "W" * 257}, 256),
]


@pytest.mark.parametrize(
    ("field", "fields", "limit"), CREATION_FIELDS, ids=[row[0] for row in CREATION_FIELDS]
)
def test_a_creation_check_with_an_over_long_field_is_refused(
    serve: Serve, field: str, fields: dict[str, object], limit: int
) -> None:
    """CheckGroupCreation refuses each text field over its limit in bytes, naming it; a field
    at its limit passes."""
    server = serve()
    request = cpb.CheckGroupCreationRequest(sdk_app_id=APP, **fields)
    named, message = refused_field(server.creation.CheckGroupCreation, request)
    assert named == field
    assert message.startswith(f"{field}: must be at most {limit} bytes of UTF-8 (it is ")
    at_limit = {
        name: ["x" * limit] if name == "member_accounts" else "x" * limit for name in fields
    }
    at_limit_request = cpb.CheckGroupCreationRequest(sdk_app_id=APP, **at_limit)
    assert server.creation.CheckGroupCreation(at_limit_request, timeout=5).decision_id


@pytest.mark.parametrize(
    ("request_", "field", "message"),
    [
        (
            cpb.CheckGroupCreationRequest(sdk_app_id=APP, name="Book\x00club"),
            "name",
            "name: must not contain NUL characters",
        ),
        (
            cpb.CheckGroupCreationRequest(sdk_app_id=2**63),
            "sdk_app_id",
            "sdk_app_id: is required and must be below 2**63",
        ),
    ],
    ids=["nul", "sdk_app_id"],
)
def test_a_creation_check_with_nul_or_an_app_beyond_64_bits_is_refused(
    serve: Serve, request_: cpb.CheckGroupCreationRequest, field: str, message: str
) -> None:
    """NUL in any text field, or an sdk_app_id no store can keep, is INVALID_ARGUMENT."""
    assert refused_field(serve().creation.CheckGroupCreation, request_) == (field, message)
