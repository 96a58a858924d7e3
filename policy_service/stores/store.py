"""The store interfaces and the factory that opens a store from a database URL."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from policy_service.api.page_tokens import FullGroupsCursor
from policy_service.engine.decision_log import DecisionLog
from policy_service.engine.rate_limit import RateCounter
from policy_service.errors import PolicyServiceError
from policy_service.groups.change_log import ChangeLogBounds, PruneOutcome, StateChange
from policy_service.groups.state import (
    GroupCounts,
    GroupEvent,
    GroupKey,
    GroupState,
    RecordOutcome,
)

# A database URL that starts so names an SQLite file by the path after it.
SQLITE_PREFIX = "sqlite:///"


class GroupStateStore(Protocol):
    """Durable group states and their change log.

    Every method raises StoreUnavailable when the store fails, and ValueNotStorable when it
    refuses a value of the call (too large, out of range, text it cannot hold), writing
    nothing. Methods may be called from many threads at once, except wait_for_changes, which
    one thread calls at a time.
    """

    def record(self, event: GroupEvent) -> RecordOutcome:
        """Apply an event atomically and durably before returning.

        A whole-group event (member exit, destruction) applies to the group and to every
        topic of it; the outcome's state is the one of the event's own key. Each changed
        state is appended to the change log in the same transaction, stamped now_ms().
        Sequences are committed in increasing order: once a reader sees sequence n, no
        change with a smaller sequence can appear later. A clear of a key without a state
        raises GroupNotFound.
        """
        ...

    def get(self, key: GroupKey) -> GroupState | None:
        """The group's state, or None if no event was ever recorded for it (or it was forgotten)."""
        ...

    def get_many(self, keys: Sequence[GroupKey]) -> dict[GroupKey, GroupState]:
        """The states of those of `keys` that have one, in one round trip."""
        ...

    def list_full(
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

    def count(self, sdk_app_id: int) -> GroupCounts:
        """How many states there are (sdk_app_id 0: of every application)."""
        ...

    def changes_after(self, sequence: int, limit: int) -> list[StateChange]:
        """Up to `limit` logged changes with a sequence above `sequence`, oldest first."""
        ...

    def change_log_bounds(self) -> ChangeLogBounds:
        """Which sequences the change log can replay."""
        ...

    def prune(self, destroyed_before_ms: int, changes_before_ms: int) -> PruneOutcome:
        """Apply retention.

        Forget destroyed states whose last event is before destroyed_before_ms (logging a
        forgotten change for each), and delete logged changes stamped before
        changes_before_ms. Safe to run from several replicas at once.
        """
        ...

    def wait_for_changes(self, timeout_s: float) -> None:
        """Block until a change may have been committed since the previous call returned, by
        this process or another replica sharing the database, or until timeout_s passes.

        The first call starts listening and returns at once when timeout_s is 0; a commit
        made after it is never missed. Spurious wake-ups are allowed.
        """
        ...

    def ping(self) -> None:
        """Return when the store answers; StoreUnavailable otherwise."""
        ...

    def close(self) -> None:
        """Release the store's connections and wake wait_for_changes."""
        ...


class Store(GroupStateStore, RateCounter, DecisionLog, Protocol):
    """A whole store, as open_store returns it: group states and their change log, the
    rate-limit slots and the decision log, in one database.

    Both stores (SQLite, PostgreSQL) implement all three interfaces; code that needs only one
    part takes that part's interface. Slots and decisions are not part of the change log.
    """


def now_ms() -> int:
    """The service's clock in Unix milliseconds: change times and retention cutoffs."""
    return time.time_ns() // 1_000_000


class UnsupportedDatabaseUrl(PolicyServiceError):
    """The database URL names a backend this build does not have."""


def open_store(database_url: str) -> Store:
    """Open (creating and migrating as needed) the store a database URL names.

    `sqlite:///PATH` is the embedded SQLite file (one service process); `postgresql://...` or
    `postgres://...` (any libpq URL) is PostgreSQL, which several replicas may share.
    """
    sqlite_file = sqlite_path(database_url)
    if sqlite_file is not None:
        from policy_service.stores.sqlite_store import SQLiteGroupStateStore

        return SQLiteGroupStateStore(sqlite_file)
    if database_url.startswith(("postgresql://", "postgres://")):
        from policy_service.stores.postgres_store import PostgresGroupStateStore

        return PostgresGroupStateStore(database_url)
    raise UnsupportedDatabaseUrl(
        f"unsupported database URL {redacted_url(database_url)!r}:"
        " expected sqlite:///PATH or postgresql://[USER@]HOST[:PORT]/DATABASE"
    )


def sqlite_path(database_url: str) -> Path | None:
    """The file an `sqlite:///PATH` URL names, or None for any other URL."""
    if not database_url.startswith(SQLITE_PREFIX):
        return None
    return Path(database_url.removeprefix(SQLITE_PREFIX))


def redacted_url(url: str) -> str:
    """The URL with the password of its user info, if any, replaced by ***."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    user_info, at, host = authority.rpartition("@")
    if not sep or not at or ":" not in user_info:
        return url
    user = user_info.partition(":")[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"
