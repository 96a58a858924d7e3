"""The PostgreSQL group-state store, shared by several policy-service replicas.

Every replica opens its own pool of asynchronous connections (psycopg's AsyncConnection and
AsyncConnectionPool, on the event loop `open` ran on; no thread waits for the server) on the
same database (and schema: the tables go in the first schema of the URL's search_path, e.g.
`?options=-csearch_path%3Dchat_policy`).
A commit is durable when `record` returns, with PostgreSQL's default `synchronous_commit=on`.

The change log, ordered without a lock held through writers' commits. A transaction that
changes states appends a row per state to group_state_change with no sequence, only an id
(an identity: insertion order, not commit order). The public sequence, which watchers resume
from, is stamped later by the sequencer (_sequenced_read): a short transaction of its own that
takes the schema's sequencer lock (pg_advisory_xact_lock, held through the sequencer's own
commit only) and numbers every committed row still without a sequence, in id order, after the
newest sequence ever given. Every changes_after and change_log_bounds runs it first, in the
same round trip, so it runs on whichever replica reads, one at a time, and a read sees every
change committed before it began. Why it keeps the contract (a reader resuming from n misses
nothing and sees nothing twice):
- A row gets its sequence only once committed (the sequencer's statement sees committed rows
  only), and exactly once (only rows without one are numbered; sequencers take turns).
- Sequencers run one after another, each starting after the previous committed (the lock),
  and each numbers above every sequence given before: so sequences become visible in
  increasing order, and a row that commits late is numbered late, above whatever a reader
  has seen. No horizon is needed: the classic alternative, reading sequences taken at insert
  time below the snapshot's xmin, is unsound on its own, since an older xid may take a larger
  sequence than a younger one still in flight; here a number is never taken before commit.
- The changes of one group keep their order: its writers take turns on the group's lock, so
  the later one inserts (a higher id) after the earlier committed; both are numbered in the
  same pass in id order, or the earlier in an earlier pass. (Ids follow insertion time
  across sessions because the identity's sequence caches no values: PostgreSQL's default,
  CACHE 1. A cache would let a session insert with an id drawn before another's committed
  insert.) A batch of record inserts its events' changes in the order the events came, so
  a group's changes keep their order within it too.
Writers thus hold only their groups' locks, so the replicas' transactions commit side by side
and share WAL flushes (group commit); the sequencer numbers a batch of writes per commit, and
a pass that finds nothing to number writes nothing and flushes nothing. Each row is written
twice (inserted, then numbered): a little more WAL and vacuuming. Pruning numbers what is
waiting first, and deletes only numbered rows.

Wake-ups. A transaction that changed states NOTIFYs channel chat_policy_changes, with the
schema's name as payload, right after its COMMIT, in the same round trip but a transaction
of its own: PostgreSQL serialises the commits of all transactions that NOTIFY on the server,
whatever their database (a lock on "database 0" taken before commit and held through it,
WAL flush included), so a NOTIFY inside the writing transaction would make writes take turns
again. The notifying transaction writes only its commit record (40 bytes) and, having written
nothing before it, does not wait for its flush, so its turn is short. A connection lost
between the two leaves a committed change without a wake-up: the change feed reads the log
at least every second anyway.
wait_for_changes LISTENs on a connection of its own, outside the pool, and ignores other
schemas' notifications; a listener it (re)opens may have missed commits made before its
LISTEN, so that call returns at once.

Rate limits. acquire counts a bucket's window and takes a slot in one transaction holding
the bucket's advisory lock, so replicas counting one bucket take turns; it holds no other
lock. Slots, recorded decisions and audit events are not part of the change log: no
sequence, no NOTIFY; an audited record inserts its audit event in its own transaction.

Pruning. Each batch (forgetting destroyed states, or deleting old changes, decisions, audit
events or rate-limit slots) is a transaction that first tries the schema's prune lock
(pg_try_advisory_xact_lock): a replica that finds another pruning stops its pass. Batches
re-check what they delete, so racing passes never forget a state twice; a transaction lock,
unlike a session lock held across batches, cannot outlive a failed pass on a pooled
connection and works through a transaction-pooling proxy.

Round trips. A call waits for the server once per read that its writes depend on, its
statements otherwise pipelined: record twice per batch of events submitted together (BEGIN, the
groups' locks and reads; then the writes, the change log, COMMIT and NOTIFY); get, get_many,
changes_after (the sequencer and the read), acquire, release, append_decisions and
append_audit_events once. record and acquire, the calls of every after-webhook and of every
rate-limited before-webhook, send each round trip as one message of several statements, values
bound on the client (psycopg's AsyncClientCursor), rather than a pipeline of statements, and
record a changed state's two writes as one call of write_group_state: about a third less of the
service's CPU per call (docs/speed.md). Batching record's events (stores/batches.py) shares
those two round trips, the commit and the NOTIFY among whatever events arrive while the
previous batch is written: at 16 records at a time, about a third of the machine's CPU per
record of writing each alone. Batches (decisions, audit events) keep executemany in a pipeline,
cheaper per row than a statement bound on the client. A pooled connection is checked (an empty
query, one more round trip) as it leaves the pool only when it has been idle there for
_RECENTLY_USED_S or longer, so one killed while idle (server restart, terminated backend) is
replaced rather than handed out; under load none is checked. One that died within that time
fails its call as StoreUnavailable, never retried (a COMMIT whose answer was lost may have
committed), and that call has every idle connection checked at once, so the next call gets a
live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import IsolationLevel
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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
from policy_service.stores.batches import Batcher
from policy_service.stores.deadline import capped
from policy_service.stores.decision_rows import (
    decision_from_row,
    insert_decisions,
    list_decisions_query,
    row_from_decision,
)
from policy_service.stores.postgres_schema import (
    ACQUIRE_SLOT,
    CHANGE_LOG_BOUNDS,
    CHANGES_AFTER,
    CHANGES_CHANNEL,
    COUNT,
    COUNT_SLOTS,
    DELETE_AUDIT_EVENTS,
    DELETE_CHANGES,
    DELETE_DECISIONS,
    DELETE_SLOTS,
    FORGET_DESTROYED,
    LOG_CHANGE,
    MIGRATIONS,
    RELEASE_SLOT,
    SELECT_GROUP,
    SELECT_MANY,
    SELECT_ONE,
    SEQUENCE_CHANGES,
    WRITE_STATE,
    list_full_query,
)
from policy_service.stores.state_rows import (
    change_from_row,
    key_tuple,
    row_from_state,
    state_from_row,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Item = TypeVar("Item")
Result = TypeVar("Result")
Row = tuple[Any, ...]

# Schema-wide advisory locks use the two-int form, so they never collide with the one-bigint
# group locks; the class is the first key, the schema name's hash the second, so stores in
# different schemas of one database never contend.
_MIGRATION_LOCK_CLASS = 0x43504D47  # "CPMG": taken by every replica before migrating
_SEQUENCER_LOCK_CLASS = 0x43505351  # "CPSQ": held by the sequencer through its commit
_PRUNE_LOCK_CLASS = 0x43505052  # "CPPR": tried by each pruning batch
_LOCK = "SELECT pg_advisory_xact_lock(%s, hashtext(coalesce(current_schema(), '')))"
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(%s, hashtext(coalesce(current_schema(), '')))"
# A rate-limit bucket's lock: a one-bigint lock, like a group's, on a hash of the schema and
# the bucket, seeded with a constant of its own ("CPRL") so that its keys are unrelated to
# every other hash (a collision with a group's key would only make the two wait).
_BUCKET_LOCK_SEED = 0x4350524C
_BUCKET_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended("
    "coalesce(current_schema(), '') || '/' || %(bucket)s, %(seed)s))"
)
_BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"
_INSERT_DECISION = insert_decisions("%s")
_INSERT_AUDIT = insert_audit_event("%s")
# record's first message: the transaction, its idle timeout, each group's lock and rows.
_IDLE_TIMEOUT = "SET LOCAL idle_in_transaction_session_timeout = %s"
_GROUP_LOCK = "SELECT pg_advisory_xact_lock(CAST(%s AS bigint))"
# Record's and acquire's batches (stores/batches.py): at most _BATCH_SIZE events or acquires
# each, bounding the locks one transaction holds and the size of its messages; one batch at a
# time, or up to _BATCH_LANES when those in flight have been for _BATCH_STALL_S (a batch
# waiting for a lock that another replica holds long holds up only itself). A batch takes a
# few milliseconds.
_BATCH_SIZE = 64
_BATCH_LANES = 4
_BATCH_STALL_S = 0.05
# How long record's transaction may wait for its second message (in the service, a few
# hundred microseconds) before PostgreSQL ends the session: a replica stopped or cut off
# between the two releases its groups' locks then, not when the server notices the
# connection is gone (TCP keepalive: hours by default).
_RECORD_IDLE_TIMEOUT_MS = 5000
# Sent after the COMMIT of a change, in a transaction of its own (see the module docstring).
_NOTIFY = f"SELECT pg_notify('{CHANGES_CHANNEL}', current_schema())"

# libpq waits forever for an unanswered connection unless told; a URL may set its own.
_CONNECT_TIMEOUT_S = 5
# A connection back in the pool for less than this long leaves it unchecked: it answered a
# moment ago, and a check costs a round trip, on every call under load.
_RECENTLY_USED_S = 1.0
# How long a call waits for a pooled connection before it is StoreUnavailable; while the
# server is known to be unreachable, and for the health check's ping, much less.
_POOL_TIMEOUT_S = 5.0
_UNREACHABLE_TIMEOUT_S = 0.25
_PING_TIMEOUT_S = 1.0
# A failed connection attempt of the pool is retried with backoff (1 s, doubling) for this
# long, then given up; the next call that waits starts a fresh attempt. This bounds the
# delay between the server's return and the pool's reconnection to a few seconds, whatever
# the outage's length (psycopg_pool's default gives up after 5 minutes, by then retrying
# only every minute or two).
_RECONNECT_TIMEOUT_S = 10.0
# Rows per pruning transaction: bounded locks and WAL per commit.
_PRUNE_BATCH = 1000
# Changes numbered per sequencer transaction, likewise.
_SEQUENCE_BATCH = 10_000
# How long close() waits for wait_for_changes to let go of the listener connection.
_CLOSE_WAIT_S = 1.0
# The pause after the listener connection failed, so a dead server is not hammered.
_LISTEN_RETRY_S = 1.0


class _PooledConnection(psycopg.AsyncConnection[Any]):
    """A pool's connection, stamped as it goes back to the pool (time.monotonic())."""

    returned_at = -math.inf


