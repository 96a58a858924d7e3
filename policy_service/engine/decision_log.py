"""The record of recent creation decisions: what ListDecisions answers from.

Each decision the service makes is appended (in batches, off the request path) with the
request it answered, so that an operator can find out why a group was refused. Retention
bounds the record by age.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class DecisionRecord:
    """One decision as recorded; request_json is the CreationRequest as a JSON object."""

    decision_id: str
    decided_at_ms: int
    sdk_app_id: int
    operator_account: str
    effect: str
    error_code: int
    error_info: str
    rule_id: str
    reason: str
    policy_revision: str
    shadow_rule_ids: tuple[str, ...]
    latency_us: int
    request_json: str
    caller: str = ""
    """Who asked, as the access file names it (policy_service.access.caller)."""


@dataclass(frozen=True)
class DecisionQuery:
    """Which decisions to list; a filter left empty matches anything.

    decided_at_least_ms and decided_at_most_ms are inclusive bounds on decided_at_ms.
    """

    sdk_app_id: int = 0
    operator_account: str = ""
    effect: str = ""
    rule_id: str = ""
    decision_id: str = ""
    decided_at_least_ms: int | None = None
    decided_at_most_ms: int | None = None
    caller: str = ""


@dataclass(frozen=True)
class DecisionCursor:
    """Where a page of decisions ended: the last record's (decided_at_ms, decision_id)."""

    decided_at_ms: int
    decision_id: str


class DecisionLog(Protocol):
    """Recent decisions, newest first. Methods raise StoreUnavailable when the store fails,
    ValueNotStorable when it refuses a value of the call."""

    async def append_decisions(self, records: Sequence[DecisionRecord]) -> None:
        """Store the records in one transaction (a decision_id already stored is ignored)."""
        ...

    async def list_decisions(
        self, query: DecisionQuery, limit: int, after: DecisionCursor | None
    ) -> list[DecisionRecord]:
        """Up to `limit` records matching `query`, ordered by (decided_at_ms, decision_id)
        descending, strictly after `after` in that order."""
        ...

    async def prune_decisions(self, before_ms: int) -> int:
        """Delete records decided before before_ms; returns how many were deleted."""
        ...
