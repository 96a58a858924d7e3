"""AIP-158 page sizes and keyset page tokens for listing full groups, decisions and audit
events."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import astuple, dataclass
from typing import Any

from chat_policy_shared.field_limits import text_problem
from policy_service.audit.audit_log import AuditCursor, AuditQuery
from policy_service.engine.decision_log import DecisionCursor, DecisionQuery
from policy_service.errors import InvalidArgument, InvalidPageToken
from policy_service.groups.state import GroupKey
from policy_service.groups.store import FullGroupsCursor

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Tokens this service issues are far shorter: two IDs of at most MAX_ID_BYTES, JSON-escaped,
# and a few numbers, in base64.
MAX_PAGE_TOKEN_CHARS = 16_384
_TOKEN_VERSION = 2
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def page_size_from_request(page_size: int) -> int:
    """Apply AIP-158 defaults: 0 means the default, too large is capped, negative is refused."""
    if page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


@dataclass(frozen=True)
class FullGroupsFilter:
    """Which full groups a list request asks for; a page token is valid for one filter."""

    sdk_app_id: int = 0
    min_full_duration_ms: int = 0


def encode_page_token(list_filter: FullGroupsFilter, cursor: FullGroupsCursor) -> str:
    """An opaque token for the page after `cursor`, bound to the request's filter."""
    key = cursor.key
    fields = [
        _TOKEN_VERSION,
        list_filter.sdk_app_id,
        list_filter.min_full_duration_ms,
        cursor.full_since_ms,
        key.sdk_app_id,
        key.group_id,
        key.topic_id,
    ]
    return _encode(fields)


def decode_page_token(token: str, list_filter: FullGroupsFilter) -> FullGroupsCursor | None:
    """The cursor in `token` (None for the first page); InvalidPageToken if it is not ours."""
    if not token:
        return None
    _, app_filter, duration_filter, full_since_ms, app, group, topic = _decode(
        token, (int, int, int, int, str, str)
    )
    if app_filter != list_filter.sdk_app_id:
        raise InvalidPageToken("page_token was issued for a different sdk_app_id")
    if duration_filter != list_filter.min_full_duration_ms:
        raise InvalidPageToken("page_token was issued for a different min_full_duration")
    return FullGroupsCursor(full_since_ms, GroupKey(app, group, topic))


def encode_decisions_token(query: DecisionQuery, cursor: DecisionCursor) -> str:
    """An opaque token for the decisions after `cursor`, bound to the request's filters."""
    return _encode([_TOKEN_VERSION, _query_digest(query), cursor.decided_at_ms, cursor.decision_id])


def decode_decisions_token(token: str, query: DecisionQuery) -> DecisionCursor | None:
    """The cursor in `token` (None for the first page); InvalidPageToken if it is not ours."""
    if not token:
        return None
    _, digest, decided_at_ms, decision_id = _decode(token, (str, int, str))
    if digest != _query_digest(query):
        raise InvalidPageToken("page_token was issued for different filters")
    return DecisionCursor(decided_at_ms, decision_id)


def encode_audit_token(query: AuditQuery, cursor: AuditCursor) -> str:
    """An opaque token for the audit events after `cursor`, bound to the request's filters."""
    return _encode([_TOKEN_VERSION, _query_digest(query), cursor.occurred_at_ms, cursor.audit_id])


def decode_audit_token(token: str, query: AuditQuery) -> AuditCursor | None:
    """The cursor in `token` (None for the first page); InvalidPageToken if it is not ours."""
    if not token:
        return None
    _, digest, occurred_at_ms, audit_id = _decode(token, (str, int, str))
    if digest != _query_digest(query):
        raise InvalidPageToken("page_token was issued for different filters")
    return AuditCursor(occurred_at_ms, audit_id)


def _query_digest(query: DecisionQuery | AuditQuery) -> str:
    return hashlib.sha256(json.dumps(astuple(query)).encode()).hexdigest()[:16]


def _encode(fields: list[object]) -> str:
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str, kinds: tuple[type, ...]) -> list[Any]:
    """The fields of a token of this version: the version, then one field of each of `kinds`
    (bool is not an int); InvalidPageToken unless it is exactly that.

    Bounded whatever the caller sends: the token's length is checked before anything is
    decoded, the JSON array is read one scalar at a time (an array or object inside it is
    refused before it is parsed, so nothing recurses), every int must fit 64 bits and every
    string be text that each store can compare (no NUL, valid Unicode).
    """
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise InvalidPageToken(
            f"page_token is longer than any this service issues ({MAX_PAGE_TOKEN_CHARS} characters)"
        )
    malformed = InvalidPageToken("page_token is malformed")
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        fields = _flat_json_array(text)
    except ValueError:  # binascii.Error, UnicodeDecodeError and JSONDecodeError are ones
        raise malformed from None
    if len(fields) != len(kinds) + 1:
        raise malformed
    for value, kind in zip(fields, (int, *kinds), strict=True):
        if type(value) is not kind:
            raise malformed
        if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
            raise malformed
        if isinstance(value, str) and text_problem(value, MAX_PAGE_TOKEN_CHARS) is not None:
            raise malformed
    if fields[0] != _TOKEN_VERSION:
        raise malformed
    return fields


def _flat_json_array(text: str) -> list[object]:
    """The values of a JSON array of scalars, without whitespace (as _encode writes it);
    ValueError for anything else."""
    if not text.startswith("["):
        raise ValueError("a token holds an array")
    decoder = json.JSONDecoder()
    values: list[object] = []
    position = 1
    while True:
        if text[position : position + 1] in ("[", "{"):
            raise ValueError("a token's array holds no arrays or objects")
        value, position = decoder.raw_decode(text, position)
        values.append(value)
        separator = text[position : position + 1]
        position += 1
        if separator == "]" and position == len(text):
            return values
        if separator != ",":
            raise ValueError("a token's array ends at its end")
