"""The embedded SQLite group-state store (WAL, synchronous=FULL: acknowledged means on disk),
on asyncio.

One process owns the file. Every write (record, acquire, release, the prunes, appended decisions
and audit events) goes to one writer thread, which owns the write connection: a caller queues a
function for it and awaits a future. The writer takes everything queued (up to _GROUP) and runs
it in arrival order in one IMMEDIATE transaction, each function in a savepoint of its own (one
that raises is rolled back alone, and only its caller gets the error), then COMMITs once:
concurrent writers share one fsync. Only after that COMMIT does it resolve the batch's futures,
with one call_soon_threadsafe per commit; if the transaction fails, every caller in it gets
StoreUnavailable and none of its writes stay. One writer also means change-log sequences
(AUTOINCREMENT: never reused) commit in order, and acquire's count and insert see no other write
in between. A commit that logged a change wakes wait_for_changes (an asyncio.Event on the loop).

Reads use other connections (WAL: a reader never waits for the writer, and sees every commit
made before it began, so every write whose future resolved). Where a read runs was measured
on a file of 1,000,000 groups (bench-state's fill): a hop to a thread and back costs
~40-80 us here, a lookup by key ~9 us, change_log_bounds ~5 us, while a 100-row page of
list_full takes ~0.3 ms (1,000 rows: 4.5 ms), 500 changes ~2 ms, 1,000 keys of get_many
~10 ms and count 10-86 ms. So lookups bounded by a key or a handful of keys (get, get_many
of up to _INLINE_KEYS keys, change_log_bounds, ping) run inline on the event loop, on a
connection of the loop's own, whose busy timeout is short (in WAL a reader waits only on a
recovery); reads that grow with a limit or with the data (list_full, count, changes_after,
list_decisions, list_audit_events, larger get_many) run on _READ_THREADS read threads, each
with its own connection (SQLite releases the GIL while it steps, so the loop runs meanwhile).
Rate-limit
slots, the decision log and the audit trail live in the same file, outside the change log;
an audited record stores its audit event in the record's savepoint.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from chat_policy_shared.field_limits import echo
from policy_service.audit.audit_log import AuditCursor, AuditEvent, AuditQuery, with_outcome
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
from policy_service.stores.audit_rows import (
    audit_from_row,
    insert_audit_event,
    list_audit_query,
    row_from_audit,
)
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
    # The audit trail, and the caller of a decision (empty for one recorded before). The
    # indexes serve newest-first listing, unfiltered or with a caller, an action, an
    # application or a group (as list_audit_query words it).
    """
    ALTER TABLE creation_decision ADD COLUMN caller TEXT NOT NULL DEFAULT '';
    CREATE INDEX creation_decision_caller_time
        ON creation_decision (caller, decided_at_ms, decision_id);
    CREATE TABLE audit_event (
        audit_id TEXT PRIMARY KEY,
        occurred_at_ms INTEGER NOT NULL,
        caller TEXT NOT NULL,
        action TEXT NOT NULL,
        sdk_app_id INTEGER NOT NULL,
        group_id TEXT NOT NULL,
        topic_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        result TEXT NOT NULL,
        detail TEXT NOT NULL,
        request_id TEXT NOT NULL,
        replica TEXT NOT NULL
    );
    CREATE INDEX audit_event_time ON audit_event (occurred_at_ms, audit_id);
    CREATE INDEX audit_event_caller_time ON audit_event (caller, occurred_at_ms, audit_id);
    CREATE INDEX audit_event_action_time ON audit_event (action, occurred_at_ms, audit_id);
    CREATE INDEX audit_event_app_time ON audit_event (sdk_app_id, occurred_at_ms, audit_id);
    CREATE INDEX audit_event_group_time ON audit_event (group_id, occurred_at_ms, audit_id);
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
_COUNT_SLOTS = "SELECT count(*) FROM rate_limit_slot WHERE bucket = ? AND stamped_ms > ?"
_INSERT_AUDIT = insert_audit_event("?")
log = logging.getLogger(__name__)

