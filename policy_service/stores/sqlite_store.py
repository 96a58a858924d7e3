"""The embedded SQLite group-state store (WAL, synchronous=FULL: acknowledged means on disk).

One process owns the file. Its threads share one connection through a lock, so writes are
serialised and change-log sequences (AUTOINCREMENT: never reused) commit in order; a
condition variable wakes wait_for_changes when a change commits. Rate-limit slots and the
decision log live in the same file, outside the change log; acquire counts and takes a slot
in one transaction under the same lock.

Writes are group-committed: each is a function queued for the connection, and the caller at
the head of the queue runs the queued functions in arrival order (those queued while it runs
too, up to _GROUP), each in a savepoint of its own, in one IMMEDIATE transaction, so
concurrent writers share one COMMIT and its fsync. A caller returns only once the COMMIT
holding its write succeeded; if the transaction fails, every caller in it gets
StoreUnavailable and none of its writes stay.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from chat_policy_shared.field_limits import echo
from policy_service.clock import now_ms
from policy_service.engine.decision_log import DecisionCursor, DecisionQuery, DecisionRecord
from policy_service.engine.rate_limit import Acquisition
from policy_service.errors import StoreUnavailable, ValueNotStorable
from policy_service.groups.change_log import ChangeLogBounds, PruneOutcome, StateChange
from policy_service.groups.state import (
    GroupCounts,
    GroupEvent,
    GroupKey,
    GroupState,
    RecordOutcome,
    apply_to_group,
)
from policy_service.groups.store import FullGroupsCursor
from policy_service.stores.decision_rows import (
    decision_from_row,
    insert_decisions,
    list_decisions_query,
    row_from_decision,
)
from policy_service.stores.state_rows import (
    change_from_row,
    key_tuple,
    row_from_state,
    state_from_row,
)

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
    """
    ALTER TABLE group_state ADD COLUMN clear_reason TEXT NOT NULL DEFAULT '';
    CREATE TABLE group_state_change (
        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
        change_time_ms INTEGER NOT NULL,
        sdk_app_id INTEGER NOT NULL,
        group_id TEXT NOT NULL,
        topic_id TEXT NOT NULL,
        full INTEGER NOT NULL,
        full_since_ms INTEGER,
        last_event_time_ms INTEGER NOT NULL,
        full_event_count INTEGER NOT NULL,
        destroyed INTEGER NOT NULL,
        last_event_kind INTEGER NOT NULL,
        clear_reason TEXT NOT NULL,
        forgotten INTEGER NOT NULL
    );
    CREATE INDEX group_state_change_time ON group_state_change (change_time_ms);
    CREATE INDEX group_state_destroyed
        ON group_state (last_event_time_ms) WHERE destroyed;
    CREATE TABLE change_log_state (pruned_through INTEGER NOT NULL);
    INSERT INTO change_log_state VALUES (0);
    """,
    # Rate-limit slots (AUTOINCREMENT: a released slot's id is never reused) and the decision
    # log. shadow_rule_ids is a JSON array. The decision indexes serve newest-first listing,
    # unfiltered or with an application or operator.
    """
    CREATE TABLE rate_limit_slot (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        bucket TEXT NOT NULL,
        stamped_ms INTEGER NOT NULL
    );
    CREATE INDEX rate_limit_slot_bucket ON rate_limit_slot (bucket, stamped_ms);
    CREATE INDEX rate_limit_slot_stamped ON rate_limit_slot (stamped_ms);
    CREATE TABLE creation_decision (
        decision_id TEXT PRIMARY KEY,
        decided_at_ms INTEGER NOT NULL,
        sdk_app_id INTEGER NOT NULL,
        operator_account TEXT NOT NULL,
        effect TEXT NOT NULL,
        error_code INTEGER NOT NULL,
        error_info TEXT NOT NULL,
        rule_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        policy_revision TEXT NOT NULL,
        shadow_rule_ids TEXT NOT NULL,
        latency_us INTEGER NOT NULL,
        request_json TEXT NOT NULL
    );
    CREATE INDEX creation_decision_time ON creation_decision (decided_at_ms, decision_id);
    CREATE INDEX creation_decision_app_time
        ON creation_decision (sdk_app_id, decided_at_ms, decision_id);
    CREATE INDEX creation_decision_operator_time
        ON creation_decision (operator_account, decided_at_ms, decision_id);
    """,
)

_COLUMNS = (
    "sdk_app_id, group_id, topic_id, full, full_since_ms, last_event_time_ms, full_event_count,"
    " destroyed, last_event_kind, clear_reason"
)

_UPSERT = f"INSERT OR REPLACE INTO group_state ({_COLUMNS}) VALUES ({', '.join('?' * 10)})"
_LOG = (
    f"INSERT INTO group_state_change (change_time_ms, {_COLUMNS}, forgotten)"
    f" VALUES ({', '.join('?' * 12)})"
)
_INSERT_DECISION = insert_decisions("?")
# Rows per statement or transaction in bulk reads and pruning: bounded work under the lock.
_BATCH = 1000
# Writes per group commit: bounded work, and wait, under the lock.
_GROUP = 64

T = TypeVar("T")


class _Write(Generic[T]):
    """A queued write: its function, then its result or error once its transaction ended."""

    __slots__ = ("done", "error", "function", "result")

    def __init__(self, function: Callable[[], T]) -> None:
        self.function = function
        self.result: T
        self.error: BaseException | None = None
        self.done = False


class _SyncSQLiteStore:
    """Group states, rate-limit slots and decisions in one SQLite file, shared by the
    service's threads through one lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._queue = threading.Condition(threading.Lock())  # guards _pending: writes not done
        self._pending: list[_Write[Any]] = []
        self._logged = False  # the transaction under way appended to the change log
        self._changed = threading.Condition()
        self._generation = self._waited = 0  # commits made; commits wait_for_changes saw
        with self._translated_errors():
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL fsyncs the WAL on every commit: a 200 sent to Chat survives power loss too.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._write(self._migrate)

    def record(self, event: GroupEvent) -> RecordOutcome:
        """Apply an event in one immediate transaction (to every topic, for a whole group)."""

        def write() -> RecordOutcome:
            outcome = apply_to_group(self._select_group(event.key), event)
            self._db.executemany(_UPSERT, [row_from_state(state) for state in outcome.changed])
            self._log(outcome.changed, forgotten=False)
            return outcome

        return self._write(write)

    def get(self, key: GroupKey) -> GroupState | None:
        """The group's state, or None."""
        with self._lock, self._translated_errors():
            return self._select(key)

    def get_many(self, keys: Sequence[GroupKey]) -> dict[GroupKey, GroupState]:
        """The states of those keys that have one: one lookup per key, under one lock."""
        found: dict[GroupKey, GroupState] = {}
        with self._lock, self._translated_errors():
            for key in dict.fromkeys(keys):
                state = self._select(key)
                if state is not None:
                    found[key] = state
        return found

    def list_full(
        self,
        sdk_app_id: int,
        limit: int,
        after: FullGroupsCursor | None,
        full_since_at_most_ms: int | None = None,
    ) -> list[GroupState]:
        """One keyset page of full groups: an index range scan, whatever the depth."""
        where, params = ["full"], list[object]()
        if sdk_app_id:
            where.append("sdk_app_id = ?")
            params.append(sdk_app_id)
        if after is not None:
            where.append("(full_since_ms, sdk_app_id, group_id, topic_id) > (?, ?, ?, ?)")
            params += [after.full_since_ms, *key_tuple(after.key)]
        if full_since_at_most_ms is not None:
            where.append("full_since_ms <= ?")
            params.append(full_since_at_most_ms)
        order = "full_since_ms, sdk_app_id, group_id, topic_id"
        sql = f"SELECT {_COLUMNS} FROM group_state WHERE {' AND '.join(where)} ORDER BY {order}"
        with self._lock, self._translated_errors():
            rows = self._db.execute(f"{sql} LIMIT ?", (*params, limit)).fetchall()
        return [state_from_row(row) for row in rows]

    def count(self, sdk_app_id: int) -> GroupCounts:
        """Count states (full ones from the partial index; the rest scan the app's rows)."""
        where, params = ("WHERE sdk_app_id = ?", (sdk_app_id,)) if sdk_app_id else ("", ())
        with self._lock, self._translated_errors():
            tracked, full, destroyed = self._db.execute(
                "SELECT count(*), coalesce(sum(full), 0), coalesce(sum(destroyed), 0)"
                f" FROM group_state {where}",
                params,
            ).fetchone()
        return GroupCounts(tracked, full, destroyed)

    def changes_after(self, sequence: int, limit: int) -> list[StateChange]:
        """Logged changes after `sequence`, oldest first."""
        with self._lock, self._translated_errors():
            rows = self._db.execute(
                f"SELECT sequence, change_time_ms, {_COLUMNS}, forgotten FROM group_state_change"
                " WHERE sequence > ? ORDER BY sequence LIMIT ?",
                (sequence, limit),
            ).fetchall()
        return [change_from_row(row) for row in rows]

    def change_log_bounds(self) -> ChangeLogBounds:
        """The pruning watermark and the newest sequence, read together."""
        with self._lock, self._translated_errors():
            pruned_through, head = self._db.execute(
                "SELECT pruned_through, max(pruned_through, coalesce("
                "(SELECT max(sequence) FROM group_state_change), 0)) FROM change_log_state"
            ).fetchone()
        return ChangeLogBounds(pruned_through, head)

    def prune(self, destroyed_before_ms: int, changes_before_ms: int) -> PruneOutcome:
        """Forget old destroyed groups, then drop old changes, a batch per transaction."""

        def forget() -> int:
            rows = self._db.execute(
                "DELETE FROM group_state WHERE (sdk_app_id, group_id, topic_id) IN"
                " (SELECT sdk_app_id, group_id, topic_id FROM group_state"
                " WHERE destroyed AND last_event_time_ms < ? LIMIT ?)"
                f" RETURNING {_COLUMNS}",
                (destroyed_before_ms, _BATCH),
            ).fetchall()
            self._log([state_from_row(row) for row in rows], forgotten=True)
            return len(rows)

        def delete_changes() -> int | None:
            (newest,) = self._db.execute(
                "SELECT max(sequence) FROM (SELECT sequence FROM group_state_change"
                " WHERE change_time_ms < ? ORDER BY sequence LIMIT ?)",
                (changes_before_ms, _BATCH),
            ).fetchone()
            if newest is None:
                return None
            count: int = self._db.execute(
                "DELETE FROM group_state_change WHERE sequence <= ? AND change_time_ms < ?",
                (newest, changes_before_ms),
            ).rowcount
            self._db.execute(
                "UPDATE change_log_state SET pruned_through = max(pruned_through, ?)", (newest,)
            )
            return count

        forgotten = deleted = 0
        while True:
            count = self._write(forget)
            forgotten += count
            if count < _BATCH:
                break
        while (changes := self._write(delete_changes)) is not None:
            deleted += changes
        return PruneOutcome(forgotten, deleted)

    def acquire(
        self, bucket: str, *, window_ms: int, limit: int, now_ms: int, force: bool = False
    ) -> Acquisition:
        """Count the bucket's slots in the window and take one, in one immediate transaction
        under the connection's lock: no other thread or writer comes in between."""

        def write() -> Acquisition:
            (count,) = self._db.execute(
                "SELECT count(*) FROM rate_limit_slot WHERE bucket = ? AND stamped_ms > ?",
                (bucket, now_ms - window_ms),
            ).fetchone()
            within = count < limit
            if not (within or force):
                return Acquisition(count, within, None)
            (slot,) = self._db.execute(
                "INSERT INTO rate_limit_slot (bucket, stamped_ms) VALUES (?, ?) RETURNING id",
                (bucket, now_ms),
            ).fetchone()
            return Acquisition(count, within, slot)

        return self._write(write)

    def release(self, slot: int) -> None:
        """Delete the slot (nothing if it is gone already)."""
        self._write(lambda: self._db.execute("DELETE FROM rate_limit_slot WHERE id = ?", (slot,)))

    def prune_slots(self, before_ms: int) -> int:
        """Delete slots stamped before before_ms, a batch per transaction."""
        return self._delete_in_batches(
            "DELETE FROM rate_limit_slot WHERE id IN (SELECT id FROM rate_limit_slot"
            " WHERE stamped_ms < ? ORDER BY stamped_ms LIMIT ?)",
            before_ms,
        )

    def append_decisions(self, records: Sequence[DecisionRecord]) -> None:
        """Insert the records in one immediate transaction, skipping known decision_ids."""
        if not records:
            return
        self._write(lambda: self._db.executemany(_INSERT_DECISION, map(row_from_decision, records)))

    def list_decisions(
        self, query: DecisionQuery, limit: int, after: DecisionCursor | None
    ) -> list[DecisionRecord]:
        """One keyset page of decisions, newest first: an index range scan, whatever the depth."""
        sql, params = list_decisions_query(query, limit, after, "?")
        with self._lock, self._translated_errors():
            rows = self._db.execute(sql, params).fetchall()
        return [decision_from_row(row) for row in rows]

    def prune_decisions(self, before_ms: int) -> int:
        """Delete decisions made before before_ms, a batch per transaction."""
        return self._delete_in_batches(
            "DELETE FROM creation_decision WHERE rowid IN (SELECT rowid FROM creation_decision"
            " WHERE decided_at_ms < ? ORDER BY decided_at_ms LIMIT ?)",
            before_ms,
        )

    def wait_for_changes(self, timeout_s: float) -> None:
        """Wait for a commit after the previous call returned (only this process writes)."""
        with self._changed:
            self._changed.wait_for(lambda: self._generation != self._waited, timeout_s)
            self._waited = self._generation

    def ping(self) -> None:
        """Read from the file: fails when it became unreadable."""
        with self._lock, self._translated_errors():
            self._db.execute("SELECT 1 FROM change_log_state").fetchone()

    def close(self) -> None:
        """Close the database file and wake a waiting wait_for_changes."""
        with self._lock:
            self._db.close()
        self._notify()

    def _log(self, states: Sequence[GroupState], *, forgotten: bool) -> None:
        """Append a change per state to the log, in the caller's transaction."""
        stamp = now_ms()
        self._db.executemany(_LOG, [(stamp, *row_from_state(state), forgotten) for state in states])
        if states:
            self._logged = True

    def _delete_in_batches(self, delete: str, before_ms: int) -> int:
        """Run `delete` (parameters: the cutoff, the batch size) a transaction at a time until
        a batch deletes fewer than _BATCH rows; how many it deleted in all."""
        deleted = 0
        while True:
            count = self._write(lambda: self._db.execute(delete, (before_ms, _BATCH)).rowcount)
            deleted += count
            if count < _BATCH:
                return deleted

    def _notify(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def _select(self, key: GroupKey) -> GroupState | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM group_state"
            " WHERE sdk_app_id = ? AND group_id = ? AND topic_id = ?",
            key_tuple(key),
        ).fetchone()
        return None if row is None else state_from_row(row)

    def _select_group(self, key: GroupKey) -> list[GroupState]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM group_state WHERE sdk_app_id = ? AND group_id = ?",
            (key.sdk_app_id, key.group_id),
        ).fetchall()
        return [state_from_row(row) for row in rows]

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in filter(str.strip, script.split(";")):
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {number}")

    def _write(self, function: Callable[[], T]) -> T:
        """Run function against the connection in an IMMEDIATE transaction shared with other
        callers' writes (group commit); its result, or its error, once that transaction ended.
        The write at the head of the queue leads: it commits a group (_commit), then removes
        it from the queue and wakes its callers and the next head."""
        write = _Write(function)
        with self._queue:
            self._pending.append(write)
            while not write.done and self._pending[0] is not write:
                self._queue.wait()
            leading = not write.done
        if leading:
            group: list[_Write[Any]] = [write]
            try:
                self._commit(group)
            finally:
                with self._queue:
                    del self._pending[: len(group)]
                    for each in group:
                        each.done = True
                    self._queue.notify_all()
        if write.error is not None:
            with self._translated_errors():
                raise write.error
        return write.result

    def _commit(self, group: list[_Write[Any]]) -> None:
        """Run the writes in group (at first, the queue's head) in order in one IMMEDIATE
        transaction, those queued behind joining group as it runs, up to _GROUP; then commit.
        Each runs in a savepoint: one that raises is rolled back alone and the error kept for
        its caller. If the transaction fails, it is rolled back and its error kept for every
        write in group."""
        try:
            with self._lock:
                self._logged = False
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for write in group:  # group grows: after each write, the next queued joins
                        self._db.execute("SAVEPOINT write")
                        try:
                            write.result = write.function()
                        except BaseException as error:
                            self._db.execute("ROLLBACK TO write")
                            write.error = error
                        self._db.execute("RELEASE write")
                        with self._queue:
                            if len(group) < min(len(self._pending), _GROUP):
                                group.append(self._pending[len(group)])
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                logged = self._logged
        except BaseException as error:
            for write in group:
                write.error = error
            return
        if logged:
            self._notify()

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        """Turn a refused value into ValueNotStorable and any other SQLite error into
        StoreUnavailable.

        A value is refused by SQLite (a string or blob too big, a constraint) or, before it
        gets there, by the sqlite3 module: an int beyond 64 bits, text that is not Unicode.
        """
        try:
            yield
        except (
            sqlite3.DataError,
            sqlite3.IntegrityError,
            OverflowError,
            UnicodeEncodeError,
        ) as error:
            raise ValueNotStorable(f"SQLite cannot store a value: {echo(str(error))}") from error
        except sqlite3.Error as error:
            raise StoreUnavailable(f"SQLite: {error}") from error


class SQLiteGroupStateStore:
    """The store's coroutine interface (interim: each call runs the threaded store in the
    default executor)."""

    def __init__(self, store: _SyncSQLiteStore) -> None:
        self._store = store

    @classmethod
    async def open(cls, path: Path) -> SQLiteGroupStateStore:
        """Open (creating and migrating as needed) the file at path."""
        return cls(await asyncio.to_thread(_SyncSQLiteStore, path))

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return call
