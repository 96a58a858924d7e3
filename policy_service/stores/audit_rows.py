"""Audit events as database rows, and the list query, the same in both stores.

An audit row has AuditEvent's fields as columns, in its order (AUDIT_COLUMNS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

from policy_service.audit.audit_log import AuditCursor, AuditEvent, AuditQuery

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
    audit_event_app_time or audit_event_group_time. The cursor is a row comparison on the
    order's columns, so that it bounds the index scan instead of merely filtering.
    """
    p = placeholder
    where: list[str] = []
    params: list[object] = []
    for column, value in (
        ("caller", query.caller),
        ("action", query.action),
        ("sdk_app_id", query.sdk_app_id),
        ("group_id", query.group_id),
    ):
        if value:
            where.append(f"{column} = {p}")
            params.append(value)
    if query.occurred_at_least_ms is not None:
        where.append(f"occurred_at_ms >= {p}")
        params.append(query.occurred_at_least_ms)
    if query.occurred_at_most_ms is not None:
        where.append(f"occurred_at_ms <= {p}")
        params.append(query.occurred_at_most_ms)
    if after is not None:
        where.append(f"(occurred_at_ms, audit_id) < ({p}, {p})")
        params += [after.occurred_at_ms, after.audit_id]
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit_event"
    if where:
        sql += f" WHERE {' AND '.join(where)}"
    sql += f" ORDER BY occurred_at_ms DESC, audit_id DESC LIMIT {p}"
    return sql, [*params, limit]
