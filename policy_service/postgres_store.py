"""The PostgreSQL group-state store, shared by several policy-service replicas.

Every replica opens its own connection pool on the same database (and schema: the tables go
in the first schema of the URL's search_path, e.g. `?options=-csearch_path%3Dchat_policy`).
A commit is durable when `record` returns, with PostgreSQL's default `synchronous_commit=on`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import IsolationLevel
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from policy_service.errors import StoreUnavailable
from policy_service.group_state import (
    EventKind,
    GroupEvent,
    GroupKey,
    GroupState,
    RecordOutcome,
    apply_to_group,
)
from policy_service.pagination import FullGroupsCursor

# Schema versions, applied in order; schema_migrations records each one applied. The key
# columns use the "C" collation: bytewise UTF-8 order, which is code-point order, so pages
# come in the same order as from SQLite (BINARY) and as Python sorts str, whatever the
# database's default collation is. "full" is a reserved word in PostgreSQL: always quoted.
MIGRATIONS = (
    """
    CREATE TABLE group_state (
        sdk_app_id BIGINT NOT NULL,
        group_id TEXT COLLATE "C" NOT NULL,
        topic_id TEXT COLLATE "C" NOT NULL,
        "full" BOOLEAN NOT NULL,
        full_since_ms BIGINT,
        last_event_time_ms BIGINT NOT NULL,
        full_event_count BIGINT NOT NULL,
        destroyed BOOLEAN NOT NULL DEFAULT FALSE,
        last_event_kind SMALLINT NOT NULL DEFAULT 1,
        PRIMARY KEY (sdk_app_id, group_id, topic_id)
    );
    CREATE INDEX group_state_full_since
        ON group_state (full_since_ms, sdk_app_id, group_id, topic_id) WHERE "full";
    CREATE INDEX group_state_app_full_since
        ON group_state (sdk_app_id, full_since_ms, group_id, topic_id) WHERE "full";
    """,
)

# Taken by every replica before migrating: the two-int form of the advisory lock, so it never
# collides with the one-bigint group locks below; the second key is the schema's name.
_MIGRATION_LOCK_CLASS = 0x43504D47  # "CPMG"

# libpq waits forever for an unanswered connection unless told; a URL may set its own.
_CONNECT_TIMEOUT_S = 5
# How long a call waits for a pooled connection before it is StoreUnavailable.
_POOL_TIMEOUT_S = 5.0

_COLUMNS = (
    'sdk_app_id, group_id, topic_id, "full", full_since_ms, last_event_time_ms,'
    " full_event_count, destroyed, last_event_kind"
)

_UPSERT = f"""
    INSERT INTO group_state ({_COLUMNS}) VALUES ({", ".join(["%s"] * 9)})
    ON CONFLICT (sdk_app_id, group_id, topic_id) DO UPDATE SET
        "full" = EXCLUDED."full",
        full_since_ms = EXCLUDED.full_since_ms,
        last_event_time_ms = EXCLUDED.last_event_time_ms,
        full_event_count = EXCLUDED.full_event_count,
        destroyed = EXCLUDED.destroyed,
        last_event_kind = EXCLUDED.last_event_kind
