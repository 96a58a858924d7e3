"""The PostgreSQL store's own concerns: migrations, pool, change-log order across replicas,
LISTEN/NOTIFY, pruning by several replicas, rate limits across replicas, plans and outages.

What every store does (events, pagination, concurrency) is in test_store_contract.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from policy_service.clock import now_ms
from policy_service.engine.decision_log import DecisionCursor, DecisionQuery, DecisionRecord
from policy_service.engine.rate_limit import Acquisition
from policy_service.errors import GroupNotFound, StoreUnavailable, ValueNotStorable
from policy_service.groups.change_log import ChangeLogBounds, PruneOutcome, StateChange
from policy_service.groups.state import (
    EventKind,
    GroupCounts,
    GroupEvent,
    GroupKey,
    GroupState,
    RecordOutcome,
)
from policy_service.groups.store import FullGroupsCursor
from policy_service.stores import postgres_store
from policy_service.stores.decision_rows import list_decisions_query
from policy_service.stores.postgres_schema import LOG_CHANGE, MIGRATIONS, list_full_query
from policy_service.stores.postgres_store import (
    _BUCKET_LOCK,
    _BUCKET_LOCK_SEED,
    PostgresGroupStateStore,
    _group_lock_key,
)
from policy_service.stores.state_rows import row_from_state
from policy_service.stores.store import open_store
from tests.e2e.postgres_cluster import PostgresBinaries, PostgresCluster, PostgresUnavailable
from tests.event_loops import LoopThread, blocking_open
from tests.postgres import PostgresSchema, with_params
from tests.threads import run_threads

KEY = GroupKey(1400000000, "@TGS#2J4SZEAEL")

# Opens a PostgreSQL store on the test's event loop: a Blocking view of it.
OpenPostgres = Callable[..., Any]


@pytest.fixture
def open_pg(event_loop_thread: LoopThread) -> OpenPostgres:
    """PostgresGroupStateStore.open(url, **options) on the test's event loop, seen through a
    blocking view (tests.event_loops.Blocking) so that plain and threaded test code calls it."""

    def open_one(url: str, **options: Any) -> Any:
        opener = functools.partial(PostgresGroupStateStore.open, **options)
        return blocking_open(event_loop_thread, opener, url)

    return open_one


FULL = GroupEvent(KEY, EventKind.FULL, 1000)


def closed_port() -> int:
    """A local TCP port nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_urls_open_a_postgres_store(
    postgres_schema: PostgresSchema, scheme: str, event_loop_thread: LoopThread
) -> None:
    """open_store gives the PostgreSQL store for postgresql:// and postgres:// URLs."""
    url = scheme + postgres_schema.url.removeprefix("postgresql")
    store = blocking_open(event_loop_thread, open_store, url)
    try:
        assert isinstance(store.target, PostgresGroupStateStore)
    finally:
        store.close()


def test_concurrent_replicas_apply_each_migration_once(
    postgres_schema: PostgresSchema, open_pg: OpenPostgres
) -> None:
    """Six stores opened at once on a fresh schema all succeed; each version is applied once."""
    barrier = threading.Barrier(6)
    stores: list[Any] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        barrier.wait()
        try:
            stores.append(open_pg(postgres_schema.url, min_size=1, max_size=2))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    assert len(stores) == 6
    with postgres_schema.connect() as conn:
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema = %s ORDER BY 2",
            (postgres_schema.name,),
        ).fetchall()
    assert [version for (version,) in versions] == list(range(1, len(MIGRATIONS) + 1))
    assert [table for (_, table) in tables] == [
        "audit_event",
        "change_log_state",
        "creation_decision",
        "group_state",
        "group_state_change",
        "rate_limit_slot",
        "schema_migrations",
    ]
    assert {schema for (schema, _) in tables} == {postgres_schema.name}


def test_state_survives_a_new_store_on_the_same_schema(
    postgres_schema: PostgresSchema, open_pg: OpenPostgres
) -> None:
    """A second store on the same schema sees what the first recorded, and migrates nothing."""
    first = open_pg(postgres_schema.url)
    outcome = first.record(FULL)
    first.close()
    second = open_pg(postgres_schema.url)
    try:
        assert second.get(KEY) == outcome.state
    finally:
        second.close()
    with postgres_schema.connect() as conn:
        row = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert row == (len(MIGRATIONS),)


