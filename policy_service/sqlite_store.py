"""The embedded SQLite group-state store (WAL, synchronous=FULL: acknowledged means on disk)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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

# Schema versions, applied in order; PRAGMA user_version records how many have run.
MIGRATIONS = (
    """
    CREATE TABLE group_state (
        sdk_app_id INTEGER NOT NULL,
        group_id TEXT NOT NULL,
        topic_id TEXT NOT NULL,
        full INTEGER NOT NULL,
        full_since_ms INTEGER,
        last_event_time_ms INTEGER NOT NULL,
        full_event_count INTEGER NOT NULL,
        PRIMARY KEY (sdk_app_id, group_id, topic_id)
    ) WITHOUT ROWID;
    CREATE INDEX group_state_full_since
        ON group_state (full_since_ms, sdk_app_id, group_id, topic_id) WHERE full;
    CREATE INDEX group_state_app_full_since
        ON group_state (sdk_app_id, full_since_ms, group_id, topic_id) WHERE full;
    """,
    """
    ALTER TABLE group_state ADD COLUMN destroyed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE group_state ADD COLUMN last_event_kind INTEGER NOT NULL DEFAULT 1;
    """,
)

_COLUMNS = (
    "sdk_app_id, group_id, topic_id, full, full_since_ms, last_event_time_ms, full_event_count,"
    " destroyed, last_event_kind"
)

_UPSERT = f"INSERT OR REPLACE INTO group_state ({_COLUMNS}) VALUES ({', '.join('?' * 9)})"


class SQLiteGroupStateStore:
    """Group states in one SQLite file, shared by the service's threads through one lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._translated_errors():
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL fsyncs the WAL on every commit: a 200 sent to Chat survives power loss too.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()

    def record(self, event: GroupEvent) -> RecordOutcome:
        """Apply an event in one immediate transaction (to every topic, for a whole group)."""
        with self._transaction():
            outcome = apply_to_group(self._select_group(event.key), event)
            self._db.executemany(_UPSERT, [_row_from_state(state) for state in outcome.changed])
            return outcome

    def get(self, key: GroupKey) -> GroupState | None:
        """The group's state, or None."""
        with self._lock, self._translated_errors():
            return self._select(key)

    def list_full(
        self, sdk_app_id: int, limit: int, after: FullGroupsCursor | None
    ) -> list[GroupState]:
        """One keyset page of full groups: an index range scan, whatever the depth."""
        where, params = ["full"], list[object]()
        if sdk_app_id:
            where.append("sdk_app_id = ?")
            params.append(sdk_app_id)
        if after is not None:
            where.append("(full_since_ms, sdk_app_id, group_id, topic_id) > (?, ?, ?, ?)")
            params += [after.full_since_ms, *_key_tuple(after.key)]
        order = "full_since_ms, sdk_app_id, group_id, topic_id"
        sql = f"SELECT {_COLUMNS} FROM group_state WHERE {' AND '.join(where)} ORDER BY {order}"
        with self._lock, self._translated_errors():
            rows = self._db.execute(f"{sql} LIMIT ?", (*params, limit)).fetchall()
        return [_state_from_row(row) for row in rows]

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()

    def _select(self, key: GroupKey) -> GroupState | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM group_state"
            " WHERE sdk_app_id = ? AND group_id = ? AND topic_id = ?",
            _key_tuple(key),
        ).fetchone()
        return None if row is None else _state_from_row(row)

    def _select_group(self, key: GroupKey) -> list[GroupState]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM group_state WHERE sdk_app_id = ? AND group_id = ?",
            (key.sdk_app_id, key.group_id),
        ).fetchall()
        return [_state_from_row(row) for row in rows]

    def _migrate(self) -> None:
        with self._transaction():
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Hold the lock and an IMMEDIATE transaction; commit on success, else roll back."""
        with self._lock, self._translated_errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            raise StoreUnavailable(f"SQLite: {error}") from error


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
        state.last_event_kind,
    )


def _state_from_row(row: tuple[int, str, str, int, int | None, int, int, int, int]) -> GroupState:
    app, group, topic, full, full_since_ms, last_event_time_ms, count, destroyed, kind = row
    return GroupState(
        GroupKey(app, group, topic),
        bool(full),
        full_since_ms,
        last_event_time_ms,
        count,
        bool(destroyed),
        EventKind(kind),
    )