class PostgresGroupStateStore:
    """Group states, rate-limit slots and decisions in PostgreSQL, through a pool of
    asynchronous connections shared by the tasks of the event loop it was opened on."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        """Only the settings: `open` is what connects, migrates and opens the pool."""
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error:
            # The parser's message quotes the URL, password included: say nothing of it.
            raise StoreUnavailable("PostgreSQL: the database URL cannot be parsed") from None
        password = params.get("password")
        self._secret = str(password) if password else None
        self._url = url
        self._timeout: dict[str, Any] = {}
        if "connect_timeout" not in params:
            self._timeout["connect_timeout"] = _CONNECT_TIMEOUT_S
        # wait_for_changes' connection, opened by its first call; the lock is its owner's.
        self._listener: psycopg.AsyncConnection[Any] | None = None
        self._listener_lock = asyncio.Lock()
        self._listener_down = False
        self._closing = asyncio.Event()
        self._unreachable = False  # the last wait for a pooled connection timed out
        self._checks: set[asyncio.Task[None]] = set()  # the pool checks _check_soon started
        self._schema = ""
        self._records: Batcher[tuple[GroupEvent, AuditEvent | None], RecordOutcome] = self._batcher(
            self._record_together
        )
        self._acquires: Batcher[dict[str, Any], tuple[int, int | None]] = self._batcher(
            self._acquire_together
        )
        self._pool: AsyncConnectionPool[_PooledConnection] = AsyncConnectionPool(
            url,
            connection_class=_PooledConnection,
            kwargs={"autocommit": True, **self._timeout},
            min_size=min_size,
            max_size=max_size,
            open=False,
            configure=_configure,
            check=self._check_connection,
            timeout=_POOL_TIMEOUT_S,
            reconnect_timeout=_RECONNECT_TIMEOUT_S,
            name="chat-policy-store",
        )

    @classmethod
    async def open(
        cls, url: str, *, min_size: int = 1, max_size: int = 10
    ) -> PostgresGroupStateStore:
        """Connect, apply the missing migrations and open the pool, on the running loop."""
        store = cls(url, min_size=min_size, max_size=max_size)
        with store._translated_errors():
            # Migrate on a connection of its own: a wrong host or password fails at once with
            # libpq's own reason, rather than as a pool timeout.
            conn = await psycopg.AsyncConnection.connect(url, autocommit=True, **store._timeout)
            async with conn:
                await _configure(conn)
                store._schema = await _migrate(conn)
            try:
                await store._pool.open(wait=True, timeout=_POOL_TIMEOUT_S)
            except BaseException:
                await store._pool.close()
                raise
        return store

    async def record(self, event: GroupEvent, audit: AuditEvent | None = None) -> RecordOutcome:
        """Apply an event in a transaction holding its group's lock (every topic, too), with
        whatever other events were submitted while the previous batch was written.

        The lock is a transaction-scoped advisory lock on (sdk_app_id, group_id), not
        SELECT ... FOR UPDATE: row locks cannot cover rows that do not exist yet, so two
        first events for a new group (or a topic new to it) would both read nothing and the
        second upsert would overwrite the first. The advisory lock serialises every event of
        the group, existing rows or not, is released by COMMIT or ROLLBACK (also when the
        connection dies), and works through a transaction-pooling proxy. Read committed is
        required: each statement after the lock sees what the previous holder committed.
        A hash collision between two groups only makes them wait for each other.

        Events are written in batches (stores/batches.py), one batch at a time per store unless
        the one in flight is stalled, at most _BATCH_SIZE events each: one transaction takes the
        batch's group locks in ascending order (so that batches of several replicas cannot
        deadlock on them), reads its groups, applies its events in the order they came and
        writes them, so that its events share two round trips, one commit and one NOTIFY
        (_record_together). An event that cannot be applied (GroupNotFound) fails alone; when
        the database refuses a value or aborts the transaction (a deadlock), nothing of the
        batch committed, and each of its events is written again alone, so that only the refused
        one fails. The cost: a group whose lock another replica holds long holds up its batch's
        other events with it (the next batches go on beside it after _BATCH_STALL_S). A batch
        holds all its groups' locks until it commits, so its transaction sets a short
        idle_in_transaction_session_timeout (_RECORD_IDLE_TIMEOUT_MS): a replica stopped between
        its two messages lets go of them then.
        """
        return await self._records.submit((event, audit))

    def _batcher(
        self, together: Callable[[Sequence[Item]], Awaitable[list[Result | Exception]]]
    ) -> Batcher[Item, Result]:
        """Batches written by `together`, or else each alone (_together_or_alone)."""
        return Batcher(
            functools.partial(self._together_or_alone, together),
            max_batch=_BATCH_SIZE,
            max_lanes=_BATCH_LANES,
            stall_s=_BATCH_STALL_S,
        )

    async def _together_or_alone(
        self,
        together: Callable[[Sequence[Item]], Awaitable[list[Result | Exception]]],
        batch: Sequence[Item],
    ) -> list[Result | Exception]:
        """Each item's result or exception: written together in one transaction, or else,
        when the database refused a value or rolled the transaction back, each alone."""
        try:
            with self._translated_errors():
                return await together(batch)
        except (ValueNotStorable, StoreUnavailable) as error:
            if len(batch) == 1 or not _written_alone_after(error):
                return [error] * len(batch)
        return [(await self._together_or_alone(together, [one]))[0] for one in batch]

    async def _record_together(
        self, batch: Sequence[tuple[GroupEvent, AuditEvent | None]]
    ) -> list[RecordOutcome | Exception]:
        """Write the batch in one transaction, in two messages of several statements (the
        simple query protocol, parameters bound by psycopg's client-side cursor): BEGIN, the
        groups' locks and their reads; then a write_group_state call per changed state (its
        upsert and change-log row), the audit events, the COMMIT and the NOTIFY. A statement
        that fails skips the rest of its message: nothing commits, and the pool rolls the
        transaction back."""
        # Each group's stored states, by (sdk_app_id, group_id); the events change them as
        # they are applied, so that a group's later event sees its earlier one.
        stored: dict[tuple[Any, ...], dict[GroupKey, GroupState]] = {
            key_tuple(event.key)[:2]: {} for event, _ in batch
        }
        locks = sorted({_group_lock_key(event.key) for event, _ in batch})
        async with self._connection() as conn, psycopg.AsyncClientCursor(conn) as cursor:
            await cursor.execute(
                "; ".join(
                    [
                        _BEGIN,
                        _IDLE_TIMEOUT,
                        *[_GROUP_LOCK] * len(locks),
                        *[SELECT_GROUP] * len(stored),
                    ]
                ),
                [_RECORD_IDLE_TIMEOUT_MS, *locks, *(value for group in stored for value in group)],
            )
            for _ in range(2 + len(locks)):  # past BEGIN's, SET's and the locks' results
                cursor.nextset()
            for states in stored.values():
                for state in map(state_from_row, await cursor.fetchall()):
                    states[state.key] = state
                cursor.nextset()
            results: list[RecordOutcome | Exception] = []
            statements: list[str] = []
            params: list[Any] = []
            stamp = now_ms()
            for event, audit in batch:
                states = stored[key_tuple(event.key)[:2]]
                try:
                    outcome = apply_to_group(states.values(), event)
                except Exception as error:  # this event's alone (GroupNotFound)
                    results.append(error)
                    continue
                results.append(outcome)
                for state in outcome.changed:
                    states[state.key] = state
                    statements.append(WRITE_STATE)
                    params += (*row_from_state(state), stamp)
                if audit is not None:
                    statements.append(_INSERT_AUDIT)
                    params += row_from_audit(with_outcome(audit, event, outcome))
            statements.append("COMMIT")
            if any(isinstance(result, RecordOutcome) and result.changed for result in results):
                statements.append(_NOTIFY)
            await cursor.execute("; ".join(statements), params)
        return results

    async def get(self, key: GroupKey) -> GroupState | None:
        """The group's state, or None."""
        rows = await self._read(SELECT_ONE, key_tuple(key))
        return state_from_row(rows[0]) if rows else None

    async def get_many(self, keys: Sequence[GroupKey]) -> dict[GroupKey, GroupState]:
        """The states of those keys that have one: one query, the keys passed as arrays."""
        if not keys:
            return {}
        columns = list(zip(*map(key_tuple, dict.fromkeys(keys)), strict=True))
        rows = await self._read(SELECT_MANY, [list(column) for column in columns])
        states = map(state_from_row, rows)
        return {state.key: state for state in states}

    async def list_full(
        self,
        sdk_app_id: int,
        limit: int,
        after: FullGroupsCursor | None,
        full_since_at_most_ms: int | None = None,
    ) -> list[GroupState]:
        """One keyset page of full groups: an index range scan, whatever the depth."""
        query, params = list_full_query(sdk_app_id, limit, after, full_since_at_most_ms)
        return [state_from_row(row) for row in await self._read(query, params)]

    async def count(self, sdk_app_id: int) -> GroupCounts:
        """Count states, full ones and destroyed ones in one pass over the app's rows."""
        where, params = (" WHERE sdk_app_id = %s", (sdk_app_id,)) if sdk_app_id else ("", ())
        rows = await self._read(COUNT + where, params)
        assert rows, "an aggregate always returns a row"
        return GroupCounts(*rows[0])

    async def changes_after(self, sequence: int, limit: int) -> list[StateChange]:
        """Logged changes after `sequence`, oldest first, once every change committed
        before the call is numbered (_sequenced_read)."""
        with self._translated_errors():
            async with self._connection() as conn:
                rows = await _sequenced_read(conn, CHANGES_AFTER, (sequence, limit))
        return [change_from_row(row) for row in rows]

    async def change_log_bounds(self) -> ChangeLogBounds:
        """The pruning watermark and the newest sequence, read in one statement once every
        change committed before the call is numbered."""
        with self._translated_errors():
            async with self._connection() as conn:
                rows = await _sequenced_read(conn, CHANGE_LOG_BOUNDS, ())
        if not rows:
            raise StoreUnavailable("PostgreSQL: change_log_state has no row")
        return ChangeLogBounds(*rows[0])

    async def prune(self, destroyed_before_ms: int, changes_before_ms: int) -> PruneOutcome:
        """Forget old destroyed states, then delete old changes, a batch per transaction.

        Forgetting logs each state, stamped now, so a pass never deletes what it just logged
        (unless changes_before_ms is in the future). The pass stops, keeping what it did,
        at the first batch that finds another replica pruning.
        """
        deleted = 0
        with self._translated_errors():
            async with self._connection() as conn:
                # A batch short of full may have skipped states that events changed
                # meanwhile, with more to forget after them: forgetting ends with a batch
                # that forgot none.
                forgotten, finished = await _repeat(
                    lambda: _forget_batch(conn, destroyed_before_ms), until_below=1
                )
                if finished:
                    # Number what waits, so that old changes can go (only numbered ones do).
                    await _sequenced_read(conn, "SELECT 1", ())
                    deleted, _ = await _repeat(
                        lambda: _delete_changes_batch(conn, changes_before_ms),
                        until_below=_PRUNE_BATCH,
                    )
        return PruneOutcome(forgotten, deleted)

    async def acquire(
        self, bucket: str, *, window_ms: int, limit: int, now_ms: int, force: bool = False
    ) -> Acquisition:
        """Count the bucket's window and take a slot in a transaction holding the bucket's
        lock, so that callers on every replica take turns per bucket.

        The lock is a transaction-scoped advisory lock, as for record (rows cannot be locked
        before they exist; read committed lets the count, a statement after the lock, see the
        slots the previous holder committed). Acquires are written in batches, as record's
        events are (one transaction, the buckets' locks in ascending order of their names, an
        acquire refused or a batch rolled back written again alone): BEGIN, the locks, each
        acquire's count and insert (one statement) in the order they came, and COMMIT, in one
        message bound on the client. Slots are not part of the change log.
        """
        count, slot = await self._acquires.submit(
            {
                "bucket": bucket,
                "since": now_ms - window_ms,
                "now": now_ms,
                "limit": limit,
                "force": force,
            }
        )
        return Acquisition(count, count < limit, slot)

    async def _acquire_together(
        self, batch: Sequence[dict[str, Any]]
    ) -> list[tuple[int, int | None] | Exception]:
        """Take the batch's slots in one transaction, one message (see acquire)."""
        buckets = sorted({params["bucket"] for params in batch})
        async with self._connection() as conn, psycopg.AsyncClientCursor(conn) as cursor:
            locks = (
                cursor.mogrify(_BUCKET_LOCK, {"bucket": bucket, "seed": _BUCKET_LOCK_SEED})
                for bucket in buckets
            )
            slots = (cursor.mogrify(ACQUIRE_SLOT, params) for params in batch)
            await cursor.execute("; ".join([_BEGIN, *locks, *slots, "COMMIT"]))
            for _ in range(1 + len(buckets)):  # past BEGIN's result and the locks'
                cursor.nextset()
            results: list[tuple[int, int | None] | Exception] = []
            for _ in batch:
                row = await cursor.fetchone()
                if row is None:
                    raise StoreUnavailable("PostgreSQL: counting a rate-limit window gave no row")
                results.append((row[0], row[1]))
                cursor.nextset()
        return results

    async def count_slots(self, bucket: str, *, window_ms: int, now_ms: int) -> int:
        """Count the bucket's window in one statement, holding no lock and taking no slot."""
        rows = await self._read(COUNT_SLOTS, (bucket, now_ms - window_ms))
        assert rows, "an aggregate always returns a row"
        return int(rows[0][0])

    async def release(self, slot: int) -> None:
        """Delete the slot (nothing if it is gone already)."""
        with self._translated_errors():
            async with self._connection() as conn:
                await conn.execute(RELEASE_SLOT, (slot,))

    async def prune_slots(self, before_ms: int) -> int:
        """Delete slots stamped before before_ms, a batch per transaction; the pass stops at
        the first batch that finds another replica pruning."""
        with self._translated_errors():
            async with self._connection() as conn:
                deleted, _ = await _repeat(
                    lambda: _delete_batch(conn, DELETE_SLOTS, before_ms),
                    until_below=_PRUNE_BATCH,
                )
        return deleted

    async def append_decisions(self, records: Sequence[DecisionRecord]) -> None:
        """Insert the records in one transaction and one round trip, skipping known
        decision_ids. Inserted in decision_id order, so that two appends sharing records
        wait for each other rather than deadlock."""
        if not records:
            return
        rows = sorted(map(row_from_decision, records), key=lambda row: row[0])
        with self._translated_errors():
            async with (
                self._connection() as conn,
                _pipelined_transaction(conn),
                conn.cursor() as cursor,
            ):
                await cursor.executemany(_INSERT_DECISION, rows)

    async def list_decisions(
        self, query: DecisionQuery, limit: int, after: DecisionCursor | None
    ) -> list[DecisionRecord]:
        """One keyset page of decisions, newest first: an index range scan, whatever the depth."""
        sql, params = list_decisions_query(query, limit, after, "%s")
        return [decision_from_row(row) for row in await self._read(sql, params)]

    async def prune_decisions(self, before_ms: int) -> int:
        """Delete decisions made before before_ms, a batch per transaction; the pass stops
        at the first batch that finds another replica pruning."""
        with self._translated_errors():
            async with self._connection() as conn:
                deleted, _ = await _repeat(
                    lambda: _delete_batch(conn, DELETE_DECISIONS, before_ms),
                    until_below=_PRUNE_BATCH,
                )
        return deleted

    async def append_audit_events(self, events: Sequence[AuditEvent]) -> None:
        """Insert the events in one transaction and one round trip, skipping known audit_ids
        (in audit_id order, so that two appends sharing events never deadlock)."""
        if not events:
            return
        rows = sorted(map(row_from_audit, events), key=lambda row: str(row[0]))
        with self._translated_errors():
            async with (
                self._connection() as conn,
                _pipelined_transaction(conn),
                conn.cursor() as cursor,
            ):
                await cursor.executemany(_INSERT_AUDIT, rows)

    async def list_audit_events(
        self, query: AuditQuery, limit: int, after: AuditCursor | None
    ) -> list[AuditEvent]:
        """One keyset page of audit events, newest first: an index range scan."""
        sql, params = list_audit_query(query, limit, after, "%s")
        return [audit_from_row(row) for row in await self._read(sql, params)]

    async def prune_audit_events(self, before_ms: int) -> int:
        """Delete audit events that occurred before before_ms, a batch per transaction; the
        pass stops at the first batch that finds another replica pruning."""
        with self._translated_errors():
            async with self._connection() as conn:
                deleted, _ = await _repeat(
                    lambda: _delete_batch(conn, DELETE_AUDIT_EVENTS, before_ms),
                    until_below=_PRUNE_BATCH,
                )
        return deleted

    async def wait_for_changes(self, timeout_s: float) -> None:
        """Wait for a NOTIFY of this schema (others are ignored), at most timeout_s.

        A call that opens the listener (the first, or the first after a failure) returns at
        once: commits before its LISTEN sent it nothing, so the caller reads the log again.
        A failed listener is closed, and the call returns after a pause of up to a second.
        close() wakes a waiting call at once.
        """
        deadline = time.monotonic() + timeout_s
        async with self._listener_lock:
            try:
                if self._listener is None:
                    if not self._closing.is_set():
                        self._listener = await self._listen()
                    return
                while not self._closing.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    if await self._until_closing(self._notified(self._listener, remaining)):
                        return
            except psycopg.Error as error:
                await self._close_listener()
                if not self._listener_down:
                    self._listener_down = True
                    log.warning(
                        "PostgreSQL change notifications lost, reconnecting: %s",
                        self._message(error),
                    )
                pause = min(max(deadline - time.monotonic(), 0), _LISTEN_RETRY_S)
                await self._until_closing(asyncio.sleep(pause))
            finally:
                if self._closing.is_set():
                    await self._close_listener()

    async def _notified(self, listener: psycopg.AsyncConnection[Any], timeout_s: float) -> bool:
        """Whether a NOTIFY of this schema came within timeout_s."""
        async with contextlib.aclosing(listener.notifies(timeout=timeout_s)) as notifies:
            async for notify in notifies:
                if notify.payload == self._schema:
                    return True
        return False

    async def _until_closing(self, waiting: Coroutine[Any, Any, T]) -> T | None:
        """Await `waiting`, unless close() is called first (then cancel it: None)."""
        task = asyncio.ensure_future(waiting)
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({task, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                    await task
        return None if task.cancelled() else task.result()

    async def ping(self) -> None:
        """Run SELECT 1 on a pooled connection, waiting at most _PING_TIMEOUT_S for one."""
        with self._translated_errors():
            async with self._connection(_PING_TIMEOUT_S) as conn:
                await conn.execute("SELECT 1")

    async def close(self) -> None:
        """Finish the records submitted, wake wait_for_changes, close its listener and the
        pool."""
        await self._records.drain()
        await self._acquires.drain()
        self._closing.set()
        # A waiter busy connecting keeps the lock longer; it closes the listener itself.
        try:
            await asyncio.wait_for(self._listener_lock.acquire(), _CLOSE_WAIT_S)
        except TimeoutError:
            pass
        else:
            try:
                await self._close_listener()
            finally:
                self._listener_lock.release()
        await self._pool.close()

    async def _read(self, query: str, params: Sequence[Any] | dict[str, Any]) -> list[Row]:
        """The rows of one statement, on a pooled connection."""
        with self._translated_errors():
            async with self._connection() as conn:
                cursor = await conn.execute(query, params)
                return await cursor.fetchall()

    async def _listen(self) -> psycopg.AsyncConnection[Any]:
        """A new autocommit connection, outside the pool, listening for changes."""
        conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, **self._timeout)
        try:
            await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
        except BaseException:
            await conn.close()
            raise
        if self._listener_down:
            self._listener_down = False
            log.info("PostgreSQL change notifications received again")
        return conn

    async def _close_listener(self) -> None:
        """Close the listener connection, if open (the caller holds the listener lock)."""
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await listener.close()

    @asynccontextmanager
    async def _connection(self, timeout_s: float | None = None) -> AsyncIterator[_PooledConnection]:
        """A pooled connection, waiting for one at most timeout_s (default: the pool's
        timeout, or much less while the server is known to be unreachable) and never past
        the current call's deadline.

        Once a full pool timeout has passed without a connection, later calls wait only
        _UNREACHABLE_TIMEOUT_S until one gets a connection: during an outage calls fail in
        a fraction of a second instead of each waiting for the whole pool timeout, which
        would pile up calls and their memory while the server is away.

        The connection is stamped as it goes back, for _check_connection. A call that finds
        it broken has the pool check its idle connections at once, as _check_connection
        does: they have likely died with it.
        """
        if timeout_s is None:
            timeout_s = _UNREACHABLE_TIMEOUT_S if self._unreachable else _POOL_TIMEOUT_S
        wait_s = capped(timeout_s)
        try:
            async with self._pool.connection(timeout=wait_s) as conn:
                self._unreachable = False
                try:
                    yield conn
                except psycopg.OperationalError:
                    if conn.broken:
                        self._check_soon()
                    raise
                finally:
                    conn.returned_at = time.monotonic()
        except PoolTimeout:
            if wait_s >= _POOL_TIMEOUT_S:
                self._unreachable = True
            raise

    async def _check_connection(self, conn: _PooledConnection) -> None:
        """Check a connection as it leaves the pool (check_connection), unless it came back
        less than _RECENTLY_USED_S ago.

        A dead one (server restarted, backend terminated) is discarded and replaced, not
        handed out. One dead connection means the others idle beside it are dead too, so
        all of them are checked at once: otherwise the pool would hand them out one at a
        time, pausing about a second before each next try, and a large pool would time out.
        """
        if time.monotonic() - conn.returned_at < _RECENTLY_USED_S:
            return
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            await self._pool.check()
            raise

    def _check_soon(self) -> None:
        """Have the pool check its idle connections, in a task of its own (the caller is
        failing its call and should not wait for that)."""
        task = asyncio.get_running_loop().create_task(self._pool.check())
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    def _message(self, error: psycopg.Error) -> str:
        """The error's message, never quoting the URL's password."""
        message = str(error).strip() or type(error).__name__
        return message.replace(self._secret, "***") if self._secret else message

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        """Turn a refused value into ValueNotStorable (the server's primary message, cut: its
        detail quotes the values), and every other psycopg error (the pool's PoolTimeout and
        PoolClosed are psycopg OperationalErrors) into StoreUnavailable, never quoting the
        URL or its password."""
        try:
            yield
        except UnicodeEncodeError as error:
            raise ValueNotStorable(f"PostgreSQL cannot store this text: {error.reason}") from error
        except psycopg.Error as error:
            if _refuses_value(error):
                primary = error.diag.message_primary or self._message(error).partition("\n")[0]
                raise ValueNotStorable(
                    f"PostgreSQL cannot store a value: {echo(primary)}"
                ) from error
            raise StoreUnavailable(f"PostgreSQL: {self._message(error)}") from error


def _written_alone_after(error: ValueNotStorable | StoreUnavailable) -> bool:
    """Whether a batch's events are each written again alone after `error`: a value refused
    (one of them may be the only one at fault), or a transaction the server rolled back
    (SQLSTATE class 40: a deadlock, say). Not when the server may be gone: a COMMIT whose
    answer was lost may have committed."""
    if isinstance(error, ValueNotStorable):
        return True
    cause = error.__cause__
    return isinstance(cause, psycopg.Error) and (cause.sqlstate or "").startswith("40")


def _refuses_value(error: psycopg.Error) -> bool:
    """Whether `error` is about a value the server will never take, not about the server: a
    data exception (SQLSTATE class 22, and psycopg's own refusal of NUL in text), an
    integrity constraint violation (23) or a program limit exceeded (54, e.g. an index row
    too large); psycopg files class 54 among its OperationalErrors."""
    if isinstance(error, psycopg.DataError | psycopg.IntegrityError):
        return True
    return (error.sqlstate or "").startswith("54")


@asynccontextmanager
async def _pipelined_transaction(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[list[str]]:
    """A read-committed transaction whose statements, BEGIN and COMMIT included, are sent
    together and answered in one round trip, plus one per fetch of rows inside the block
    (a fetch sends what is queued and waits for the answer). Statements the block appends
    to the list it is given are sent after the COMMIT, in the same round trip, each in a
    transaction of its own (record's NOTIFY).

    Not conn.transaction() in a pipeline: psycopg syncs after its BEGIN and before its
    COMMIT, three round trips. The isolation level is spelled out because an explicit BEGIN
    on an autocommit connection would take the server's default, not _configure's. A failed
    statement leaves the transaction aborted; the pool rolls it back as the connection
    returns.
    """
    after_commit: list[str] = []
    async with conn.pipeline():
        await conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        yield after_commit
        await conn.execute("COMMIT")
        for statement in after_commit:
            await conn.execute(statement)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    """Read committed whatever the server's default: record's lock relies on it."""
    await conn.set_isolation_level(IsolationLevel.READ_COMMITTED)


async def _migrate(conn: psycopg.AsyncConnection[Any]) -> str:
    """Apply the missing migrations in one transaction, under the schema's migration lock.

    Replicas starting together queue on the lock; each one then reads the versions the
    previous one committed (read committed), so every migration runs exactly once. Any
    failure rolls back all of it, the versions table included. Returns the schema's name.
    """
    async with conn.transaction():
        await conn.execute(_LOCK, (_MIGRATION_LOCK_CLASS,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INT PRIMARY KEY,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute(
            "SELECT coalesce(max(version), 0), current_schema() FROM schema_migrations"
        )
        row = await cursor.fetchone()
        assert row is not None, "an aggregate always returns a row"
        version, schema = row
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
    return str(schema)


async def _log_changes(
    conn: psycopg.AsyncConnection[Any], states: Sequence[GroupState], *, forgotten: bool
) -> None:
    """Append the states to the change log, not yet numbered, in conn's transaction: no lock
    beyond the caller's. The caller NOTIFYs after its COMMIT."""
    stamp = now_ms()
    async with conn.cursor() as cursor:
        await cursor.executemany(
            LOG_CHANGE, [(stamp, *row_from_state(state), forgotten) for state in states]
        )


async def _sequenced_read(
    conn: psycopg.AsyncConnection[Any], query: str, params: Sequence[Any] | dict[str, Any]
) -> list[Row]:
    """Number the committed changes that have no sequence yet (the sequencer: its own
    transaction, holding the sequencer lock through its commit), then run `query`: one
    round trip, unless more than a batch awaited numbering.

    The lock is waited for, not tried: when the call returns, every change committed before
    it began has its sequence, so a reader woken by a NOTIFY reads the change that sent it.
    """
    while True:
        async with conn.pipeline():
            await conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            await conn.execute(_LOCK, (_SEQUENCER_LOCK_CLASS,))
            numbered = await conn.execute(SEQUENCE_CHANGES, {"batch": _SEQUENCE_BATCH})
            await conn.execute("COMMIT")
            rows = await (await conn.execute(query, params)).fetchall()
            count = await numbered.fetchone()
        if count is None or count[0] < _SEQUENCE_BATCH:
            return rows


async def _repeat(
    batch: Callable[[], Awaitable[int | None]], *, until_below: int
) -> tuple[int, bool]:
    """Run pruning batches until one does fewer than until_below rows: the rows done, and
    False if a batch found another replica pruning."""
    total = 0
    while (count := await batch()) is not None:
        total += count
        if count < until_below:
            return total, True
    return total, False


async def _forget_batch(conn: psycopg.AsyncConnection[Any], before_ms: int) -> int | None:
    """Forget up to a batch of old destroyed states, logging each (and NOTIFYing after the
    commit); None if another replica prunes."""
    async with conn.transaction():
        if not await _try_prune_lock(conn):
            return None
        cursor = await conn.execute(FORGET_DESTROYED, {"before": before_ms, "batch": _PRUNE_BATCH})
        rows = await cursor.fetchall()
        if rows:
            await _log_changes(conn, [state_from_row(row) for row in rows], forgotten=True)
    if rows:
        await conn.execute(_NOTIFY)
    return len(rows)


async def _delete_changes_batch(conn: psycopg.AsyncConnection[Any], before_ms: int) -> int | None:
    """Delete up to a batch of old numbered changes, raising the watermark; None if another
    replica prunes."""
    async with conn.transaction():
        if not await _try_prune_lock(conn):
            return None
        cursor = await conn.execute(DELETE_CHANGES, {"before": before_ms, "batch": _PRUNE_BATCH})
        row = await cursor.fetchone()
    if row is None:
        raise StoreUnavailable("PostgreSQL: change_log_state has no row")
    return int(row[0])


async def _delete_batch(
    conn: psycopg.AsyncConnection[Any], delete: str, before_ms: int
) -> int | None:
    """Run one batch of a DELETE taking `before` and `batch`; None if another replica prunes."""
    async with conn.transaction():
        if not await _try_prune_lock(conn):
            return None
        cursor = await conn.execute(delete, {"before": before_ms, "batch": _PRUNE_BATCH})
    return cursor.rowcount


async def _try_prune_lock(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Take the schema's prune lock for this transaction, unless another holds it."""
    row = await (await conn.execute(_TRY_LOCK, (_PRUNE_LOCK_CLASS,))).fetchone()
    return row is not None and bool(row[0])


def _group_lock_key(key: GroupKey) -> int:
    """The advisory-lock key of a group: a stable signed 64-bit hash of (app, group)."""
    name = f"chat-policy/group_state/{key.sdk_app_id}/{key.group_id}".encode()
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)
