"""What the group-state domain needs of a store: durable states, their change log, and the
position a page of full groups continues from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from policy_service.audit.audit_log import AuditEvent
from policy_service.groups.change_log import ChangeLogBounds, PruneOutcome, StateChange
from policy_service.groups.state import (
    GroupCounts,
    GroupEvent,
    GroupKey,
    GroupState,
    RecordOutcome,
)


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


class GroupStateStore(Protocol):
    """Durable group states and their change log.

    Every method is a coroutine, awaited on the event loop the store was opened in; none
    blocks that loop for longer than a read of a few rows (durable writes wait off it). Every
    method raises StoreUnavailable when the store fails, and ValueNotStorable when it refuses a
    value of the call (too large, out of range, text it cannot hold), writing nothing. Calls
    may overlap, except wait_for_changes, which one task awaits at a time.
    """

    async def record(self, event: GroupEvent, audit: AuditEvent | None = None) -> RecordOutcome:
        """Apply an event atomically and durably before returning.

        With `audit`, the audit event with_outcome(audit, event, outcome) is stored in the
        same transaction, whether the event changed anything or not: when the record fails
        (GroupNotFound, ValueNotStorable, StoreUnavailable; or the audit event cannot be
        stored), neither is kept.

        A whole-group event (member exit, destruction) applies to the group and to every
        topic of it; the outcome's state is the one of the event's own key. Each changed
        state is appended to the change log in the same transaction, stamped now_ms().
        Sequences are committed in increasing order: once a reader sees sequence n, no
        change with a smaller sequence can appear later. A clear of a key without a state
        raises GroupNotFound.
        """
        ...

    async def get(self, key: GroupKey) -> GroupState | None:
        """The group's state, or None if no event was ever recorded for it (or it was forgotten)."""
        ...

    async def get_many(self, keys: Sequence[GroupKey]) -> dict[GroupKey, GroupState]:
        """The states of those of `keys` that have one, in one round trip."""
        ...

    async def list_full(
        self,
        sdk_app_id: int,
        limit: int,
        after: FullGroupsCursor | None,
        full_since_at_most_ms: int | None = None,
    ) -> list[GroupState]:
        """Up to `limit` full groups after `after`, ordered by (full_since, key).

        sdk_app_id 0 lists every application's groups; full_since_at_most_ms, when given,
        keeps only groups with full_since_ms <= it.
        """
        ...

    async def count(self, sdk_app_id: int) -> GroupCounts:
        """How many states there are (sdk_app_id 0: of every application)."""
        ...

    async def changes_after(self, sequence: int, limit: int) -> list[StateChange]:
        """Up to `limit` logged changes with a sequence above `sequence`, oldest first."""
        ...

    async def change_log_bounds(self) -> ChangeLogBounds:
        """Which sequences the change log can replay."""
        ...

    async def prune(self, destroyed_before_ms: int, changes_before_ms: int) -> PruneOutcome:
        """Apply retention.

        Forget destroyed states whose last event is before destroyed_before_ms (logging a
        forgotten change for each), and delete logged changes stamped before
        changes_before_ms. Safe to run from several replicas at once.
        """
        ...

    async def wait_for_changes(self, timeout_s: float) -> None:
        """Wait until a change may have been committed since the previous call returned, by
        this process or another replica sharing the database, or until timeout_s passes.

        The first call starts listening and returns at once when timeout_s is 0; a commit
        made after it is never missed. Spurious wake-ups are allowed.
        """
        ...

    async def ping(self) -> None:
        """Return when the store answers; StoreUnavailable otherwise."""
        ...

    async def close(self) -> None:
        """Release the store's connections and wake wait_for_changes."""
        ...
