"""The group-state store interface and the factory that opens one from a database URL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from policy_service.errors import PolicyServiceError
from policy_service.group_state import GroupKey, GroupState
from policy_service.pagination import FullGroupsCursor


@dataclass(frozen=True)
class RecordOutcome:
    """The state after an event, and whether the event changed it."""

    state: GroupState
    applied: bool


class GroupStateStore(Protocol):
    """Durable group states. Every method raises StoreUnavailable when the store fails."""

    def record_full(self, key: GroupKey, event_time_ms: int) -> RecordOutcome:
        """Apply a group-full event atomically and durably before returning."""
        ...

    def get(self, key: GroupKey) -> GroupState | None:
        """The group's state, or None if no event was ever recorded for it."""
        ...

    def list_full(
        self, sdk_app_id: int, limit: int, after: FullGroupsCursor | None
    ) -> list[GroupState]:
        """Up to `limit` full groups after `after`, ordered by (full_since, key).

        sdk_app_id 0 lists every application's groups.
        """
        ...

    def close(self) -> None:
        """Release the store's connections."""
        ...


class UnsupportedDatabaseUrl(PolicyServiceError):
    """The database URL names a backend this build does not have."""


def open_store(database_url: str) -> GroupStateStore:
    """Open (creating and migrating as needed) the store a database URL names."""
    prefix = "sqlite:///"
    if database_url.startswith(prefix):
        from policy_service.sqlite_store import SQLiteGroupStateStore

        return SQLiteGroupStateStore(Path(database_url.removeprefix(prefix)))
    raise UnsupportedDatabaseUrl(
        f"unsupported database URL {database_url!r}: expected sqlite:///PATH"
    )