def test_unreachable_server_is_store_unavailable_quickly(open_pg: OpenPostgres) -> None:
    """A port nothing listens on fails at once as StoreUnavailable, without the password."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="PostgreSQL") as failed:
        open_pg(f"postgresql://chat:s3cret@127.0.0.1:{closed_port()}/test")
    assert time.monotonic() - started < 10
    assert "s3cret" not in str(failed.value)
    assert "s3cret" not in repr(failed.value.__cause__)


def test_malformed_url_is_store_unavailable_without_the_url(open_pg: OpenPostgres) -> None:
    """A URL libpq cannot parse is StoreUnavailable, quoting neither it nor its password."""
    with pytest.raises(StoreUnavailable, match="cannot be parsed") as failed:
        open_pg("postgresql://chat:s3cret@[::1/test")
    assert "s3cret" not in str(failed.value)
    assert failed.value.__cause__ is None


def test_failing_statement_is_store_unavailable(
    postgres_schema: PostgresSchema, open_pg: OpenPostgres
) -> None:
    """A query error (here, the table dropped under the store) is StoreUnavailable."""
    store = open_pg(postgres_schema.url)
    try:
        with postgres_schema.connect() as conn:
            conn.execute("DROP TABLE group_state")
        with pytest.raises(StoreUnavailable, match="group_state"):
            store.record(FULL)
        with pytest.raises(StoreUnavailable, match="group_state"):
            store.get(KEY)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("group_id", "message"),
    [
        ("@TGS#\x00", "cannot contain NUL"),
        (os.urandom(5000).hex(), "index row"),  # 10 KB that do not compress
    ],
    ids=["nul", "10KB"],
)
def test_an_id_postgresql_cannot_keep_is_not_storable_not_unavailable(
    postgres_schema: PostgresSchema, group_id: str, message: str, open_pg: OpenPostgres
) -> None:
    """PostgreSQL refuses NUL in text and an index entry over its size limit: the store
    raises ValueNotStorable naming the server's reason without the value, writes nothing,
    and its one connection serves the next call."""
    store = open_pg(postgres_schema.url, min_size=1, max_size=1)
    try:
        with pytest.raises(ValueNotStorable, match=message) as raised:
            store.record(GroupEvent(GroupKey(1400000000, group_id), EventKind.FULL, 1000))
        assert group_id[:20] not in str(raised.value)
        assert store.count(0) == GroupCounts(0, 0, 0)
        assert store.record(FULL).applied
    finally:
        store.close()


def test_pool_recovers_after_server_connections_are_terminated(
    postgres_schema: PostgresSchema,
    open_pg: OpenPostgres,
) -> None:
    """With every connection of the store killed, a call within a few seconds succeeds."""
    store = open_pg(postgres_schema.url, min_size=4, max_size=4)
    try:
        store.record(FULL)
        # Only this test's sessions: its schema name is their application_name.
        with postgres_schema.connect() as conn:
            killed = conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND application_name = %s",
                (postgres_schema.application_name,),
            ).fetchone()
        assert killed == (4,)
        deadline = time.monotonic() + 5
        while True:
            try:
                state = store.get(KEY)
                break
            except StoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert state is not None
        assert store.record(GroupEvent(KEY, EventKind.FULL, 2000)).applied
    finally:
        store.close()


def explain(
    conn: psycopg.Connection[Any],
    sdk_app_id: int,
    after: FullGroupsCursor,
    full_since_at_most_ms: int | None = None,
) -> Any:
    """The executed plan (JSON) of a 50-row page of list_full after `after`."""
    query, params = list_full_query(sdk_app_id, 50, after, full_since_at_most_ms)
    row = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}", params).fetchone()
    assert row is not None
    return row[0][0]["Plan"]


@pytest.mark.parametrize("sdk_app_id", [0, 2])
def test_deep_page_is_an_index_range_scan(
    postgres_schema: PostgresSchema, sdk_app_id: int, open_pg: OpenPostgres
) -> None:
    """Deep in 20,000 groups, a page starts at its cursor in a partial index: as cheap as page 2."""
    store = open_pg(postgres_schema.url)
    store.close()
    with postgres_schema.connect() as conn:
        conn.execute(
            "INSERT INTO group_state SELECT 1 + i % 3, 'g' || lpad(i::text, 5, '0'), '',"
            " i % 10 <> 0, CASE WHEN i % 10 <> 0 THEN 1000 + i / 7 END, 5000, 1, false, 1"
            " FROM generate_series(0, 19999) AS i"
        )
        conn.execute("ANALYZE group_state")
        shallow = explain(conn, sdk_app_id, FullGroupsCursor(1000 + 1 // 7, GroupKey(2, "g00001")))
        deep = explain(conn, sdk_app_id, FullGroupsCursor(1000 + 19000 // 7, GroupKey(2, "g19000")))
    plans = json.dumps([shallow, deep])
    for plan in (shallow, deep):
        (scan,) = plan["Plans"]
        index = "group_state_app_full_since" if sdk_app_id else "group_state_full_since"
        assert (plan["Node Type"], scan["Node Type"]) == ("Limit", "Index Scan"), plans
        assert scan["Index Name"] == index, plans
        assert "> ROW(" in scan["Index Cond"], plans
        assert scan.get("Rows Removed by Filter", 0) == 0, plans
        assert plan["Actual Rows"] == 50, plans

    def blocks(plan: Any) -> int:
        return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])

    # A page's rows span a leaf or heap page more or fewer; a scan from the start reads 60+.
    assert blocks(deep) <= blocks(shallow) + 6, plans


# --- "full for longer than" -------------------------------------------------------------------

LISTED = range(20_000)


def listed_row(i: int) -> tuple[int, str, bool, int]:
    """Row i of the 20,000 EXPLAIN groups, as the SQL below makes it: app, id, full, since."""
    return 1 + i % 3, f"g{i:05}", i % 10 != 0, 1000 + i // 7


def insert_listed_groups(conn: psycopg.Connection[Any]) -> None:
    """Insert the 20,000 EXPLAIN groups (every tenth not full) and analyze the table."""
    conn.execute(
        "INSERT INTO group_state SELECT 1 + i % 3, 'g' || lpad(i::text, 5, '0'), '',"
        " i % 10 <> 0, CASE WHEN i % 10 <> 0 THEN 1000 + i / 7 END, 5000, 1, false, 1"
        " FROM generate_series(0, 19999) AS i"
    )
    conn.execute("ANALYZE group_state")


@pytest.mark.parametrize("sdk_app_id", [0, 2])
@pytest.mark.parametrize("cursor_at", [1, 19_003])  # full groups of app 2
def test_bounded_page_stops_its_index_scan_at_the_bound(
    postgres_schema: PostgresSchema, sdk_app_id: int, cursor_at: int, open_pg: OpenPostgres
) -> None:
    """A page under full_since_at_most_ms ends its index range there: no row past it is read."""
    open_pg(postgres_schema.url).close()
    app, group_id, full, since = listed_row(cursor_at)
    assert (app, full) == (2, True)
    after = FullGroupsCursor(since, GroupKey(app, group_id))
    at_most = since + 5
    expected = [
        (row_since, row_app, row_id)
        for row_app, row_id, full, row_since in map(listed_row, LISTED)
        if full
        and sdk_app_id in (0, row_app)
        and (row_since, row_app, row_id) > (since, app, group_id)
        and row_since <= at_most
    ]
    assert 0 < len(expected) < 50  # the bound, not the limit, ends the page
    with postgres_schema.connect() as conn:
        insert_listed_groups(conn)
        plan = explain(conn, sdk_app_id, after, at_most)
    text = json.dumps(plan)
    (scan,) = plan["Plans"]
    # Filtered by app, either index bounds the range: the planner picks by the app's share.
    indexes = {"group_state_full_since", "group_state_app_full_since"}
    assert scan["Node Type"] == "Index Scan", text
    assert scan["Index Name"] in (indexes if sdk_app_id else {"group_state_full_since"}), text
    assert "Filter" not in scan, text
    assert f"full_since_ms <= '{at_most}'" in scan["Index Cond"], text
    assert plan["Actual Rows"] == len(expected), text
    # A scan that went on past the bound would read the rest of the index: 20+ blocks.
    assert int(scan["Shared Hit Blocks"]) + int(scan["Shared Read Blocks"]) <= 8, text


# --- migration --------------------------------------------------------------------------------


def test_version_1_schema_is_migrated_keeping_its_rows(
    postgres_schema: PostgresSchema, open_pg: OpenPostgres
) -> None:
    """A schema left at version 1 keeps its states (clear_reason empty) and gains the log."""
    with postgres_schema.connect() as conn, conn.transaction():
        conn.execute(
            "CREATE TABLE schema_migrations ("
            " version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        conn.execute(MIGRATIONS[0])
        conn.execute("INSERT INTO schema_migrations (version) VALUES (1)")
        conn.execute(
            "INSERT INTO group_state VALUES (%s, %s, %s, true, 1000, 1500, 2, false, 1)",
            (KEY.sdk_app_id, KEY.group_id, KEY.topic_id),
        )
    store = open_pg(postgres_schema.url)
    try:
        old = GroupState(KEY, True, 1000, 1500, 2, False, EventKind.FULL, "")
        assert store.get(KEY) == old
        assert store.change_log_bounds() == ChangeLogBounds(0, 0)
        assert store.count(0) == GroupCounts(1, 1, 0)
        outcome = store.record(GroupEvent.cleared(KEY, 2000, "cap raised"))
        assert [change.state for change in store.changes_after(0, 10)] == [outcome.state]
        assert outcome.state.clear_reason == "cap raised"
    finally:
        store.close()
    with postgres_schema.connect() as conn:
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert versions == [(number,) for number in range(1, len(MIGRATIONS) + 1)]


def test_version_3_change_log_keeps_its_sequences_and_numbering_goes_on(
    postgres_schema: PostgresSchema,
    open_pg: OpenPostgres,
) -> None:
    """A change log written by version 3 (sequences taken at insert, some pruned) keeps its
    sequences through the upgrade; new changes are numbered after them."""
    with postgres_schema.connect() as conn, conn.transaction():
        conn.execute(
            "CREATE TABLE schema_migrations ("
            " version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for number, script in enumerate(MIGRATIONS[:3], start=1):
            conn.execute(script)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
        for n in range(1, 4):
            conn.execute(LOG_CHANGE, (n, *row_from_state(full_state_of(n)), False))
        conn.execute("DELETE FROM group_state_change WHERE sequence = 3")
        conn.execute("UPDATE change_log_state SET pruned_through = 3")
    store = open_pg(postgres_schema.url)
    try:
        old = store.changes_after(0, 10)
        assert [(c.sequence, c.state) for c in old] == [
            (1, full_state_of(1)),
            (2, full_state_of(2)),
        ]
        outcome = store.record(FULL)
        assert [(c.sequence, c.state) for c in store.changes_after(2, 10)] == [(4, outcome.state)]
        assert store.change_log_bounds() == ChangeLogBounds(3, 4)
    finally:
        store.close()


def full_state_of(n: int) -> GroupState:
    """A full state of group n."""
    return GroupState(group_of(n), True, 1000, 1000, 1, False, EventKind.FULL)


# --- change-log order -------------------------------------------------------------------------


def group_of(n: int) -> GroupKey:
    """The n-th of many distinct groups."""
    return GroupKey(KEY.sdk_app_id, f"@TGS#2A{n:07d}")


def await_condition(condition: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    """Poll `condition` until it holds; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def test_sequences_become_visible_in_order_across_replicas(
    postgres_schema: PostgresSchema,
    open_pg: OpenPostgres,
) -> None:
    """Eight writers on two replicas: a reader never gets a sequence at or below one it saw."""
    replicas = [open_pg(postgres_schema.url, max_size=5) for _ in range(2)]
    try:
        writers_done = threading.Event()
        seen: list[StateChange] = []
        went_back: list[tuple[int, int]] = []

        def write(thread: int) -> Callable[[], None]:
            def run() -> None:
                replica = replicas[thread % 2]
                for i in range(50):
                    replica.record(GroupEvent(group_of(thread * 100 + i), EventKind.FULL, 1000))

            return run

        def write_all() -> None:
            try:
                assert run_threads(*[write(thread) for thread in range(8)]) == []
            finally:
                writers_done.set()

        def read() -> None:
            last = 0
            while True:
                done = writers_done.is_set()
                batch = replicas[0].changes_after(last, 50)
                for change in batch:
                    if change.sequence <= last:
                        went_back.append((last, change.sequence))
                    last = max(last, change.sequence)
                    seen.append(change)
                if done and not batch:
                    return

        assert run_threads(write_all, read) == []
    finally:
        for replica in replicas:
            replica.close()
    assert went_back == []
    assert len({change.sequence for change in seen}) == len(seen) == 400
    keys = {group_of(thread * 100 + i) for thread in range(8) for i in range(50)}
    assert {change.state.key for change in seen} == keys