"""

Row = Sequence[Any]


class PostgresGroupStateStore:
    """Group states in PostgreSQL, through a pool of connections shared by the threads."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error:
            # The parser's message quotes the URL, password included: say nothing of it.
            raise StoreUnavailable("PostgreSQL: the database URL cannot be parsed") from None
        password = params.get("password")
        self._secret = str(password) if password else None
        timeout: dict[str, Any] = {}
        if "connect_timeout" not in params:
            timeout["connect_timeout"] = _CONNECT_TIMEOUT_S
        with self._translated_errors():
            # Migrate on a connection of its own: a wrong host or password fails at once with
            # libpq's own reason, rather than as a pool timeout.
            with psycopg.connect(url, autocommit=True, **timeout) as conn:
                _configure(conn)
                _migrate(conn)
            self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                url,
                kwargs={"autocommit": True, **timeout},
                min_size=min_size,
                max_size=max_size,
                open=False,
                configure=_configure,
                check=self._check_connection,
                timeout=_POOL_TIMEOUT_S,
                name="chat-policy-store",
            )
            try:
                self._pool.open(wait=True, timeout=_POOL_TIMEOUT_S)
            except BaseException:
                self._pool.close()
                raise

    def record(self, event: GroupEvent) -> RecordOutcome:
        """Apply an event in one transaction holding its group's lock (every topic, too).

        The lock is a transaction-scoped advisory lock on (sdk_app_id, group_id), not
        SELECT ... FOR UPDATE: row locks cannot cover rows that do not exist yet, so two
        first events for a new group (or a topic new to it) would both read nothing and the
        second upsert would overwrite the first. The advisory lock serialises every event of
        the group, existing rows or not, is released by COMMIT or ROLLBACK (also when the
        connection dies), and works through a transaction-pooling proxy. Read committed is
        required: each statement after the lock sees what the previous holder committed.
        A hash collision between two groups only makes them wait for each other.
        """
        key = event.key
        with (
            self._translated_errors(),
            self._pool.connection() as conn,
            conn.transaction(),
        ):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_group_lock_key(key),))
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM group_state WHERE sdk_app_id = %s AND group_id = %s",
                (key.sdk_app_id, key.group_id),
            ).fetchall()
            outcome = apply_to_group([_state_from_row(row) for row in rows], event)
            if outcome.changed:
                with conn.cursor() as cursor:
                    cursor.executemany(
                        _UPSERT, [_row_from_state(state) for state in outcome.changed]
                    )
        return outcome

    def get(self, key: GroupKey) -> GroupState | None:
        """The group's state, or None."""
        with self._translated_errors(), self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM group_state"
                " WHERE sdk_app_id = %s AND group_id = %s AND topic_id = %s",
                _key_tuple(key),
            ).fetchone()
        return None if row is None else _state_from_row(row)

    def list_full(
        self, sdk_app_id: int, limit: int, after: FullGroupsCursor | None
    ) -> list[GroupState]:
        """One keyset page of full groups: an index range scan, whatever the depth."""
        query, params = list_full_query(sdk_app_id, limit, after)
        with self._translated_errors(), self._pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [_state_from_row(row) for row in rows]

    def close(self) -> None:
        """Close the pool and its connections."""
        self._pool.close()

    def _check_connection(self, conn: psycopg.Connection[Any]) -> None:
        """Check a connection as it leaves the pool (ConnectionPool.check_connection).

        A dead one (server restarted, backend terminated) is discarded and replaced, not
        handed out. One dead connection means the others idle beside it are dead too, so
        all of them are checked at once: otherwise the pool would hand them out one at a
        time, pausing about a second before each next try, and a large pool would time out.
        """
        try:
            ConnectionPool.check_connection(conn)
        except Exception:
            self._pool.check()
            raise

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        """Turn every psycopg error (the pool's PoolTimeout and PoolClosed are psycopg
        OperationalErrors) into StoreUnavailable, never quoting the URL or its password."""
        try:
            yield
        except psycopg.Error as error:
            message = str(error).strip() or type(error).__name__
            if self._secret:
                message = message.replace(self._secret, "***")
            raise StoreUnavailable(f"PostgreSQL: {message}") from error


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Read committed whatever the server's default: record's lock relies on it."""
    conn.isolation_level = IsolationLevel.READ_COMMITTED


def _migrate(conn: psycopg.Connection[Any]) -> None:
    """Apply the missing migrations in one transaction, under the schema's migration lock.

    Replicas starting together queue on the lock; each one then reads the versions the
    previous one committed (read committed), so every migration runs exactly once. Any
    failure rolls back all of it, the versions table included.
    """
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(coalesce(current_schema(), '')))",
            (_MIGRATION_LOCK_CLASS,),
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INT PRIMARY KEY,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        version = row[0] if row is not None else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.execute(script)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))


def list_full_query(
    sdk_app_id: int, limit: int, after: FullGroupsCursor | None
) -> tuple[str, list[object]]:
    """The SQL and parameters of one page of `list_full` (tests EXPLAIN it).

    Without a filter the order (full_since_ms, sdk_app_id, group_id, topic_id) is the index
    group_state_full_since. With one, sdk_app_id is a constant, so the same order is
    (sdk_app_id, full_since_ms, group_id, topic_id), the index group_state_app_full_since;
    the row comparison is written in that index's column order so that it bounds the scan
    (in the other order it would only filter, and a deep page would read every row before it).
    """
    where: list[str] = ['"full"']
    params: list[object] = []
    if sdk_app_id:
        order = "sdk_app_id, full_since_ms, group_id, topic_id"
        if after is None:
            where.append("sdk_app_id = %s")
            params.append(sdk_app_id)
        else:
            bound, bound_params = _app_bound(sdk_app_id, after)
            where.append(bound)
            params += bound_params
    else:
        order = "full_since_ms, sdk_app_id, group_id, topic_id"
        if after is not None:
            where.append("(full_since_ms, sdk_app_id, group_id, topic_id) > (%s, %s, %s, %s)")
            params += [after.full_since_ms, *_key_tuple(after.key)]
    query = (
        f"SELECT {_COLUMNS} FROM group_state WHERE {' AND '.join(where)} ORDER BY {order} LIMIT %s"
    )
    return query, [*params, limit]


def _group_lock_key(key: GroupKey) -> int:
    """The advisory-lock key of a group: a stable signed 64-bit hash of (app, group)."""
    name = f"chat-policy/group_state/{key.sdk_app_id}/{key.group_id}".encode()
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)


def _app_bound(sdk_app_id: int, after: FullGroupsCursor) -> tuple[str, list[object]]:
    """The rows of app `sdk_app_id` after the cursor, as bounds of group_state_app_full_since.

    Not `sdk_app_id = %s AND (sdk_app_id, ...) > (...)`: with an equality on the same column
    PostgreSQL (15) starts the scan at the app's first entry and merely filters by the row
    comparison, reading every earlier row of the app. A lower bound (the row comparison,
    which implies sdk_app_id >= the app) and an upper bound on the app start the scan at
    the cursor instead. A cursor of another app (page tokens bind the filter, so only by
    hand) keeps the meaning (full_since_ms, sdk_app_id, group_id, topic_id) > cursor.
    """
    cursor_app = after.key.sdk_app_id
    if cursor_app == sdk_app_id:
        params: list[object] = [
            sdk_app_id,
            after.full_since_ms,
            *_key_tuple(after.key)[1:],
            sdk_app_id,
        ]
        bound = "(sdk_app_id, full_since_ms, group_id, topic_id) > (%s, %s, %s, %s)"
        return f"{bound} AND sdk_app_id <= %s", params
    operator = ">=" if sdk_app_id > cursor_app else ">"
    return f"sdk_app_id = %s AND full_since_ms {operator} %s", [sdk_app_id, after.full_since_ms]


def _key_tuple(key: GroupKey) -> tuple[int, str, str]:
    return (key.sdk_app_id, key.group_id, key.topic_id)


def _row_from_state(
    state: GroupState,
) -> tuple[int, str, str, bool, int | None, int, int, bool, int]:
    return (
        *_key_tuple(state.key),
        state.full,
        state.full_since_ms,
        state.last_event_time_ms,
        state.full_event_count,
        state.destroyed,
        int(state.last_event_kind),
    )


def _state_from_row(row: Row) -> GroupState:
    app, group, topic, full, full_since_ms, last_event_time_ms, count, destroyed, kind = row
    return GroupState(
        GroupKey(app, group, topic),
        full,
        full_since_ms,
        last_event_time_ms,
        count,
        destroyed,
        EventKind(kind),
    )
