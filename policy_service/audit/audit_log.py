"""The audit trail's records and what a store must do with them.

An audited change of group state is stored with its audit event in one transaction
(GroupStateStore.record's `audit`); an audited action that changed nothing (a refused call, a
reload) is appended on its own. Retention bounds the trail by age.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from policy_service.groups.state import GroupEvent, RecordOutcome


@dataclass(frozen=True)
class AuditEvent:
    """One audited action (the fields of chatpolicy.v1.AuditEvent)."""

    audit_id: str
    occurred_at_ms: int
    caller: str
    action: str
    sdk_app_id: int
    group_id: str
    topic_id: str
    reason: str
    result: str
    detail: str
    request_id: str
    replica: str


def with_outcome(audit: AuditEvent, event: GroupEvent, outcome: RecordOutcome) -> AuditEvent:
    """The audit event of a state change as it is stored with the change: its detail says
    whether the event applied and, if not, why (a store calls this inside the transaction
    that applied the event; the caller, with the outcome, to log the same event)."""
    if outcome.applied:
        detail = "applied"
    elif event.order <= outcome.state.last_event:
        detail = "not applied: the group's last event is not older"
    else:
        detail = "not applied: the group is not full"
    return replace(audit, detail=detail)


@dataclass(frozen=True)
class AuditQuery:
    """Which events to list; a filter left empty matches anything. The time bounds are
    inclusive, on occurred_at_ms."""

    caller: str = ""
    action: str = ""
    sdk_app_id: int = 0
    group_id: str = ""
    occurred_at_least_ms: int | None = None
    occurred_at_most_ms: int | None = None


@dataclass(frozen=True)
class AuditCursor:
    """Where a page of events ended: the last event's (occurred_at_ms, audit_id)."""

    occurred_at_ms: int
    audit_id: str


class AuditLog(Protocol):
    """The audit trail, newest first. Methods raise StoreUnavailable when the store fails,
    ValueNotStorable when it refuses a value of the call."""

    async def append_audit_events(self, events: Sequence[AuditEvent]) -> None:
        """Store the events in one transaction (an audit_id already stored is ignored)."""
        ...

    async def list_audit_events(
        self, query: AuditQuery, limit: int, after: AuditCursor | None
    ) -> list[AuditEvent]:
        """Up to `limit` events matching `query`, ordered by (occurred_at_ms, audit_id)
        descending, strictly after `after` in that order."""
        ...

    async def prune_audit_events(self, before_ms: int) -> int:
        """Delete events that occurred before before_ms; returns how many were deleted."""
        ...