def log_change_uncommitted(conn: psycopg.Connection[Any], state: GroupState) -> None:
    """Append a change of `state` in conn's open transaction, as record does."""
    conn.execute(LOG_CHANGE, (now_ms(), *row_from_state(state), False))


def test_open_transaction_holds_back_neither_writers_nor_readers(
    postgres_schema: PostgresSchema,
    open_pg: OpenPostgres,
) -> None:
    """While a transaction with a change stays open, records commit at once and readers get
    their changes; the held change, committed last, comes after every sequence read before
    it, to a reader resuming from there and to one reading from the start."""
    store = open_pg(postgres_schema.url)
    held = GroupState(group_of(1), False, None, 500, 0, True, EventKind.DESTROYED)
    try:
        with postgres_schema.connect() as holder:
            with holder.transaction():
                log_change_uncommitted(holder, held)
                started = time.monotonic()
                first = store.record(FULL).state
                second = store.record(GroupEvent(group_of(2), EventKind.FULL, 1000)).state
                assert time.monotonic() - started < 2, "a record waited for the open one"
                before = store.changes_after(0, 10)
                assert [c.state for c in before] == [first, second]
                assert store.change_log_bounds().head == before[-1].sequence
            resumed = store.changes_after(before[-1].sequence, 10)
        assert [c.state for c in resumed] == [held]
        assert resumed[0].sequence > before[-1].sequence
        assert store.changes_after(0, 10) == before + resumed
    finally:
        store.close()


