"""Audit events as database rows, and the list query, the same in both stores.

An audit row has AuditEvent's fields as columns, in its order (AUDIT_COLUMNS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

from policy_service.audit.audit_log import AuditCursor, AuditEvent, AuditQuery
from policy_service.stores.newest_first import newest_first_page

AUDIT_COLUMNS = (
    "audit_id, occurred_at_ms, caller, action, sdk_app_id, group_id, topic_id, reason, result,"
    " detail, request_id, replica"
)


def row_from_audit(event: AuditEvent) -> tuple[Any, ...]:
    """The event's columns."""
    return astuple(event)


def audit_from_row(row: Sequence[Any]) -> AuditEvent:
    """The event an audit row holds."""
    return AuditEvent(*row)


def insert_audit_event(placeholder: str) -> str:
    """The statement inserting one audit row, skipping an audit_id already stored."""
    values = ", ".join([placeholder] * 12)
    return (
        f"INSERT INTO audit_event ({AUDIT_COLUMNS}) VALUES ({values})"
        " ON CONFLICT (audit_id) DO NOTHING"
    )


def list_audit_query(
    query: AuditQuery, limit: int, after: AuditCursor | None, placeholder: str
) -> tuple[str, list[object]]:
    """The SQL and parameters of one page of list_audit_events, newest first.

    The order (occurred_at_ms, audit_id) descending is the index audit_event_time, read
    backwards; with caller, action, sdk_app_id or group_id set, that column is an equality
    followed by the same order: audit_event_caller_time, audit_event_action_time,
    audit_event_app_time or audit_event_group_time.
    """
    return newest_first_page(
        "audit_event",
        AUDIT_COLUMNS,
        ("occurred_at_ms", "audit_id"),
        (
            ("caller", query.caller),
            ("action", query.action),
            ("sdk_app_id", query.sdk_app_id),
            ("group_id", query.group_id),
        ),
        query.occurred_at_least_ms,
        query.occurred_at_most_ms,
        None if after is None else (after.occurred_at_ms, after.audit_id),
        limit,
        placeholder,
    )