# Rows per statement or transaction in bulk reads and pruning: bounded work per transaction.
_BATCH = 1000
# Writes per group commit: bounded work, and wait, per transaction.
_GROUP = 256
# get_many of at most this many keys reads inline on the event loop; more go to a read thread.
_INLINE_KEYS = 16
# Read threads, each with a connection of its own.
_READ_THREADS = 2
# How long a read inline on the loop waits for a lock (in WAL, only a recovery takes one).
_INLINE_BUSY_MS = 100

T = TypeVar("T")
_Db = sqlite3.Connection


class _Write:
    """A queued write: its function, the future its caller awaits, and once its transaction
    ended, its result or error."""

    __slots__ = ("error", "function", "future", "result")

    def __init__(self, function: Callable[[_Db], Any], future: asyncio.Future[Any]) -> None:
        self.function = function
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None


_STOP = None  # queued by close(): the writer ends once it took everything queued before it


class _Writer:
    """The one thread that writes: it owns the write connection and group-commits the writes
    queued for it (see the module's docstring)."""

    def __init__(self, db: _Db, loop: asyncio.AbstractEventLoop, committed: Callable[[], None]):
        self._db = db
        self._loop = loop
        self._committed = committed  # called on the loop after a commit that logged a change
        self.queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._closed = False  # set on the loop by stop(): no more writes queued
        self.logged = False  # the transaction under way appended to the change log
        self.commits = 0  # transactions committed
        self.committed_writes = 0  # the writes they held (one rolled back to its savepoint too)
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._thread.start()

    def submit(self, function: Callable[[_Db], T]) -> asyncio.Future[T]:
        """Queue function; a future of its result, resolved once its transaction committed."""
        if self._closed:
            raise StoreUnavailable("SQLite: the store is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self.queue.put(_Write(function, future))
        return future

    async def stop(self) -> None:
        """Let the writer finish what is queued, then end it and close its connection."""
        if not self._closed:
            self._closed = True
            self.queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        left: list[_Write] = []  # the batch under way, as it grows
        try:
            stopping = False
            while not stopping:
                first = self.queue.get()
                if first is _STOP:
                    break
                left = [first]
                stopping = self._commit(left)
                left = []
        except Exception:
            log.exception("the SQLite writer stopped on an unexpected error")
        finally:
            # Ended by close(), or by a bug: either way no write may wait for ever.
            self._closed = True
            with suppress(queue.Empty):
                while True:
                    if (write := self.queue.get_nowait()) is not _STOP:
                        left.append(write)
            for write in left:
                write.error = StoreUnavailable("SQLite: the store's writer has stopped")
            if left:
                with suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._settle, left, False)
            self._db.close()

    def _commit(self, batch: list[_Write]) -> bool:
        """Run the batch's writes in order in one IMMEDIATE transaction, each in a savepoint
        (one that raises is rolled back alone and keeps its error), those queued meanwhile
        joining the batch as it runs (up to _GROUP); commit, and resolve the batch's futures
        on the loop in one callback. If the transaction fails, it is rolled back and every
        write in it gets the error, as StoreUnavailable. Whether it took close()'s _STOP."""
        db = self._db
        stopping = False
        self.logged = False
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                index = 0
                while index < len(batch):
                    write = batch[index]
                    db.execute("SAVEPOINT write")
                    try:
                        write.result = write.function(db)
                    except Exception as error:  # kept for its caller
                        db.execute("ROLLBACK TO write")
                        write.error = store_error(error)
                    db.execute("RELEASE write")
                    index += 1
                    if index == len(batch) and not stopping and index < _GROUP:
                        with suppress(queue.Empty):
                            queued = self.queue.get_nowait()
                            if queued is _STOP:
                                stopping = True
                            else:
                                batch.append(queued)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except Exception as error:  # the batch's callers get it
            failure = store_error(error)
            if not isinstance(failure, StoreUnavailable):
                failure = StoreUnavailable(f"SQLite: {error}")
                failure.__cause__ = error
            for write in batch:
                write.error = failure
            self.logged = False
        else:
            self.commits += 1
            self.committed_writes += len(batch)
        with suppress(RuntimeError):  # a closed loop: nobody awaits these futures any more
            self._loop.call_soon_threadsafe(self._settle, batch, self.logged)
        return stopping

    def _settle(self, batch: list[_Write], logged: bool) -> None:
        """On the loop: resolve the futures of a batch that ended; wake change waiters."""
        for write in batch:
            if write.future.cancelled():
                continue
            if write.error is not None:
                write.future.set_exception(write.error)
            else:
                write.future.set_result(write.result)
        if logged:
            self._committed()