def test_readers_following_interleaved_commits_see_each_change_once_in_order(
    postgres_schema: PostgresSchema,
    open_pg: OpenPostgres,
) -> None:
    """Writers on two replicas and on raw connections that hold their change open for a
    while (so commits land out of insertion order) while two readers follow changes_after
    from their last sequence, in small batches. Each reader gets every change exactly once,
    in increasing sequence, the same list as a reading of the whole log afterwards; a reader
    resuming from any sequence a follower reached gets exactly the rest."""
    replicas = [open_pg(postgres_schema.url, max_size=4) for _ in range(2)]
    writers_done = threading.Event()
    followed: list[list[StateChange]] = [[], []]

    def record(thread: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(40):
                event = GroupEvent(group_of(thread * 1000 + i), EventKind.FULL, 1000)
                replicas[thread % 2].record(event)

        return run

    def hold(thread: int) -> Callable[[], None]:
        def run() -> None:
            pause = random.Random(thread)
            with postgres_schema.connect() as conn:
                for i in range(15):
                    state = GroupState(group_of(thread * 1000 + i), False, None, i, 0, True)
                    with conn.transaction():
                        log_change_uncommitted(conn, state)
                        time.sleep(pause.uniform(0, 0.05))

        return run

    def write_all() -> None:
        try:
            writers = [record(t) for t in range(4)] + [hold(t) for t in range(4, 8)]
            assert run_threads(*writers) == []
        finally:
            writers_done.set()

    def follow(reader: int) -> Callable[[], None]:
        def run() -> None:
            last = 0
            while True:
                done = writers_done.is_set()
                batch = replicas[reader].changes_after(last, 7)
                followed[reader] += batch
                if batch:
                    last = batch[-1].sequence
                elif done:
                    return

        return run

    try:
        assert run_threads(write_all, follow(0), follow(1)) == []
        whole = replicas[1].changes_after(0, 10_000)
        assert len(whole) == 4 * 40 + 4 * 15
        sequences = [change.sequence for change in whole]
        assert sequences == sorted(set(sequences))
        assert followed == [whole, whole]
        for at in range(0, len(whole), 17):
            assert replicas[0].changes_after(whole[at].sequence, 10_000) == whole[at + 1 :]
    finally:
        for replica in replicas:
            replica.close()


def waiting_for_lock(conn: psycopg.Connection[Any], schema: PostgresSchema, kind: str) -> int:
    """How many of the schema's sessions wait for a lock of that kind (advisory, ...)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = %s AND wait_event_type = 'Lock' AND wait_event = %s",
        (schema.application_name, kind),
    ).fetchone()
    assert row is not None
    return int(row[0])


# --- LISTEN/NOTIFY ----------------------------------------------------------------------------


@pytest.fixture
def other_schema(postgres_server_url: str) -> Iterator[PostgresSchema]:
    """A second new schema on the same server (another deployment), dropped after the test."""
    name = f"t_{uuid.uuid4().hex}"
    ident = sql.Identifier(name)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
    url = with_params(postgres_server_url, options=f"-csearch_path={name}", application_name=name)
    yield PostgresSchema(name, url, postgres_server_url)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))


def timed_wait(store: Any, timeout_s: float) -> float:
    """Call wait_for_changes(timeout_s); the seconds it took."""
    started = time.monotonic()
    store.wait_for_changes(timeout_s)
    return time.monotonic() - started


def test_change_through_one_replica_wakes_another(
    postgres_schema: PostgresSchema, open_pg: OpenPostgres
) -> None:
    """A record through replica A wakes B's 10 s wait early, and B's log read returns it."""
    a = open_pg(postgres_schema.url)
    b = open_pg(postgres_schema.url)
    stop = threading.Event()
    outcomes = []

    def record_later() -> None:
        if not stop.wait(0.3):
            outcomes.append(a.record(FULL))

    writer = threading.Thread(target=record_later)
    try:
        b.wait_for_changes(0)
        writer.start()
        assert timed_wait(b, 10) < 5
        writer.join()
        assert [change.state for change in b.changes_after(0, 10)] == [outcomes[0].state]
    finally:
        stop.set()
        if writer.ident is not None:
            writer.join()
        a.close()
        b.close()


def test_notifications_of_another_schema_are_ignored(
    postgres_schema: PostgresSchema, other_schema: PostgresSchema, open_pg: OpenPostgres
) -> None:
    """A change in another schema on the same server neither wakes the wait nor shows in the log."""
    mine = open_pg(postgres_schema.url)
    theirs = open_pg(other_schema.url)
    try:
        mine.wait_for_changes(0)
        theirs.record(FULL)
        with postgres_schema.connect() as conn:
            conn.execute("SELECT pg_notify('chat_policy_changes', 'no_such_schema')")
        assert timed_wait(mine, 0.5) >= 0.45
        assert mine.changes_after(0, 10) == []
        assert mine.get(KEY) is None
        assert [change.state.key for change in theirs.changes_after(0, 10)] == [KEY]
    finally:
        mine.close()
        theirs.close()


def listener_pids(schema: PostgresSchema) -> list[int]:
    """The backends of the schema's stores that listen for changes."""
    with schema.connect() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = %s AND query = 'LISTEN chat_policy_changes'",
            (schema.application_name,),
        ).fetchall()
    return [pid for (pid,) in rows]


def test_wait_survives_its_listener_being_terminated(
    postgres_schema: PostgresSchema, caplog: pytest.LogCaptureFixture, open_pg: OpenPostgres
) -> None:
    """With its listener killed, a wait returns within a second, logs once, then listens anew."""
    store = open_pg(postgres_schema.url)
    try:
        store.wait_for_changes(0)
        (killed,) = listener_pids(postgres_schema)
        with postgres_schema.connect() as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (killed,))
        with caplog.at_level(logging.WARNING, logger="policy_service.stores.postgres_store"):
            assert timed_wait(store, 10) < 5  # the failure, and a pause of at most 1 s
            assert timed_wait(store, 10) < 5  # a new listener: returns at once to re-read
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, caplog.text
        assert "notifications lost" in warnings[0].getMessage()
        (listening,) = listener_pids(postgres_schema)
        assert listening != killed
        assert timed_wait(store, 0.2) >= 0.15  # nothing pending
        store.record(FULL)
        assert timed_wait(store, 10) < 5
    finally:
        store.close()


def test_close_wakes_a_blocked_wait_and_ends_every_session(
    postgres_schema: PostgresSchema,
    open_pg: OpenPostgres,
) -> None:
    """close() makes a 30 s wait in another thread return promptly and ends the listener."""
    store = open_pg(postgres_schema.url)
    store.wait_for_changes(0)
    took: list[float] = []
    waiter = threading.Thread(target=lambda: took.append(timed_wait(store, 30)))
    waiter.start()
    time.sleep(0.3)  # let the waiter block: nothing observable says it has
    store.close()
    waiter.join(10)
    assert not waiter.is_alive()
    assert took[0] < 5
    store.wait_for_changes(10)  # returns at once after close
    with postgres_schema.connect() as conn:

        def sessions_left() -> int:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = %s AND pid <> pg_backend_pid()",
                (postgres_schema.application_name,),
            ).fetchone()
            assert row is not None
            return int(row[0])

        await_condition(lambda: sessions_left() == 0, "the store's sessions end")


# --- pruning ----------------------------------------------------------------------------------


def insert_destroyed_groups(schema: PostgresSchema, count: int, last_event_ms: int) -> None:
    """Insert `count` destroyed groups (group_of(0..count-1)) directly, bypassing the log."""
    with schema.connect() as conn:
        conn.execute(
            "INSERT INTO group_state SELECT %s, '@TGS#2A' || lpad(i::text, 7, '0'), '',"
            " false, NULL, %s, 0, true, 3, '' FROM generate_series(0, %s) AS i",
            (KEY.sdk_app_id, last_event_ms, count - 1),
        )


def test_two_replicas_pruning_at_once_forget_each_group_once(
    postgres_schema: PostgresSchema,
    open_pg: OpenPostgres,
) -> None:
    """Two replicas pruning 2,500 destroyed groups (three batches) log one forgetting per group."""
    replicas = [open_pg(postgres_schema.url) for _ in range(2)]
    try:
        insert_destroyed_groups(postgres_schema, 2500, 1000)
        kept = replicas[0].record(GroupEvent(GroupKey(7, "recent"), EventKind.DESTROYED, 9000))
        barrier = threading.Barrier(2)
        outcomes: list[PruneOutcome] = []

        def prune(replica: Any) -> Callable[[], None]:
            def run() -> None:
                barrier.wait()
                outcomes.append(replica.prune(5000, 0))

            return run

        assert run_threads(*map(prune, replicas)) == []
        assert sum(outcome.forgotten for outcome in outcomes) == 2500
        assert sum(outcome.changes_deleted for outcome in outcomes) == 0
        logged = replicas[1].changes_after(1, 10_000)
        assert all(change.forgotten and change.state.destroyed for change in logged)
        forgotten = Counter(change.state.key for change in logged)
        assert forgotten == Counter(group_of(i) for i in range(2500))
        assert replicas[1].count(0) == GroupCounts(1, 0, 1)
        assert replicas[1].get(kept.state.key) == kept.state
    finally:
        for replica in replicas:
            replica.close()


