"""Group-state webhooks: what each command sends, and the spool when the service is away."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from adapter.group_state import replay_to
from adapter.spool import Rejected, RetryLater, SpooledEvent
from chatpolicy.v1 import group_state_service_pb2 as spb
from tests.adapter.chat import APP, Chat, FakePolicyClient, FakeRpcError, MakeChat, answer
from tests.chat_samples import OK

FULL = "Group.CallbackAfterGroupFull"
EXIT = "Group.CallbackAfterMemberExit"
DESTROYED = "Group.CallbackAfterGroupDestroyed"
JOIN = "Group.CallbackAfterNewMemberJoin"

EXIT_BODY = {
    "GroupId": "@TGS#a",
    "Type": "Public",
    "ExitType": "Kicked",
    "Operator_Account": "admin",
    "ExitMemberList": [{"Member_Account": "bob"}],
    "EventTime": "1670574414200",
}
DESTROYED_BODY = {
    "GroupId": "@TGS#a",
    "Type": "Community",
    "Owner_Account": "leckie",
    "Name": "MyFirstGroup",
    "MemberList": [{"Member_Account": "bob"}],
    "EventTime": 1670574414300,
}
JOIN_BODY = {
    "GroupId": "@TGS#a",
    "Type": "Public",
    "JoinType": "Apply",
    "Operator_Account": "bob",
    "NewMemberList": [{"Member_Account": "bob"}],
    "EventTime": 1670574414400,
}


def test_member_exit_becomes_record_member_exit(chat: Chat) -> None:
    """A member exit is sent as RecordMemberExit with the group and its EventTime."""
    assert chat.post(EXIT, EXIT_BODY).content == OK
    [(request, _)] = chat.fake.calls
    assert isinstance(request, spb.RecordMemberExitRequest)
    assert (request.sdk_app_id, request.group_id) == (APP, "@TGS#a")
    assert request.event_time.ToMilliseconds() == 1670574414200


def test_group_destroyed_becomes_record_group_destroyed(chat: Chat) -> None:
    """A destruction is sent as RecordGroupDestroyed with the group and its EventTime."""
    assert chat.post(DESTROYED, DESTROYED_BODY).content == OK
    [(request, _)] = chat.fake.calls
    assert isinstance(request, spb.RecordGroupDestroyedRequest)
    assert (request.group_id, request.event_time.ToMilliseconds()) == ("@TGS#a", 1670574414300)


def test_new_member_join_is_validated_and_acknowledged_unsent(chat: Chat) -> None:
    """A join records nothing (it may itself fill the group) but its fields are still checked."""
    assert chat.post(JOIN, JOIN_BODY).content == OK
    result = chat.post(JOIN, {**JOIN_BODY, "NewMemberList": "bob"})
    assert result.status_code == 400
    assert "NewMemberList" in str(answer(result)["ErrorInfo"])
    assert chat.fake.calls == []


@pytest.mark.parametrize(
    ("command", "body", "field"),
    [
        (EXIT, {**EXIT_BODY, "ExitMemberList": [1]}, "ExitMemberList[0]"),
        (EXIT, {**EXIT_BODY, "ExitType": 2}, "ExitType"),
        (DESTROYED, {**DESTROYED_BODY, "Owner_Account": ["x"]}, "Owner_Account"),
        (DESTROYED, {"EventTime": 1}, "GroupId"),
        (EXIT, {**EXIT_BODY, "EventTime": "soon"}, "EventTime"),
    ],
)
def test_bad_membership_fields_are_400_naming_them(
    chat: Chat, command: str, body: dict[str, object], field: str
) -> None:
    """A documented field of the wrong type, or no GroupId, is a 400 that reaches nothing."""
    result = chat.post(command, body)
    assert result.status_code == 400
    assert field in str(answer(result)["ErrorInfo"])
    assert chat.fake.calls == []


# The app's clock in these tests, and the millisecond the adapter received each webhook.
NOW_S = 1_700_000_000.7
RECEIVED_MS = 1_700_000_000_700


@pytest.mark.parametrize("command", [FULL, EXIT, DESTROYED, JOIN])
def test_event_time_up_to_the_limit_ahead_is_accepted(make_chat: MakeChat, command: str) -> None:
    """An EventTime exactly CHAT_POLICY_MAX_EVENT_AHEAD_S ahead of the arrival is accepted."""
    chat = make_chat(clock=lambda: NOW_S, max_event_ahead_s=300)
    result = chat.post(command, {"GroupId": "g", "EventTime": RECEIVED_MS + 300_000})
    assert (result.status_code, result.content) == (200, OK)
    assert len(chat.fake.calls) == (0 if command == JOIN else 1)


@pytest.mark.parametrize("command", [FULL, EXIT, DESTROYED, JOIN])
@pytest.mark.parametrize(("ahead_ms", "said"), [(300_001, "300.001 s"), (3_600_000, "3600 s")])
def test_event_time_further_ahead_is_400_and_never_spooled(
    make_chat: MakeChat, command: str, ahead_ms: int, said: str
) -> None:
    """An EventTime further ahead is 400 INVALID_FIELD saying how far ahead it is and the
    limit; even with the service away nothing is sent or spooled."""
    chat = make_chat(
        FakePolicyClient(error=FakeRpcError(grpc.StatusCode.UNAVAILABLE)),
        clock=lambda: NOW_S,
        max_event_ahead_s=300,
    )
    result = chat.post(command, {"GroupId": "g", "EventTime": str(RECEIVED_MS + ahead_ms)})
    assert (result.status_code, answer(result)["ErrorInfo"]) == (
        400,
        f"invalid webhook field: EventTime is {said} ahead of the adapter's clock; at most"
        " 300 s is accepted (CHAT_POLICY_MAX_EVENT_AHEAD_S)",
    )
    assert chat.fake.calls == []
    assert chat.spool.depth() == 0


def test_the_limit_ahead_is_the_configured_one(make_chat: MakeChat) -> None:
    """With CHAT_POLICY_MAX_EVENT_AHEAD_S at 3600 an event an hour ahead is recorded."""
    chat = make_chat(clock=lambda: NOW_S, max_event_ahead_s=3600)
    assert chat.post(FULL, {"GroupId": "g", "EventTime": RECEIVED_MS + 3_600_000}).content == OK
    result = chat.post(FULL, {"GroupId": "g", "EventTime": RECEIVED_MS + 3_600_001})
    assert "at most 3600 s" in str(answer(result)["ErrorInfo"])


def test_a_creation_in_the_future_is_still_decided(make_chat: MakeChat) -> None:
    """The limit ahead is for group state only: a creation's EventTime a day ahead is asked."""
    chat = make_chat(clock=lambda: NOW_S, max_event_ahead_s=300)
    result = chat.post("Group.CallbackBeforeCreateGroup", {"EventTime": RECEIVED_MS + 86_400_000})
    assert (result.status_code, result.content) == (200, OK)
    [(request, _)] = chat.fake.calls
    assert request.event_time.ToMilliseconds() == RECEIVED_MS + 86_400_000


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ],
)
def test_event_the_service_could_not_take_is_spooled_and_acknowledged(
    make_chat: MakeChat, code: grpc.StatusCode
) -> None:
    """A failed Record* call is spooled on disk with its request and request ID; Chat gets OK."""
    chat = make_chat(FakePolicyClient(error=FakeRpcError(code, "10.0.0.1 refused")))
    result = chat.post(FULL, {"GroupId": "g", "TopicId": "t"}, headers={"X-Request-ID": "r-1"})
    assert (result.status_code, result.content) == (200, OK)
    [(sent, _)] = chat.fake.calls
    [event] = chat.spool.oldest(10)
    assert (event.method, event.request_id) == ("RecordGroupFull", "r-1")
    assert spb.RecordGroupFullRequest.FromString(event.request) == sent


