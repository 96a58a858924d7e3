"""AIP-158 page sizes and keyset page tokens for listing full groups and decisions."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import astuple, dataclass
from typing import Any

from policy_service.decision_log import DecisionCursor, DecisionQuery
from policy_service.errors import InvalidArgument, InvalidPageToken
from policy_service.group_state import GroupKey, GroupState

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_TOKEN_VERSION = 2


@dataclass(frozen=True)
class FullGroupsCursor:
    """Position after the last group of a page, in the list's order (full_since, key)."""

    full_since_ms: int
    key: GroupKey

    @classmethod
    def after(cls, state: GroupState) -> FullGroupsCursor:
        """The cursor that continues after `state`, a full group."""
        assert state.full_since_ms is not None, "only full groups are listed"
        return cls(state.full_since_ms, state.key)


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
    try:
        version, app_filter, duration_filter, full_since_ms, app, group, topic = _decode(token)
    except (ValueError, TypeError):
        raise InvalidPageToken("page_token is malformed") from None
    if version != _TOKEN_VERSION or not _all_types(
        (full_since_ms, int), (app, int), (group, str), (topic, str)
    ):
        raise InvalidPageToken("page_token is malformed")
    if app_filter != list_filter.sdk_app_id:
        raise InvalidPageToken("page_token was issued for a different sdk_app_id")
    if duration_filter != list_filter.min_full_duration_ms:
        raise InvalidPageToken("page_token was issued for a different min_full_duration")
    return FullGroupsCursor(full_since_ms, GroupKey(app, group, topic))


def _all_types(*pairs: tuple[object, type]) -> bool:
    """True when every value has exactly its type (bool is not accepted as int)."""
    return all(type(value) is kind for value, kind in pairs)


def encode_decisions_token(query: DecisionQuery, cursor: DecisionCursor) -> str:
    """An opaque token for the decisions after `cursor`, bound to the request's filters."""
    return _encode([_TOKEN_VERSION, _query_digest(query), cursor.decided_at_ms, cursor.decision_id])


def decode_decisions_token(token: str, query: DecisionQuery) -> DecisionCursor | None:
    """The cursor in `token` (None for the first page); InvalidPageToken if it is not ours."""
    if not token:
        return None
    try:
        version, digest, decided_at_ms, decision_id = _decode(token)
    except (ValueError, TypeError):
        raise InvalidPageToken("page_token is malformed") from None
    if version != _TOKEN_VERSION or not _all_types((decided_at_ms, int), (decision_id, str)):
        raise InvalidPageToken("page_token is malformed")
    if digest != _query_digest(query):
        raise InvalidPageToken("page_token was issued for different filters")
    return DecisionCursor(decided_at_ms, decision_id)


def _query_digest(query: DecisionQuery) -> str:
    return hashlib.sha256(json.dumps(astuple(query)).encode()).hexdigest()[:16]


def _encode(fields: list[object]) -> str:
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str) -> list[Any]:
    """The fields of a token; ValueError (binascii.Error and UnicodeDecodeError are ones)
    or TypeError when it is not one of ours."""
    fields = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    if not isinstance(fields, list):
        raise TypeError("a token holds a list")
    return fields