def test_batch_cut_short_by_a_concurrent_event_does_not_end_the_pass(
    postgres_schema: PostgresSchema,
    open_pg: OpenPostgres,
) -> None:
    """A state revived while the first batch waits for it is skipped, and the rest still go."""
    store = open_pg(postgres_schema.url)
    insert_destroyed_groups(postgres_schema, 1500, 1000)
    outcomes: list[PruneOutcome] = []
    pruner = threading.Thread(target=lambda: outcomes.append(store.prune(5000, 0)))
    revive = "UPDATE group_state SET destroyed = %s, last_event_time_ms = %s WHERE group_id = %s"
    try:
        with postgres_schema.connect() as reviver, postgres_schema.connect() as observer:
            # The oldest destroyed state, so the first batch's first; then revived, uncommitted.
            reviver.execute(revive, (True, 900, group_of(0).group_id))
            with reviver.transaction():
                reviver.execute(revive, (False, 2000, group_of(0).group_id))
                pruner.start()
                await_condition(
                    lambda: waiting_for_lock(observer, postgres_schema, "transactionid") == 1,
                    "the prune waits for the revived row",
                )
            pruner.join()
        assert outcomes == [PruneOutcome(1499, 0)]
        assert store.count(0) == GroupCounts(1, 0, 0)
    finally:
        if pruner.ident is not None:
            pruner.join()
        store.close()


def test_log_replays_to_the_states_while_pruning_races_writers(
    postgres_schema: PostgresSchema,
    open_pg: OpenPostgres,
) -> None:
    """Pruning 3,000 groups while 4 threads revive some: no deadlock, none left, log true."""
    pruner = open_pg(postgres_schema.url)
    writer = open_pg(postgres_schema.url, max_size=4)
    revived = {thread: range(thread, 3000, 12) for thread in range(4)}
    try:
        insert_destroyed_groups(postgres_schema, 3000, 1000)

        def write(thread: int) -> Callable[[], None]:
            def run() -> None:
                for i in revived[thread]:
                    writer.record(GroupEvent(group_of(i), EventKind.FULL, 2000 + i))

            return run

        def prune() -> None:
            assert pruner.prune(5000, 0).forgotten > 0

        assert run_threads(prune, *[write(thread) for thread in range(4)]) == []
        # Batches cut short by revived groups did not end the pass: no old destroyed state left.
        assert writer.count(0).destroyed == 0
        replayed: dict[GroupKey, GroupState | None] = {}
        for change in writer.changes_after(0, 100_000):
            replayed[change.state.key] = None if change.forgotten else change.state
        stored = writer.get_many(list(replayed))
        assert {key: stored.get(key) for key in replayed} == replayed
        assert set(stored) == {group_of(i) for numbers in revived.values() for i in numbers}
    finally:
        pruner.close()
        writer.close()


# --- rate limits and the decision log ---------------------------------------------------------


def test_two_replicas_racing_on_one_bucket_take_exactly_the_limit(
    postgres_schema: PostgresSchema,
    open_pg: OpenPostgres,
) -> None:
    """Eight threads on two replicas, 25 acquires each at limit 50: exactly 50 slots are taken."""
    replicas = [open_pg(postgres_schema.url, max_size=4) for _ in range(2)]
    results: list[Acquisition] = []
    barrier = threading.Barrier(8)

    def race(replica: Any) -> Callable[[], None]:
        def run() -> None:
            barrier.wait()
            for _ in range(25):
                results.append(replica.acquire("race", window_ms=60_000, limit=50, now_ms=10_000))

        return run

    try:
        assert run_threads(*[race(replicas[thread % 2]) for thread in range(8)]) == []
    finally:
        for replica in replicas:
            replica.close()
    taken = [result for result in results if result.within_limit]
    assert len(results) == 200
    assert sorted(result.count_before for result in taken) == list(range(50))
    assert all(
        result == Acquisition(50, False, None) for result in results if not result.within_limit
    )
    with postgres_schema.connect() as conn:
        row = conn.execute("SELECT count(*) FROM rate_limit_slot WHERE bucket = 'race'").fetchone()
    assert row == (50,)


def test_acquire_waits_only_for_its_own_buckets_lock(
    postgres_schema: PostgresSchema, open_pg: OpenPostgres
) -> None:
    """While another session holds a bucket's lock, its acquire waits; another bucket's does not."""
    store = open_pg(postgres_schema.url)
    got: list[Acquisition] = []
    waiter = threading.Thread(
        target=lambda: got.append(store.acquire("busy", window_ms=10, limit=1, now_ms=1000))
    )
    try:
        with postgres_schema.connect() as holder, postgres_schema.connect() as observer:
            with holder.transaction():
                holder.execute(_BUCKET_LOCK, {"bucket": "busy", "seed": _BUCKET_LOCK_SEED})
                waiter.start()
                await_condition(
                    lambda: waiting_for_lock(observer, postgres_schema, "advisory") == 1,
                    "the acquire waits for its bucket's lock",
                )
                free = store.acquire("free", window_ms=10, limit=1, now_ms=1000)
                assert (free.count_before, free.within_limit) == (0, True)
                assert waiter.is_alive()
                assert got == []
            waiter.join()
        assert [(a.count_before, a.within_limit) for a in got] == [(0, True)]
    finally:
        if waiter.ident is not None:
            waiter.join()
        store.close()


def test_record_waits_only_for_its_own_groups_lock(
    postgres_schema: PostgresSchema, open_pg: OpenPostgres
) -> None:
    """While another session holds a group's lock, its record waits (its batch with it);
    records of other groups, submitted after, are written in a batch beside it."""
    store = open_pg(postgres_schema.url)
    got: list[RecordOutcome] = []
    waiter = threading.Thread(target=lambda: got.append(store.record(FULL)))
    try:
        with postgres_schema.connect() as holder, postgres_schema.connect() as observer:
            with holder.transaction():
                holder.execute("SELECT pg_advisory_xact_lock(%s)", (_group_lock_key(KEY),))
                waiter.start()
                await_condition(
                    lambda: waiting_for_lock(observer, postgres_schema, "advisory") == 1,
                    "the record waits for its group's lock",
                )
                others = [GroupEvent(group_of(n), EventKind.FULL, 1000) for n in range(3)]
                assert all(outcome.applied for outcome in map(store.record, others))
                assert waiter.is_alive()
                assert got == []
            waiter.join()
        assert [outcome.state for outcome in got] == [store.get(KEY)]
    finally:
        if waiter.ident is not None:
            waiter.join()
        store.close()


def acquire_together(loop: LoopThread, store: Any, buckets: Sequence[str], limit: int) -> list[Any]:
    """Acquire a slot of each bucket at once (window 10 ms at 1000): each one's acquisition
    or exception."""
    acquire = functools.partial(store.target.acquire, window_ms=10, limit=limit, now_ms=1000)
    return at_once(loop, map(acquire, buckets))