def test_event_without_time_is_spooled_with_its_arrival_time(make_chat: MakeChat) -> None:
    """The time an untimed event was received travels with it, so a replay is the same event."""
    chat = make_chat(FakePolicyClient(error=FakeRpcError(grpc.StatusCode.UNAVAILABLE)))
    chat.post(EXIT, {"GroupId": "g"})
    [(sent, _)] = chat.fake.calls
    [event] = chat.spool.oldest(10)
    assert spb.RecordMemberExitRequest.FromString(event.request).event_time == sent.event_time
    assert sent.event_time.ToMilliseconds() > 0


def test_full_spool_is_503_so_the_loss_is_visible(make_chat: MakeChat) -> None:
    """Once the spool holds its maximum, after-events get 503 FAIL; before-events still pass."""
    chat = make_chat(
        FakePolicyClient(error=FakeRpcError(grpc.StatusCode.UNAVAILABLE)), spool_max_events=2
    )
    assert [chat.post(FULL, {"GroupId": f"g{i}"}).status_code for i in range(3)] == [200, 200, 503]
    document = answer(chat.post(DESTROYED, {"GroupId": "g"}))
    assert (document["ActionStatus"], document["ErrorCode"]) == ("FAIL", 503)
    assert "spool is full" in str(document["ErrorInfo"])
    assert chat.spool.depth() == 2
    assert chat.post("Group.CallbackBeforeCreateGroup", {}).content == OK