def store_error(error: BaseException) -> BaseException:
    """The error a caller gets for an error of SQLite or of the sqlite3 module: a refused
    value (a string or blob too big, a constraint; or, before SQLite, an int beyond 64 bits,
    text that is not Unicode) is ValueNotStorable, any other SQLite error StoreUnavailable;
    other errors (GroupNotFound) as they are."""
    translated: BaseException
    if isinstance(
        error, (sqlite3.DataError, sqlite3.IntegrityError, OverflowError, UnicodeEncodeError)
    ):
        translated = ValueNotStorable(f"SQLite cannot store a value: {echo(str(error))}")
    elif isinstance(error, sqlite3.Error):
        translated = StoreUnavailable(f"SQLite: {error}")
    else:
        return error
    translated.__cause__ = error
    return translated


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Raise an SQLite error as store_error translates it."""
    try:
        yield
    except (sqlite3.Error, OverflowError, UnicodeEncodeError) as error:
        raise store_error(error) from error


def _connect(path: Path, *, read_only: bool, busy_ms: int = 5000) -> _Db:
    """A connection to the file, in autocommit mode, usable from any one thread at a time."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout={busy_ms}")
        if read_only:
            db.execute("PRAGMA query_only=ON")
        else:
            db.execute("PRAGMA journal_mode=WAL")
            # FULL fsyncs the WAL on every commit: a 200 sent to Chat survives power loss too.
            db.execute("PRAGMA synchronous=FULL")
    except BaseException:
        db.close()
        raise
    return db