def test_acquires_submitted_together_share_one_round_trip_in_their_order(
    proxy: RoundTripCounter,
    monkeypatch: pytest.MonkeyPatch,
    open_pg: OpenPostgres,
    event_loop_thread: LoopThread,
) -> None:
    """Eight concurrent acquires, three of one bucket, are one transaction of one round
    trip: that bucket's are counted in the order they came, the third over the limit."""
    monkeypatch.setattr(postgres_store, "_RECENTLY_USED_S", 60.0)
    store = open_pg(proxy.url, min_size=1, max_size=1)
    buckets = ["a", "hot", "b", "hot", "c", "hot", "d", "e"]
    try:
        store.ping()
        got: list[Any] = []
        with_one_trip = proxy.count(
            lambda: got.extend(acquire_together(event_loop_thread, store, buckets, limit=2))
        )
        assert with_one_trip == 1
        counted = [(a.count_before, a.within_limit, a.slot is not None) for a in got]
        assert counted[1::2] == [
            (0, True, True),
            (1, True, True),
            (2, False, False),
            (0, True, True),
        ]
        assert store.count_slots("hot", window_ms=10, now_ms=1000) == 2
    finally:
        store.close()


def test_a_bucket_refused_in_a_batch_fails_only_its_own_acquire(
    postgres_schema: PostgresSchema, open_pg: OpenPostgres, event_loop_thread: LoopThread
) -> None:
    """A bucket PostgreSQL cannot store (NUL in text) fails its acquire alone as
    ValueNotStorable; the others submitted with it take their slots."""
    store = open_pg(postgres_schema.url)
    try:
        first, refused, third = acquire_together(
            event_loop_thread, store, ["a", "bad\x00", "b"], limit=1
        )
        assert isinstance(refused, ValueNotStorable)
        assert isinstance(first, Acquisition) and isinstance(third, Acquisition)
        assert (first.within_limit, third.within_limit) == (True, True)
        assert [store.count_slots(b, window_ms=10, now_ms=1000) for b in "ab"] == [1, 1]
    finally:
        store.close()


def test_failed_acquire_is_store_unavailable_and_its_connection_serves_on(
    postgres_schema: PostgresSchema, caplog: pytest.LogCaptureFixture, open_pg: OpenPostgres
) -> None:
    """A failed acquire is StoreUnavailable; the store's one connection then serves a record."""
    store = open_pg(postgres_schema.url, min_size=1, max_size=1)
    try:
        with postgres_schema.connect() as conn:
            conn.execute("DROP TABLE rate_limit_slot")
        with pytest.raises(StoreUnavailable, match="rate_limit_slot"):
            store.acquire("b", window_ms=10, limit=1, now_ms=1000)
        assert store.record(FULL).applied
        # The pool warns when a connection comes back inside a transaction.
        assert [r.message for r in caplog.records if r.name == "psycopg.pool"] == []
    finally:
        store.close()


DECISION_INDEXES = {
    "unfiltered": (DecisionQuery(), "creation_decision_time"),
    "sdk_app_id": (DecisionQuery(sdk_app_id=2), "creation_decision_app_time"),
    "operator_account": (DecisionQuery(operator_account="op0"), "creation_decision_operator_time"),
}


@pytest.mark.parametrize("filtered", DECISION_INDEXES.values(), ids=DECISION_INDEXES.keys())
def test_deep_decision_page_is_a_backward_index_range_scan(
    postgres_schema: PostgresSchema, filtered: tuple[DecisionQuery, str], open_pg: OpenPostgres
) -> None:
    """Deep in 20,000 decisions, a page (unfiltered, or of a 1% app or operator) starts at its
    cursor in its index, read backwards: as cheap as the first pages."""
    query, index = filtered
    open_pg(postgres_schema.url).close()

    def explain(conn: psycopg.Connection[Any], i: int) -> Any:
        after = DecisionCursor(1000 + i // 3, f"d{i:05}")
        sql, params = list_decisions_query(query, 50, after, "%s")
        row = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", params).fetchone()
        assert row is not None
        return row[0][0]["Plan"]

    with postgres_schema.connect() as conn:
        conn.execute(
            "INSERT INTO creation_decision SELECT 'd' || lpad(i::text, 5, '0'), 1000 + i / 3,"
            " CASE WHEN i % 100 = 0 THEN 2 ELSE 1 END, 'op' || (i % 100), 'allow', 0, '',"
            " 'default', '', 'rev', '[]', 1, '{}' FROM generate_series(0, 19999) AS i"
        )
        conn.execute("ANALYZE creation_decision")
        shallow, deep = explain(conn, 19_980), explain(conn, 10_000)
    plans = json.dumps([shallow, deep])
    for plan in (shallow, deep):
        (scan,) = plan["Plans"]
        assert (plan["Node Type"], scan["Node Type"]) == ("Limit", "Index Scan"), plans
        assert (scan["Index Name"], scan["Scan Direction"]) == (index, "Backward"), plans
        assert "< ROW(" in scan["Index Cond"], plans
        assert "Filter" not in scan, plans
        assert plan["Actual Rows"] == 50, plans

    def blocks(plan: Any) -> int:
        return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])

    assert blocks(deep) <= blocks(shallow) + 6, plans


# --- round trips, and the pool's connection checks ------------------------------------------


class RoundTripCounter:
    """A TCP proxy to the schema's server that counts round trips: the times the server
    answers a connection whose client has sent something since the server last answered."""

    def __init__(self, url: str) -> None:
        params = conninfo_to_dict(url)
        self._server = (str(params.get("host") or "localhost"), int(params.get("port") or 5432))
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        self.url = make_conninfo(url, host="127.0.0.1", port=str(port))
        self.round_trips = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def count(self, call: Callable[[], object]) -> int:
        """The round trips that call() takes."""
        before = self.round_trips
        call()
        return self.round_trips - before

    def close(self) -> None:
        """Stop accepting, and close every proxied connection."""
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._server)
                with self._lock:
                    self._sockets += [client, server]
                client_spoke = [False]
                for source, sink, from_client in ((client, server, True), (server, client, False)):
                    threading.Thread(
                        target=self._pump,
                        args=(source, sink, from_client, client_spoke),
                        daemon=True,
                    ).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        from_client: bool,
        client_spoke: list[bool],
    ) -> None:
        """Forward source to sink, counting before forwarding: a reply cannot overtake the
        request it answers, and a call's round trips are all counted when it returns."""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                with self._lock:
                    if from_client:
                        client_spoke[0] = True
                    elif client_spoke[0]:
                        client_spoke[0] = False
                        self.round_trips += 1
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxy(postgres_schema: PostgresSchema) -> Iterator[RoundTripCounter]:
    """A RoundTripCounter in front of the test's schema."""
    counter = RoundTripCounter(postgres_schema.url)
    yield counter
    counter.close()


