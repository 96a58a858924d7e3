"""The group-state store interface and the factory that opens one from a database URL."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from policy_service.errors import PolicyServiceError
from policy_service.group_state import GroupEvent, GroupKey, GroupState, RecordOutcome
from policy_service.pagination import FullGroupsCursor


class GroupStateStore(Protocol):
    """Durable group states. Every method raises StoreUnavailable when the store fails."""

    def record(self, event: GroupEvent) -> RecordOutcome:
        """Apply an event atomically and durably before returning.

        A whole-group event (member exit, destruction) applies to the group and to every
        topic of it; the outcome's state is the one of the event's own key.
        """
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
    """Open (creating and migrating as needed) the store a database URL names.

    `sqlite:///PATH` is the embedded SQLite file (one service process); `postgresql://...` or
    `postgres://...` (any libpq URL) is PostgreSQL, which several replicas may share.
    """
    prefix = "sqlite:///"
    if database_url.startswith(prefix):
        from policy_service.sqlite_store import SQLiteGroupStateStore

        return SQLiteGroupStateStore(Path(database_url.removeprefix(prefix)))
    if database_url.startswith(("postgresql://", "postgres://")):
        from policy_service.postgres_store import PostgresGroupStateStore

        return PostgresGroupStateStore(database_url)
    raise UnsupportedDatabaseUrl(
        f"unsupported database URL {redacted_url(database_url)!r}:"
        " expected sqlite:///PATH or postgresql://[USER@]HOST[:PORT]/DATABASE"
    )


def redacted_url(url: str) -> str:
    """The URL with the password of its user info, if any, replaced by ***."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    user_info, at, host = authority.rpartition("@")
    if not sep or not at or ":" not in user_info:
        return url
    user = user_info.partition(":")[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"
