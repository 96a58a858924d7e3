"""Field limits at the edge: text a store cannot keep is a 400 naming the field, before the
policy service is called or anything is spooled."""

from __future__ import annotations

from collections.abc import Callable

import falcon.testing
import grpc
import pytest

from adapter.group_creation import COMMAND as BEFORE
from adapter.group_state import GROUP_DESTROYED, GROUP_FULL, MEMBER_EXIT, NEW_MEMBER_JOIN
from chat_policy_shared.field_limits import (
    MAX_ACCOUNT_BYTES,
    MAX_ID_BYTES,
    MAX_NAME_BYTES,
    MAX_SHORT_TEXT_BYTES,
)
from tests.adapter.chat import Chat, FakePolicyClient, FakeRpcError, MakeChat, answer
from tests.chat_samples import OK

Body = Callable[[str], dict[str, object]]


def members(field: str) -> Body:
    """A body whose member list `field` has the value as its second Member_Account."""
    return lambda value: {
        "GroupId": "g",
        field: [{"Member_Account": "bob"}, {"Member_Account": value}],
    }


# (the field as ErrorInfo names it, the command, the body holding the value, the limit)
FIELDS: list[tuple[str, str, Body, int]] = [
    ("GroupId", GROUP_FULL, lambda value: {"GroupId": value}, MAX_ID_BYTES),
    ("TopicId", GROUP_FULL, lambda value: {"GroupId": "g", "TopicId": value}, MAX_ID_BYTES),
    ("Operator_Account", BEFORE, lambda value: {"Operator_Account": value}, MAX_ACCOUNT_BYTES),
    (
        "Operator_Account",
        MEMBER_EXIT,
        lambda value: {"GroupId": "g", "Operator_Account": value},
        MAX_ACCOUNT_BYTES,
    ),
    (
        "Owner_Account",
        GROUP_DESTROYED,
        lambda value: {"GroupId": "g", "Owner_Account": value},
        MAX_ACCOUNT_BYTES,
    ),
    ("MemberList[1].Member_Account", BEFORE, members("MemberList"), MAX_ACCOUNT_BYTES),
    (
        "ExitMemberList[1].Member_Account",
        MEMBER_EXIT,
        members("ExitMemberList"),
        MAX_ACCOUNT_BYTES,
    ),
    (
        "NewMemberList[1].Member_Account",
        NEW_MEMBER_JOIN,
        members("NewMemberList"),
        MAX_ACCOUNT_BYTES,
    ),
    ("Name", BEFORE, lambda value: {"Name": value}, MAX_NAME_BYTES),
    ("Name", GROUP_DESTROYED, lambda value: {"GroupId": "g", "Name": value}, MAX_NAME_BYTES),
    ("Type", BEFORE, lambda value: {"Type": value}, MAX_SHORT_TEXT_BYTES),
    (
        "ExitType",
        MEMBER_EXIT,
        lambda value: {"GroupId": "g", "ExitType": value},
        MAX_SHORT_TEXT_BYTES,
    ),
    (
        "JoinType",
        NEW_MEMBER_JOIN,
        lambda value: {"GroupId": "g", "JoinType": value},
        MAX_SHORT_TEXT_BYTES,
    ),
]
IDS = [f"{command.split('Callback')[1]}-{field}" for field, command, _, _ in FIELDS]


def refused(chat: Chat, result: falcon.testing.Result, message: str) -> None:
    """The answer is 400 INVALID_FIELD with exactly `message`, and nothing was spooled."""
    assert result.status_code == 400
    document = answer(result)
    assert (document["ActionStatus"], document["ErrorCode"]) == ("FAIL", 400)
    assert document["ErrorInfo"] == f"invalid webhook field: {message}"
    assert chat.spool.depth() == 0


@pytest.mark.parametrize(("field", "command", "body", "limit"), FIELDS, ids=IDS)
def test_text_at_its_limit_is_accepted(
    chat: Chat, field: str, command: str, body: Body, limit: int
) -> None:
    """A field of exactly its limit in bytes is answered OK and the event goes on to the
    service (a join is checked, never sent)."""
    result = chat.post(command, body("a" * limit))
    assert (result.status_code, result.content) == (200, OK)
    assert len(chat.fake.calls) == (0 if command == NEW_MEMBER_JOIN else 1)


@pytest.mark.parametrize(("field", "command", "body", "limit"), FIELDS, ids=IDS)
def test_text_one_byte_over_its_limit_is_400_naming_it(
    make_chat: MakeChat, field: str, command: str, body: Body, limit: int
) -> None:
    """One byte over the limit is 400 INVALID_FIELD naming the field and both sizes, even with
    the policy service away: nothing is called and nothing spooled."""
    chat = make_chat(FakePolicyClient(error=FakeRpcError(grpc.StatusCode.UNAVAILABLE)))
    result = chat.post(command, body("a" * (limit + 1)))
    refused(chat, result, f"{field} must be at most {limit} bytes of UTF-8 (it is {limit + 1})")
    assert chat.fake.calls == []


@pytest.mark.parametrize(("field", "command", "body", "limit"), FIELDS, ids=IDS)
def test_text_with_a_nul_is_400_naming_it(
    make_chat: MakeChat, field: str, command: str, body: Body, limit: int
) -> None:
    """A NUL character anywhere in a text field is 400 INVALID_FIELD naming the field."""
    chat = make_chat(FakePolicyClient(error=FakeRpcError(grpc.StatusCode.UNAVAILABLE)))
    result = chat.post(command, body("a\x00b"))
    refused(chat, result, f"{field} must not contain NUL characters")
    assert chat.fake.calls == []


def test_limits_count_bytes_of_utf8_not_characters(chat: Chat) -> None:
    """A Name of 341 three-byte characters (1023 bytes) passes; 342 (1026 bytes) does not."""
    assert chat.post(BEFORE, {"Name": "名" * 341}).content == OK
    result = chat.post(BEFORE, {"Name": "名" * 342})
    refused(chat, result, "Name must be at most 1024 bytes of UTF-8 (it is 1026)")
    assert len(chat.fake.calls) == 1


@pytest.mark.parametrize("parameter", ["ClientIP", "OptPlatform"])
def test_query_parameters_passed_on_are_held_to_the_short_text_limit(
    chat: Chat, parameter: str
) -> None:
    """ClientIP and OptPlatform of 256 bytes are passed on; 257 bytes, or a NUL, is 400 naming
    the parameter, unsent."""
    value = "a" * MAX_SHORT_TEXT_BYTES
    assert chat.post(BEFORE, {}, **{parameter: value}).content == OK
    [(request, _)] = chat.fake.calls
    assert value in (request.client_ip, request.opt_platform)

    result = chat.post(BEFORE, {}, **{parameter: value + "a"})
    refused(chat, result, f"{parameter} must be at most 256 bytes of UTF-8 (it is 257)")
    result = chat.post(BEFORE, {}, **{parameter: "a\x00b"})
    refused(chat, result, f"{parameter} must not contain NUL characters")
    assert len(chat.fake.calls) == 1