def decision(decision_id: str) -> DecisionRecord:
    """A decision record with that id."""
    return DecisionRecord(
        decision_id, 1000, KEY.sdk_app_id, "op", "allow", 0, "", "default", "", "rev", (), 1, "{}"
    )


def terminate_sessions(schema: PostgresSchema) -> int:
    """Terminate the schema's other sessions, waiting until each is gone: how many."""
    with schema.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
            " FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()",
            (schema.application_name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_connection_used_a_moment_ago_is_not_checked(
    proxy: RoundTripCounter, monkeypatch: pytest.MonkeyPatch, open_pg: OpenPostgres
) -> None:
    """A get takes one round trip on a connection used a moment ago, two (the check) on a new
    one or one idle for _RECENTLY_USED_S."""
    monkeypatch.setattr(postgres_store, "_RECENTLY_USED_S", 60.0)
    store = open_pg(proxy.url, min_size=1, max_size=1)
    try:
        assert proxy.count(lambda: store.get(KEY)) == 2
        assert proxy.count(lambda: store.get(KEY)) == 1
        monkeypatch.setattr(postgres_store, "_RECENTLY_USED_S", 0.2)
        time.sleep(0.3)
        assert proxy.count(lambda: store.get(KEY)) == 2
    finally:
        store.close()


def test_record_takes_two_round_trips_and_other_calls_one(
    proxy: RoundTripCounter, monkeypatch: pytest.MonkeyPatch, open_pg: OpenPostgres
) -> None:
    """On a connection used a moment ago, record takes two round trips, applied or not, and
    get, get_many, acquire, release and append_decisions one each."""
    monkeypatch.setattr(postgres_store, "_RECENTLY_USED_S", 60.0)
    store = open_pg(proxy.url, min_size=1, max_size=1)
    try:
        store.ping()  # the new connection's check
        assert proxy.count(lambda: store.record(FULL)) == 2
        assert proxy.count(lambda: store.record(FULL)) == 2  # a redelivery: nothing to write
        assert store.changes_after(0, 10)[0].state == store.get(KEY)
        assert proxy.count(lambda: store.get(KEY)) == 1
        assert proxy.count(lambda: store.get_many([KEY, group_of(1)])) == 1
        acquired: list[Acquisition] = []

        def acquire() -> None:
            acquired.append(store.acquire("b", window_ms=10, limit=1, now_ms=1000))

        assert proxy.count(acquire) == 1
        (slot,) = [acquisition.slot for acquisition in acquired]
        assert slot is not None
        assert proxy.count(lambda: store.release(slot)) == 1
        assert proxy.count(lambda: store.append_decisions([decision("a"), decision("b")])) == 1
        assert store.acquire("b", window_ms=10, limit=1, now_ms=1000).count_before == 0
        assert len(store.list_decisions(DecisionQuery(), 10, None)) == 2
    finally:
        store.close()


def at_once(loop: LoopThread, calls: Iterable[Awaitable[Any]]) -> list[Any]:
    """Await the store's calls at once on the loop, as concurrent RPCs would: each one's
    result or exception."""

    async def gathered() -> list[Any]:
        return list(await asyncio.gather(*calls, return_exceptions=True))

    return loop.run(gathered())


def record_together(loop: LoopThread, store: Any, events: Sequence[GroupEvent]) -> list[Any]:
    """Record the events at once: each one's outcome or exception."""
    return at_once(loop, (store.target.record(event) for event in events))


def test_records_submitted_together_share_two_round_trips_in_their_order(
    proxy: RoundTripCounter,
    monkeypatch: pytest.MonkeyPatch,
    open_pg: OpenPostgres,
    event_loop_thread: LoopThread,
) -> None:
    """Sixteen concurrent records, three of them for one group, are one transaction of two
    round trips: each gets its own outcome, the one group's events applied in the order they
    came, and the change log has every change, the group's in that order."""
    monkeypatch.setattr(postgres_store, "_RECENTLY_USED_S", 60.0)
    store = open_pg(proxy.url, min_size=1, max_size=1)
    events = [GroupEvent(group_of(n), EventKind.FULL, 1000) for n in range(13)]
    events[4:4] = [GroupEvent(KEY, EventKind.FULL, 1000 + n) for n in range(3)]
    try:
        store.ping()  # the new connection's check
        outcomes: list[Any] = []
        assert (
            proxy.count(lambda: outcomes.extend(record_together(event_loop_thread, store, events)))
            == 2
        )
        assert [outcome.state.key for outcome in outcomes] == [event.key for event in events]
        assert [outcome.state.full_event_count for outcome in outcomes[4:7]] == [1, 2, 3]
        assert all(outcome.applied for outcome in outcomes)
        changes = store.changes_after(0, 100)
        assert [change.state for change in changes] == [outcome.state for outcome in outcomes]
        assert store.get(KEY) == outcomes[6].state
    finally:
        store.close()


def test_a_value_refused_in_a_batch_fails_only_its_own_record(
    postgres_schema: PostgresSchema, open_pg: OpenPostgres, event_loop_thread: LoopThread
) -> None:
    """An event time PostgreSQL cannot store fails its record alone as ValueNotStorable; the
    records submitted with it are written (each again alone, after the batch rolled back)."""
    store = open_pg(postgres_schema.url)
    refused = GroupEvent(group_of(1), EventKind.FULL, 2**63)
    events = [FULL, refused, GroupEvent(group_of(2), EventKind.FULL, 1000)]
    try:
        first, error, third = record_together(event_loop_thread, store, events)
        assert isinstance(error, ValueNotStorable)
        assert isinstance(first, RecordOutcome) and isinstance(third, RecordOutcome)
        assert store.get_many([KEY, group_of(1), group_of(2)]) == {
            KEY: first.state,
            group_of(2): third.state,
        }
        assert [change.state for change in store.changes_after(0, 10)] == [first.state, third.state]
    finally:
        store.close()


def test_a_clear_of_an_unknown_group_in_a_batch_fails_alone_in_the_same_round_trips(
    proxy: RoundTripCounter,
    monkeypatch: pytest.MonkeyPatch,
    open_pg: OpenPostgres,
    event_loop_thread: LoopThread,
) -> None:
    """A clear of a group with no state is GroupNotFound for its caller only; the batch's
    other records are written in its two round trips."""
    monkeypatch.setattr(postgres_store, "_RECENTLY_USED_S", 60.0)
    store = open_pg(proxy.url, min_size=1, max_size=1)
    events = [
        FULL,
        GroupEvent.cleared(group_of(1), 2000, "ops"),
        GroupEvent(group_of(2), EventKind.FULL, 1000),
    ]
    try:
        store.ping()
        results: list[Any] = []
        assert (
            proxy.count(lambda: results.extend(record_together(event_loop_thread, store, events)))
            == 2
        )
        assert isinstance(results[1], GroupNotFound)
        assert store.get_many([KEY, group_of(1), group_of(2)]) == {
            KEY: results[0].state,
            group_of(2): results[2].state,
        }
    finally:
        store.close()


def test_a_replica_stalled_between_its_two_messages_lets_go_of_its_groups(
    postgres_schema: PostgresSchema, open_pg: OpenPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that stops between record's two messages (its loop blocked here; stopped or
    cut off in life) holds its groups' locks only until PostgreSQL's idle-in-transaction
    timeout ends its session: its record fails as StoreUnavailable, nothing of it is written,
    and the group is free for the next record."""
    monkeypatch.setattr(postgres_store, "_RECORD_IDLE_TIMEOUT_MS", 200)
    store = open_pg(postgres_schema.url)
    applied = postgres_store.apply_to_group

    def stalled(*args: Any) -> Any:
        time.sleep(1.0)
        return applied(*args)

    try:
        monkeypatch.setattr(postgres_store, "apply_to_group", stalled)
        with pytest.raises(StoreUnavailable, match="idle-in-transaction timeout"):
            store.record(FULL)
        monkeypatch.setattr(postgres_store, "apply_to_group", applied)
        with postgres_schema.connect() as other:
            other.execute("SET lock_timeout = '1s'")
            assert other.execute(
                "SELECT pg_advisory_xact_lock(%s)", (_group_lock_key(KEY),)
            ).fetchone()
        assert store.get(KEY) is None
        assert store.record(FULL).state.full_event_count == 1
    finally:
        store.close()


def deadlocks(schema: PostgresSchema) -> int:
    """The deadlocks PostgreSQL has detected in the schema's database so far."""
    with schema.connect() as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def sessions(schema: PostgresSchema) -> list[int]:
    """The process IDs of the schema's sessions but this one."""
    with schema.connect() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            " AND pid <> pg_backend_pid()",
            (schema.application_name,),
        ).fetchall()
    return [int(row[0]) for row in rows]