class SQLiteGroupStateStore:
    """Group states, rate-limit slots and decisions in one SQLite file: writes through the
    one writer thread, reads on the event loop or a read thread. Open with open()."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop, write_db: _Db) -> None:
        """Use open(): it makes the file's write connection, migrates, then the readers."""
        self._path = path
        self._loop = loop
        self._changed = asyncio.Event()
        self._generation = self._waited = 0  # commits that logged a change; those waits saw
        self._closed = False
        self._db = write_db  # the writer's: only its thread uses it
        self._writer = _Writer(write_db, loop, self._commit_logged)
        self._queue = self._writer.queue
        self._read_db: _Db | None = None  # the loop's read connection
        self._readers: ThreadPoolExecutor | None = None
        self._reader_dbs: list[_Db] = []
        self._reader_local = threading.local()
        self._reader_lock = threading.Lock()

    @classmethod
    async def open(cls, path: Path) -> SQLiteGroupStateStore:
        """Open the file (creating it, its directory and its tables, and migrating them as
        needed), for use on the running event loop; StoreUnavailable if it cannot."""

        def connect() -> tuple[_Db, _Db]:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _translated_errors():
                write_db = _connect(path, read_only=False)
                try:
                    return write_db, _connect(path, read_only=True, busy_ms=_INLINE_BUSY_MS)
                except BaseException:
                    write_db.close()
                    raise

        write_db, read_db = await asyncio.to_thread(connect)
        store = cls(path, asyncio.get_running_loop(), write_db)
        store._read_db = read_db
        store._readers = ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="sqlite-read")
        try:
            await store._write(_migrate)
        except BaseException:
            await store.close()
            raise
        return store

    @property
    def commits(self) -> int:
        """How many transactions the writer committed (for tests and benchmarks)."""
        return self._writer.commits

    @property
    def committed_writes(self) -> int:
        """How many writes those transactions held: over commits, the writes per commit."""
        return self._writer.committed_writes

    async def record(self, event: GroupEvent, audit: AuditEvent | None = None) -> RecordOutcome:
        """Apply an event in the writer's transaction (to every topic, for a whole group),
        with its audit event in the same savepoint."""

        def write(db: _Db) -> RecordOutcome:
            outcome = apply_to_group(_select_group(db, event.key), event)
            db.executemany(_UPSERT, [row_from_state(state) for state in outcome.changed])
            self._log(db, outcome.changed, forgotten=False)
            if audit is not None:
                db.execute(_INSERT_AUDIT, row_from_audit(with_outcome(audit, event, outcome)))
            return outcome

        return await self._write(write)

    async def get(self, key: GroupKey) -> GroupState | None:
        """The group's state, or None: one index lookup, inline."""
        with _translated_errors():
            return _select(self._reader(), key)

    async def get_many(self, keys: Sequence[GroupKey]) -> dict[GroupKey, GroupState]:
        """The states of those keys that have one: one lookup per key, in one read
        transaction; inline for a few keys, on a read thread for more."""

        def read(db: _Db) -> dict[GroupKey, GroupState]:
            found: dict[GroupKey, GroupState] = {}
            db.execute("BEGIN")
            try:
                for key in dict.fromkeys(keys):
                    state = _select(db, key)
                    if state is not None:
                        found[key] = state
            finally:
                db.execute("COMMIT")
            return found

        if len(keys) <= _INLINE_KEYS:
            with _translated_errors():
                return read(self._reader())
        return await self._read(read)

    async def list_full(
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

        def read(db: _Db) -> list[GroupState]:
            rows = db.execute(f"{sql} LIMIT ?", (*params, limit)).fetchall()
            return [state_from_row(row) for row in rows]

        return await self._read(read)

    async def count(self, sdk_app_id: int) -> GroupCounts:
        """Count states (full ones from the partial index; the rest scan the app's rows)."""
        where, params = ("WHERE sdk_app_id = ?", (sdk_app_id,)) if sdk_app_id else ("", ())

        def read(db: _Db) -> GroupCounts:
            ((tracked, full, destroyed),) = db.execute(
                "SELECT count(*), coalesce(sum(full), 0), coalesce(sum(destroyed), 0)"
                f" FROM group_state {where}",
                params,
            ).fetchall()
            return GroupCounts(tracked, full, destroyed)

        return await self._read(read)

    async def changes_after(self, sequence: int, limit: int) -> list[StateChange]:
        """Logged changes after `sequence`, oldest first."""

        def read(db: _Db) -> list[StateChange]:
            rows = db.execute(
                f"SELECT sequence, change_time_ms, {_COLUMNS}, forgotten FROM group_state_change"
                " WHERE sequence > ? ORDER BY sequence LIMIT ?",
                (sequence, limit),
            ).fetchall()
            return [change_from_row(row) for row in rows]

        return await self._read(read)

    async def change_log_bounds(self) -> ChangeLogBounds:
        """The pruning watermark and the newest sequence, read together, inline."""
        with _translated_errors():
            ((pruned_through, head),) = (
                self._reader()
                .execute(
                    "SELECT pruned_through, max(pruned_through, coalesce("
                    "(SELECT max(sequence) FROM group_state_change), 0)) FROM change_log_state"
                )
                .fetchall()
            )
        return ChangeLogBounds(pruned_through, head)

    async def prune(self, destroyed_before_ms: int, changes_before_ms: int) -> PruneOutcome:
        """Forget old destroyed groups, then drop old changes, a batch per write."""

        def forget(db: _Db) -> int:
            rows = db.execute(
                "DELETE FROM group_state WHERE (sdk_app_id, group_id, topic_id) IN"
                " (SELECT sdk_app_id, group_id, topic_id FROM group_state"
                " WHERE destroyed AND last_event_time_ms < ? LIMIT ?)"
                f" RETURNING {_COLUMNS}",
                (destroyed_before_ms, _BATCH),
            ).fetchall()
            self._log(db, [state_from_row(row) for row in rows], forgotten=True)
            return len(rows)

        def delete_changes(db: _Db) -> int | None:
            ((newest,),) = db.execute(
                "SELECT max(sequence) FROM (SELECT sequence FROM group_state_change"
                " WHERE change_time_ms < ? ORDER BY sequence LIMIT ?)",
                (changes_before_ms, _BATCH),
            ).fetchall()
            if newest is None:
                return None
            count: int = db.execute(
                "DELETE FROM group_state_change WHERE sequence <= ? AND change_time_ms < ?",
                (newest, changes_before_ms),
            ).rowcount
            db.execute(
                "UPDATE change_log_state SET pruned_through = max(pruned_through, ?)", (newest,)
            )
            return count

        forgotten = deleted = 0
        while True:
            count = await self._write(forget)
            forgotten += count
            if count < _BATCH:
                break
        while (changes := await self._write(delete_changes)) is not None:
            deleted += changes
        return PruneOutcome(forgotten, deleted)

    async def acquire(
        self, bucket: str, *, window_ms: int, limit: int, now_ms: int, force: bool = False
    ) -> Acquisition:
        """Count the bucket's slots in the window and take one, in one write of the one
        writer: no other write comes in between."""

        def write(db: _Db) -> Acquisition:
            ((count,),) = db.execute(_COUNT_SLOTS, (bucket, now_ms - window_ms)).fetchall()
            within = count < limit
            if not (within or force):
                return Acquisition(count, within, None)
            ((slot,),) = db.execute(
                "INSERT INTO rate_limit_slot (bucket, stamped_ms) VALUES (?, ?) RETURNING id",
                (bucket, now_ms),
            ).fetchall()
            return Acquisition(count, within, slot)

        return await self._write(write)

    async def count_slots(self, bucket: str, *, window_ms: int, now_ms: int) -> int:
        """Count the bucket's slots in the window, on a read thread: it sees every slot whose
        acquire returned."""

        def read(db: _Db) -> int:
            ((count,),) = db.execute(_COUNT_SLOTS, (bucket, now_ms - window_ms)).fetchall()
            return int(count)

        return await self._read(read)

    async def release(self, slot: int) -> None:
        """Delete the slot (nothing if it is gone already)."""

        def write(db: _Db) -> None:
            db.execute("DELETE FROM rate_limit_slot WHERE id = ?", (slot,))

        await self._write(write)

    async def prune_slots(self, before_ms: int) -> int:
        """Delete slots stamped before before_ms, a batch per write."""
        return await self._delete_in_batches(
            "DELETE FROM rate_limit_slot WHERE id IN (SELECT id FROM rate_limit_slot"
            " WHERE stamped_ms < ? ORDER BY stamped_ms LIMIT ?)",
            before_ms,
        )

    async def append_decisions(self, records: Sequence[DecisionRecord]) -> None:
        """Insert the records in one write, skipping known decision_ids."""
        if not records:
            return

        def write(db: _Db) -> None:
            db.executemany(_INSERT_DECISION, map(row_from_decision, records))

        await self._write(write)

    async def list_decisions(
        self, query: DecisionQuery, limit: int, after: DecisionCursor | None
    ) -> list[DecisionRecord]:
        """One keyset page of decisions, newest first: an index range scan, whatever the depth."""
        sql, params = list_decisions_query(query, limit, after, "?")

        def read(db: _Db) -> list[DecisionRecord]:
            return [decision_from_row(row) for row in db.execute(sql, params).fetchall()]

        return await self._read(read)

    async def prune_decisions(self, before_ms: int) -> int:
        """Delete decisions made before before_ms, a batch per write."""
        return await self._delete_in_batches(
            "DELETE FROM creation_decision WHERE rowid IN (SELECT rowid FROM creation_decision"
            " WHERE decided_at_ms < ? ORDER BY decided_at_ms LIMIT ?)",
            before_ms,
        )

    async def append_audit_events(self, events: Sequence[AuditEvent]) -> None:
        """Insert the events in one write, skipping known audit_ids."""
        if not events:
            return

        def write(db: _Db) -> None:
            db.executemany(_INSERT_AUDIT, map(row_from_audit, events))

        await self._write(write)

    async def list_audit_events(
        self, query: AuditQuery, limit: int, after: AuditCursor | None
    ) -> list[AuditEvent]:
        """One keyset page of audit events, newest first: an index range scan."""
        sql, params = list_audit_query(query, limit, after, "?")

        def read(db: _Db) -> list[AuditEvent]:
            return [audit_from_row(row) for row in db.execute(sql, params).fetchall()]

        return await self._read(read)

    async def prune_audit_events(self, before_ms: int) -> int:
        """Delete audit events that occurred before before_ms, a batch per write."""
        return await self._delete_in_batches(
            "DELETE FROM audit_event WHERE rowid IN (SELECT rowid FROM audit_event"
            " WHERE occurred_at_ms < ? ORDER BY occurred_at_ms LIMIT ?)",
            before_ms,
        )

    async def wait_for_changes(self, timeout_s: float) -> None:
        """Wait for a commit that logged a change after the previous call returned (only
        this process writes), or timeout_s."""
        if self._generation == self._waited and not self._closed and timeout_s > 0:
            self._changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout_s)
        self._waited = self._generation

    async def ping(self) -> None:
        """Read from the file, inline: fails when it became unreadable."""
        with _translated_errors():
            self._reader().execute("SELECT 1 FROM change_log_state").fetchall()

    async def close(self) -> None:
        """Let the writer commit what is queued and end; close every connection; wake a
        waiting wait_for_changes. Calls after it raise StoreUnavailable."""
        if self._closed:
            return
        self._closed = True
        await self._writer.stop()
        if self._readers is not None:
            await asyncio.to_thread(self._readers.shutdown)
        with self._reader_lock:
            for db in self._reader_dbs:
                db.close()
        if self._read_db is not None:
            self._read_db.close()
        self._changed.set()

    def _commit_logged(self) -> None:
        """On the loop: a commit appended to the change log; wake wait_for_changes."""
        self._generation += 1
        self._changed.set()

    def _log(self, db: _Db, states: Sequence[GroupState], *, forgotten: bool) -> None:
        """Append a change per state to the log, in the writer's transaction."""
        stamp = now_ms()
        db.executemany(_LOG, [(stamp, *row_from_state(state), forgotten) for state in states])
        if states:
            self._writer.logged = True

    async def _delete_in_batches(self, delete: str, before_ms: int) -> int:
        """Run `delete` (parameters: the cutoff, the batch size) a write at a time until a
        batch deletes fewer than _BATCH rows; how many it deleted in all."""

        def write(db: _Db) -> int:
            count: int = db.execute(delete, (before_ms, _BATCH)).rowcount
            return count

        deleted = 0
        while True:
            count = await self._write(write)
            deleted += count
            if count < _BATCH:
                return deleted

    async def _write(self, function: Callable[[_Db], T]) -> T:
        """Run function on the writer's connection in its next transaction (group commit);
        its result once that transaction committed, or its error."""
        return await self._writer.submit(function)

    def _reader(self) -> _Db:
        """The loop's read connection."""
        if self._read_db is None or self._closed:
            raise StoreUnavailable("SQLite: the store is closed")
        return self._read_db

    async def _read(self, function: Callable[[_Db], T]) -> T:
        """Run function on a read thread's connection; its result."""
        if self._readers is None or self._closed:
            raise StoreUnavailable("SQLite: the store is closed")
        return await self._loop.run_in_executor(self._readers, self._run_read, function)

    def _run_read(self, function: Callable[[_Db], T]) -> T:
        """On a read thread: function on the thread's connection, opened at its first use."""
        db: _Db | None = getattr(self._reader_local, "db", None)
        with _translated_errors():
            if db is None:
                db = _connect(self._path, read_only=True)
                with self._reader_lock:
                    self._reader_dbs.append(db)
                self._reader_local.db = db
            return function(db)


def _select(db: _Db, key: GroupKey) -> GroupState | None:
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM group_state"
        " WHERE sdk_app_id = ? AND group_id = ? AND topic_id = ?",
        key_tuple(key),
    ).fetchall()
    return state_from_row(rows[0]) if rows else None


def _select_group(db: _Db, key: GroupKey) -> list[GroupState]:
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM group_state WHERE sdk_app_id = ? AND group_id = ?",
        (key.sdk_app_id, key.group_id),
    ).fetchall()
    return [state_from_row(row) for row in rows]


def _migrate(db: _Db) -> None:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in filter(str.strip, script.split(";")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")