def test_spool_that_fails_is_503(make_chat: MakeChat) -> None:
    """When the spool itself cannot be written the event is refused with 503, never dropped."""
    chat = make_chat(FakePolicyClient(error=FakeRpcError(grpc.StatusCode.UNAVAILABLE)))
    chat.spool.close()
    result = chat.post(FULL, {"GroupId": "g"})
    assert (result.status_code, answer(result)["ErrorCode"]) == (503, 503)
    assert "spool failed" in str(answer(result)["ErrorInfo"])


def spooled(request: spb.RecordGroupFullRequest | spb.RecordMemberExitRequest) -> SpooledEvent:
    """A spool entry holding `request`."""
    method = type(request).DESCRIPTOR.name.removesuffix("Request")
    return SpooledEvent(1, method, request.SerializeToString(), "r-1", 0, 0)


def test_replay_sends_the_spooled_request_again() -> None:
    """Replay rebuilds the exact request under its request ID and calls the service."""
    fake = FakePolicyClient()
    request = spb.RecordMemberExitRequest(sdk_app_id=APP, group_id="g")
    request.event_time.FromMilliseconds(5)
    asyncio.run(replay_to(fake)(spooled(request)))
    assert fake.calls == [(request, "r-1")]


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (grpc.StatusCode.UNAVAILABLE, RetryLater),
        (grpc.StatusCode.INTERNAL, RetryLater),
        (grpc.StatusCode.INVALID_ARGUMENT, Rejected),
    ],
)
def test_replay_failure_is_retried_unless_rejected(
    code: grpc.StatusCode, outcome: type[Exception]
) -> None:
    """A replay the service cannot take now is retried later; one it refuses is set aside."""
    deliver = replay_to(FakePolicyClient(error=FakeRpcError(code)))
    with pytest.raises(outcome, match=code.name):
        asyncio.run(deliver(spooled(spb.RecordGroupFullRequest(sdk_app_id=APP, group_id="g"))))


def test_replay_of_an_unknown_method_is_rejected() -> None:
    """A spool entry naming a method this adapter does not know is set aside, not retried."""
    event = SpooledEvent(1, "RecordSomethingElse", b"", "r-1", 0, 0)
    with pytest.raises(Rejected, match="RecordSomethingElse"):
        asyncio.run(replay_to(FakePolicyClient())(event))