def test_batches_of_two_replicas_on_the_same_groups_in_opposite_orders_never_deadlock(
    postgres_schema: PostgresSchema, open_pg: OpenPostgres, event_loop_thread: LoopThread
) -> None:
    """Two replicas each record a batch of events for the same twenty groups, one in the
    reverse order of the other, again and again: the groups' locks are taken in one order,
    so no transaction ever waits for another in a cycle (PostgreSQL detects none), and each
    group counts every event applied to it (of each round's two, the later one is applied
    for sure, the earlier one only if it came first)."""
    replicas = [open_pg(postgres_schema.url) for _ in range(2)]
    groups = [group_of(n) for n in range(20)]
    rounds = 15
    try:
        before = deadlocks(postgres_schema)

        async def both(round_: int) -> list[Any]:
            batches = []
            for replica, keys in zip(replicas, (groups, groups[::-1]), strict=True):
                time_ms = 1000 + 2 * round_ + (keys is groups)
                calls = (
                    replica.target.record(GroupEvent(key, EventKind.FULL, time_ms)) for key in keys
                )
                batches.append(asyncio.gather(*calls))
            return list(await asyncio.gather(*batches))

        applied: Counter[GroupKey] = Counter()
        for round_ in range(rounds):
            for outcomes in event_loop_thread.run(both(round_)):
                applied.update(outcome.state.key for outcome in outcomes if outcome.applied)
        states = replicas[0].get_many(groups)
        assert {key: state.full_event_count for key, state in states.items()} == applied
        assert min(applied.values()) >= rounds
    finally:
        for replica in replicas:
            replica.close()
    # A session reports its counts as it ends, if not before.
    await_condition(lambda: not sessions(postgres_schema), "the replicas' sessions to end")
    assert deadlocks(postgres_schema) == before


def test_connection_killed_while_idle_is_not_handed_out(
    postgres_schema: PostgresSchema, monkeypatch: pytest.MonkeyPatch, open_pg: OpenPostgres
) -> None:
    """A connection whose backend was terminated while it sat idle for _RECENTLY_USED_S is
    checked and replaced, so the next call succeeds."""
    monkeypatch.setattr(postgres_store, "_RECENTLY_USED_S", 0.2)
    store = open_pg(postgres_schema.url, min_size=1, max_size=1)
    try:
        outcome = store.record(FULL)
        assert terminate_sessions(postgres_schema) == 1
        time.sleep(0.3)
        assert store.get(KEY) == outcome.state
    finally:
        store.close()


def test_call_on_a_connection_killed_moments_ago_fails_and_purges_the_pool(
    postgres_schema: PostgresSchema, monkeypatch: pytest.MonkeyPatch, open_pg: OpenPostgres
) -> None:
    """With the backends of two connections used moments ago terminated, the first call fails
    as StoreUnavailable and has the other checked, so the next call succeeds."""
    monkeypatch.setattr(postgres_store, "_RECENTLY_USED_S", 60.0)
    store = open_pg(postgres_schema.url, min_size=2, max_size=2)
    try:
        outcome = store.record(FULL)
        store.get(KEY)
        with postgres_schema.connect() as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE query <> '') FROM pg_stat_activity"
                " WHERE application_name = %s AND pid <> pg_backend_pid()",
                (postgres_schema.application_name,),
            ).fetchone()
        assert row == (2,)  # the pool took turns: both connections were used
        assert terminate_sessions(postgres_schema) == 2
        with pytest.raises(StoreUnavailable, match="PostgreSQL"):
            store.get(KEY)
        assert store.get(KEY) == outcome.state
    finally:
        store.close()


# --- outage ---------------------------------------------------------------------------------


@pytest.fixture
def private_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL server of the test's own, to stop and start; skipped without initdb."""
    try:
        binaries = PostgresBinaries.find()
    except PostgresUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"{error} (CI is set, so this is a failure, not a skip)")
        pytest.skip(f"{error}; set CI=1 to make this a failure")
    with PostgresCluster(binaries, closed_port(), durable=False) as cluster:
        yield cluster


@pytest.mark.e2e
def test_server_down_fails_ping_in_the_pool_timeout_and_never_fails_a_wait(
    private_cluster: PostgresCluster,
    open_pg: OpenPostgres,
) -> None:
    """With the server stopped, ping fails in about 5 s and waits return; waits recover after."""
    store = open_pg(private_cluster.url, min_size=2, max_size=2)
    try:
        store.wait_for_changes(0)
        private_cluster.stop("fast")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="PostgreSQL"):
            store.ping()
        assert time.monotonic() - started < 10  # the pool's 5 s timeout, and some slack
        for _ in range(2):
            assert timed_wait(store, 10) < 5  # the listener failed: a pause of at most 1 s
        private_cluster.start()
        store.wait_for_changes(10)  # a new listener: returns at once, to re-read the log
        assert timed_wait(store, 0.2) >= 0.15
        # The pool reconnects with a backoff of its own: notify without it.
        with psycopg.connect(private_cluster.url, autocommit=True) as conn:
            conn.execute("SELECT pg_notify('chat_policy_changes', current_schema())")
        assert timed_wait(store, 10) < 5
    finally:
        store.close()
