"""The whole store's interface (group state, rate-limit slots, decisions, the audit trail) and
opening one from a database URL."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from policy_service.audit.audit_log import AuditLog
from policy_service.engine.decision_log import DecisionLog
from policy_service.engine.rate_limit import RateCounter
from policy_service.errors import PolicyServiceError
from policy_service.groups.store import GroupStateStore

# A database URL that starts so names an SQLite file by the path after it.
SQLITE_PREFIX = "sqlite:///"


class Store(GroupStateStore, RateCounter, DecisionLog, AuditLog, Protocol):
    """A whole store, as open_store returns it: group states and their change log, the
    rate-limit slots, the decision log and the audit trail, in one database.

    Both stores (SQLite, PostgreSQL) implement all four interfaces; code that needs only one
    part takes that part's interface. Slots, decisions and audit events are not part of the
    change log.
    """


class UnsupportedDatabaseUrl(PolicyServiceError):
    """The database URL names a backend this build does not have."""


async def open_store(database_url: str) -> Store:
    """Open (creating and migrating as needed) the store a database URL names, on the running
    event loop, which every call of the store must then be awaited on.

    `sqlite:///PATH` is the embedded SQLite file (one service process); `postgresql://...` or
    `postgres://...` (any libpq URL) is PostgreSQL, which several replicas may share.
    """
    sqlite_file = sqlite_path(database_url)
    if sqlite_file is not None:
        from policy_service.stores.sqlite_store import SQLiteGroupStateStore

        return await SQLiteGroupStateStore.open(sqlite_file)
    if database_url.startswith(("postgresql://", "postgres://")):
        from policy_service.stores.postgres_store import PostgresGroupStateStore

        return await PostgresGroupStateStore.open(database_url)
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
