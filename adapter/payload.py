"""Reading a Chat webhook body: UTF-8 JSON object, typed field access, Chat's quirks accepted.

Every field but CallbackCommand is optional: a missing or null field reads as absent, and
unknown fields are ignored. A field of the wrong type, or text a store cannot keep (too long,
NUL, a lone surrogate), is an error naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from adapter.answers import Failure, WebhookError
from chat_policy_shared.field_limits import (
    MAX_ACCOUNT_BYTES,
    MAX_ID_BYTES,
    MAX_NAME_BYTES,
    MAX_SHORT_TEXT_BYTES,
    text_problem,
)

# 10000-01-01T00:00:00Z: protobuf Timestamps end there.
MAX_EVENT_TIME_MS = 253_402_300_800_000

# The most bytes of UTF-8 each text field may hold; any other field: MAX_SHORT_TEXT_BYTES.
TEXT_LIMITS: Mapping[str, int] = {
    "GroupId": MAX_ID_BYTES,
    "TopicId": MAX_ID_BYTES,
    "Operator_Account": MAX_ACCOUNT_BYTES,
    "Owner_Account": MAX_ACCOUNT_BYTES,
    "Name": MAX_NAME_BYTES,
}


def parse_body(raw: bytes) -> Mapping[str, object]:
    """The body as a JSON object, whatever the Content-Type header said."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise WebhookError(Failure.MALFORMED_REQUEST, "body is not UTF-8") from None
    except (ValueError, RecursionError) as error:
        # JSONDecodeError, and also a number of over 4300 digits or nesting too deep to parse.
        raise WebhookError(Failure.MALFORMED_REQUEST, f"body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise WebhookError(Failure.MALFORMED_REQUEST, "body is not a JSON object")
    return document


def text(body: Mapping[str, object], field: str) -> str:
    """A string field within its limit (TEXT_LIMITS); empty when absent."""
    value = body.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _invalid(field, "must be a string")
    return checked_text(value, field, TEXT_LIMITS.get(field, MAX_SHORT_TEXT_BYTES))


def integer(body: Mapping[str, object], field: str) -> int | None:
    """A non-negative integer field, sent as a JSON number or a quoted one; None when absent.

    Chat documents numbers such as EventTime as integers, but its samples quote them.
    """
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise _invalid(field, "must be a whole number from 0 to 2**63-1")
    return value


def event_time_ms(body: Mapping[str, object]) -> int | None:
    """EventTime in Unix milliseconds (number or quoted number), before year 10000."""
    value = integer(body, "EventTime")
    if value is not None and value >= MAX_EVENT_TIME_MS:
        raise _invalid("EventTime", "must be Unix milliseconds before year 10000")
    return value


def member_accounts(body: Mapping[str, object], field: str = "MemberList") -> list[str]:
    """The Member_Account of every entry of a member list (entries without one are skipped)."""
    members = body.get(field)
    if members is None:
        return []
    if not isinstance(members, list):
        raise _invalid(field, "must be an array")
    accounts = []
    for index, member in enumerate(members):
        if not isinstance(member, dict):
            raise _invalid(f"{field}[{index}]", "must be an object")
        account = member.get("Member_Account")
        if account is not None and not isinstance(account, str):
            raise _invalid(f"{field}[{index}].Member_Account", "must be a string")
        if account:
            name = f"{field}[{index}].Member_Account"
            accounts.append(checked_text(account, name, MAX_ACCOUNT_BYTES))
    return accounts


def checked_text(value: str, field: str, max_bytes: int) -> str:
    """`value`, unless a store cannot keep it: over `max_bytes` of UTF-8, a NUL, or a lone
    surrogate (JSON allows "\ud800"; UTF-8 does not). Then an error naming `field`."""
    problem = text_problem(value, max_bytes)
    if problem is not None:
        raise _invalid(field, problem)
    return value


def _invalid(field: str, message: str) -> WebhookError:
    return WebhookError(Failure.INVALID_FIELD, f"{field} {message}")
