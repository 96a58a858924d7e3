"""The SQLite store's own concerns: its file, WAL, migrations and query plans.

What every store does (events, pagination, concurrency) is in test_store_contract.py.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from policy_service.engine.decision_log import DecisionCursor, DecisionQuery, DecisionRecord
from policy_service.engine.rate_limit import Acquisition
from policy_service.errors import GroupNotFound, StoreUnavailable, ValueNotStorable
from policy_service.groups.state import (
    EventKind,
    GroupEvent,
    GroupKey,
    GroupState,
    RecordOutcome,
)
from policy_service.stores.decision_rows import list_decisions_query
from policy_service.stores.sqlite_store import MIGRATIONS, SQLiteGroupStateStore
from policy_service.stores.store import open_store
from tests.event_loops import LoopThread, blocking_open
from tests.threads import run_threads

KEY = GroupKey(1400000000, "@TGS#2J4SZEAEL")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the store's file goes."""
    return tmp_path / "state" / "chat-policy.db"


@pytest.fixture
def opened(event_loop_thread: LoopThread) -> Callable[[Path], Any]:
    """Opens the SQLite store at a path on the test's event loop: a Blocking view of it (the
    store itself is its .target)."""

    def open_at(at: Path) -> Any:
        return blocking_open(event_loop_thread, SQLiteGroupStateStore.open, at)

    return open_at


def test_sqlite_url_opens_a_sqlite_store(path: Path, event_loop_thread: LoopThread) -> None:
    """open_store gives the SQLite store for a sqlite:/// URL, creating its directory."""
    store = blocking_open(event_loop_thread, open_store, f"sqlite:///{path}")
    assert isinstance(store.target, SQLiteGroupStateStore)
    store.close()
    assert path.is_file()


def test_version_one_database_is_migrated_in_place(
    path: Path, opened: Callable[[Path], Any]
) -> None:
    """A file made by the first schema keeps its rows, read as full events, after migrating."""
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0])
        db.execute(
            "INSERT INTO group_state VALUES (?, ?, '', 1, 1000, 1200, 2)",
            (KEY.sdk_app_id, KEY.group_id),
        )
        db.execute("PRAGMA user_version = 1")
    db.close()
    store = opened(path)
    assert store.get(KEY) == GroupState(KEY, True, 1000, 1200, 2, False, EventKind.FULL)
    store.close()


def test_state_survives_reopening_and_migrations_run_once(
    path: Path, opened: Callable[[Path], Any]
) -> None:
    """A second store on the same file sees the data; the schema version is recorded."""
    first = opened(path)
    first.record(GroupEvent(KEY, EventKind.FULL, 1000))
    first.close()
    second = opened(path)
    assert second.get(KEY) is not None
    second.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_unusable_file_is_store_unavailable(tmp_path: Path, event_loop_thread: LoopThread) -> None:
    """A path that is a directory cannot be opened and says so as StoreUnavailable."""
    with pytest.raises(StoreUnavailable, match="SQLite"):
        event_loop_thread.run(SQLiteGroupStateStore.open(tmp_path))


DECISION_INDEXES = {
    "unfiltered": (DecisionQuery(), "creation_decision_time"),
    "sdk_app_id": (DecisionQuery(sdk_app_id=2), "creation_decision_app_time"),
    "operator_account": (DecisionQuery(operator_account="op0"), "creation_decision_operator_time"),
}


@pytest.mark.parametrize("filtered", DECISION_INDEXES.values(), ids=DECISION_INDEXES.keys())
def test_decision_page_searches_its_index_from_the_cursor(
    path: Path, filtered: tuple[DecisionQuery, str], opened: Callable[[Path], Any]
) -> None:
    """A page of decisions after a cursor is one index search bounded by it, with no sort."""
    query, index = filtered
    opened(path).close()
    sql, params = list_decisions_query(query, 50, DecisionCursor(4333, "d10000"), "?")
    with sqlite3.connect(path) as db:
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    db.close()
    assert len(plan) == 1, plan
    assert plan[0].startswith(f"SEARCH creation_decision USING INDEX {index} ("), plan
    assert "(decided_at_ms,decision_id)<(?,?)" in plan[0], plan


def group(n: int) -> GroupKey:
    """The n-th of many distinct groups."""
    return GroupKey(KEY.sdk_app_id, f"@TGS#2A{n:07d}")


def full(n: int) -> GroupEvent:
    """A full event for the n-th group."""
    return GroupEvent(group(n), EventKind.FULL, 1000 + n)


def decision(decision_id: str, latency_us: int = 42) -> DecisionRecord:
    """An allowed decision."""
    return DecisionRecord(
        decision_id, 1000, KEY.sdk_app_id, "alice", "allow", 0, "", "default", "", "rev-1", (),
        latency_us, "{}",
    )  # fmt: skip


class Held:
    """Holds the writer's first BEGIN IMMEDIATE until released and counts the COMMITs run,
    through the write connection's trace callback (set while the writer is idle)."""

    def __init__(self, store: SQLiteGroupStateStore) -> None:
        self.began, self.release = threading.Event(), threading.Event()
        self.commits = 0
        store._db.set_trace_callback(self.trace)

    def trace(self, statement: str) -> None:
        if statement == "BEGIN IMMEDIATE" and not self.began.is_set():
            self.began.set()
            self.release.wait(10)
        self.commits += statement == "COMMIT"


def wait_until_queued(store: SQLiteGroupStateStore, count: int) -> None:
    """Return once `count` items wait in the writer's queue (10 s at most)."""
    deadline = time.monotonic() + 10
    while store._queue.qsize() < count and time.monotonic() < deadline:
        time.sleep(0.001)
    assert store._queue.qsize() >= count


def recording(store: Any, n: int) -> Callable[[], object]:
    """A write recording full(n) in store."""
    return lambda: store.record(full(n))


def run_queued(
    store: Any, writes: list[Callable[[], object]], *, then: Callable[[], object] | None = None
) -> tuple[list[object], int]:
    """Run each write in a thread of its own, the first one's transaction held at BEGIN until
    the others are all queued behind it (and `then`, if given, has started in a thread of its
    own and queued one more item); what each returned or raised, and the COMMITs run."""
    writer: SQLiteGroupStateStore = store.target
    held = Held(writer)
    outcomes: list[object] = [None] * len(writes)

    def run(index: int) -> None:
        try:
            outcomes[index] = writes[index]()
        except Exception as error:
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(writes))]
    threads[0].start()
    assert held.began.wait(10)
    for thread in threads[1:]:
        thread.start()
    wait_until_queued(writer, len(writes) - 1)
    if then is not None:
        threads.append(threading.Thread(target=then))
        threads[-1].start()
        wait_until_queued(writer, len(writes))
    held.release.set()
    for thread in threads:
        thread.join()
    with contextlib.suppress(sqlite3.ProgrammingError):  # closed by `then`
        writer._db.set_trace_callback(None)
    return outcomes, held.commits


def test_concurrent_records_share_one_commit_and_survive_reopening(
    path: Path, opened: Callable[[Path], Any]
) -> None:
    """Sixteen records queued together commit once (the writer's counters say so too), each
    applied, and all are in the file."""
    store = opened(path)
    writer: SQLiteGroupStateStore = store.target
    counted = writer.commits, writer.committed_writes
    outcomes, commits = run_queued(store, [recording(store, n) for n in range(16)])
    assert (writer.commits - counted[0], writer.committed_writes - counted[1]) == (1, 16)
    store.close()
    assert commits == 1
    reopened = opened(path)
    for n, outcome in enumerate(outcomes):
        assert isinstance(outcome, RecordOutcome) and outcome.applied
        assert outcome.state == GroupState(group(n), True, 1000 + n, 1000 + n, 1)
        assert reopened.get(group(n)) == outcome.state
    changes = reopened.changes_after(0, 100)
    assert [change.sequence for change in changes] == list(range(1, 17))
    assert {change.state.key for change in changes} == {group(n) for n in range(16)}
    reopened.close()


def test_error_in_one_write_reaches_only_its_caller(
    path: Path, opened: Callable[[Path], Any]
) -> None:
    """A clear of an unknown group and a half-written insert that raises fail alone, rolled
    back to their own savepoints; the writes committed with them stay."""
    store = opened(path)
    outcomes, commits = run_queued(
        store,
        [
            lambda: store.record(full(0)),
            lambda: store.record(GroupEvent.cleared(group(99), 2000, "unknown")),
            lambda: store.append_decisions([decision("kept-not"), decision("bad", 2**70)]),
            lambda: store.append_decisions([decision("kept")]),
            lambda: store.record(full(1)),
        ],
    )
    store.close()
    assert commits == 1
    recorded, unknown, half, appended, recorded_too = outcomes
    assert isinstance(unknown, GroupNotFound)
    assert isinstance(half, ValueNotStorable)
    assert appended is None
    reopened = opened(path)
    for n, outcome in ((0, recorded), (1, recorded_too)):
        assert isinstance(outcome, RecordOutcome)
        assert reopened.get(group(n)) == outcome.state
    assert reopened.get(group(99)) is None
    decisions = reopened.list_decisions(DecisionQuery(), 10, None)
    assert [record.decision_id for record in decisions] == ["kept"]
    assert len(reopened.changes_after(0, 10)) == 2
    reopened.close()


def test_failed_commit_fails_every_caller_and_keeps_nothing(
    path: Path, opened: Callable[[Path], Any]
) -> None:
    """When the shared COMMIT fails, each caller queued in it gets StoreUnavailable, none of
    the writes is in the file, and the next write commits."""
    store = opened(path)

    def deny_commit(action: int, operation: str | None, *_: str | None) -> int:
        refused = action == sqlite3.SQLITE_TRANSACTION and operation == "COMMIT"
        return sqlite3.SQLITE_DENY if refused else sqlite3.SQLITE_OK

    store.target._db.set_authorizer(deny_commit)
    outcomes, _ = run_queued(
        store,
        [
            lambda: store.record(full(0)),
            lambda: store.acquire("bucket", window_ms=1000, limit=5, now_ms=1000),
            lambda: store.append_decisions([decision("lost")]),
            lambda: store.record(full(1)),
        ],
    )
    assert all(isinstance(outcome, StoreUnavailable) for outcome in outcomes), outcomes
    store.target._db.set_authorizer(None)
    assert store.record(full(2)).applied
    store.close()
    reopened = opened(path)
    assert [reopened.get(group(n)) is None for n in range(3)] == [True, True, False]
    assert reopened.acquire("bucket", window_ms=1000, limit=5, now_ms=1000).count_before == 0
    assert reopened.list_decisions(DecisionQuery(), 10, None) == []
    assert [change.state.key for change in reopened.changes_after(0, 10)] == [group(2)]
    reopened.close()


def test_acquires_in_one_commit_take_exactly_the_limit(
    path: Path, opened: Callable[[Path], Any]
) -> None:
    """Twenty acquires on one bucket at limit 5 queued into one transaction take exactly five
    slots, each counting the slots taken before it in that transaction."""
    store = opened(path)

    def acquire() -> Acquisition:
        acquired: Acquisition = store.acquire("race", window_ms=60_000, limit=5, now_ms=10_000)
        return acquired

    outcomes, commits = run_queued(store, [acquire] * 20)
    assert commits == 1
    acquisitions = [outcome for outcome in outcomes if isinstance(outcome, Acquisition)]
    assert len(acquisitions) == 20
    taken = [acquisition for acquisition in acquisitions if acquisition.slot is not None]
    assert sorted(acquisition.count_before for acquisition in taken) == [0, 1, 2, 3, 4]
    assert all(acquisition.within_limit for acquisition in taken)
    assert len({acquisition.slot for acquisition in taken}) == 5
    refused = [acquisition for acquisition in acquisitions if acquisition.slot is None]
    assert refused == [Acquisition(5, False, None)] * 15
    store.close()


def test_writes_after_close_are_store_unavailable(
    path: Path, opened: Callable[[Path], Any]
) -> None:
    """A write whose transaction cannot begin fails with StoreUnavailable, and so does the
    next one: the failed write left the queue."""
    store = opened(path)
    store.close()
    for n in range(2):
        with pytest.raises(StoreUnavailable, match="SQLite"):
            store.record(full(n))


def test_many_concurrent_writers_share_commits_and_are_all_durable(
    path: Path, opened: Callable[[Path], Any]
) -> None:
    """Eight threads recording 40 events each: every event is applied, the writer committed
    more than one write per commit (its COMMIT slowed by 2 ms, as a slow fsync would), and all
    320 are in the file when it is reopened."""
    store = opened(path)
    writer: SQLiteGroupStateStore = store.target

    def slow_commit(statement: str) -> None:
        if statement == "COMMIT":
            time.sleep(0.002)

    writer._db.set_trace_callback(slow_commit)
    commits, writes = writer.commits, writer.committed_writes  # the migration's, at open
    outcomes: dict[int, RecordOutcome] = {}

    def write(thread: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(40):
                outcomes[thread * 40 + i] = store.record(full(thread * 40 + i))

        return run

    assert run_threads(*[write(thread) for thread in range(8)]) == []
    commits, writes = writer.commits - commits, writer.committed_writes - writes
    assert writes == 320
    assert commits < writes / 2, (commits, writes)
    store.close()
    reopened = opened(path)
    assert len(outcomes) == 320
    for n, outcome in outcomes.items():
        assert outcome.applied
        assert (
            reopened.get(group(n))
            == outcome.state
            == GroupState(group(n), True, 1000 + n, 1000 + n, 1)
        )
    changes = reopened.changes_after(0, 1000)
    assert [change.sequence for change in changes] == list(range(1, 321))
    reopened.close()


def test_close_commits_the_writes_queued_before_it(
    path: Path, opened: Callable[[Path], Any]
) -> None:
    """close() while writes are queued lets the writer commit them all first; each caller
    gets its outcome and the file has them."""
    store = opened(path)
    outcomes, commits = run_queued(store, [recording(store, n) for n in range(8)], then=store.close)
    assert commits == 1
    assert all(isinstance(outcome, RecordOutcome) and outcome.applied for outcome in outcomes)
    with pytest.raises(StoreUnavailable, match="closed"):
        store.record(full(8))
    reopened = opened(path)
    assert len(reopened.get_many([group(n) for n in range(9)])) == 8
    reopened.close()


def test_a_write_connection_that_fails_fails_every_caller_and_nothing_hangs(
    path: Path, opened: Callable[[Path], Any]
) -> None:
    """With the writer's connection closed under it, every one of 16 concurrent writes (of
    every kind) fails with StoreUnavailable rather than waiting, and close() still returns;
    the file holds none of them."""
    store = opened(path)
    store.target._db.close()
    failed: list[BaseException] = []

    def write(n: int) -> Callable[[], None]:
        def run() -> None:
            try:
                if n % 3 == 0:
                    store.record(full(n))
                elif n % 3 == 1:
                    store.acquire("b", window_ms=1000, limit=5, now_ms=1000)
                else:
                    store.append_decisions([decision(f"d{n}")])
            except StoreUnavailable as error:
                failed.append(error)

        return run

    assert run_threads(*[write(n) for n in range(16)]) == []
    assert len(failed) == 16
    assert all("SQLite" in str(error) for error in failed)
    store.close()
    reopened = opened(path)
    assert reopened.count(0).tracked == 0
    assert reopened.list_decisions(DecisionQuery(), 10, None) == []
    reopened.close()


def test_reads_see_every_acknowledged_write_at_once(
    path: Path, opened: Callable[[Path], Any]
) -> None:
    """Right after each record returns, both kinds of read (inline on the loop, and in the
    read executor) see it."""
    store = opened(path)
    for n in range(50):
        outcome = store.record(full(n))
        assert store.get(group(n)) == outcome.state
        assert store.count(0).tracked == n + 1
        assert store.changes_after(n, 10)[0].state == outcome.state
    store.close()


def test_a_writer_that_dies_fails_its_batch_and_what_is_queued(
    path: Path, opened: Callable[[Path], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the writer thread ends on an unexpected error, the write it was running and those
    queued behind it fail with StoreUnavailable instead of waiting for ever, as do later
    writes."""
    store = opened(path)
    writer: SQLiteGroupStateStore = store.target
    entered, release = threading.Event(), threading.Event()

    def broken(*_: object) -> bool:
        entered.set()
        release.wait(10)
        raise RuntimeError("a bug in the writer")

    monkeypatch.setattr(writer._writer, "_commit", broken)
    failed: list[BaseException] = []

    def write(n: int) -> Callable[[], None]:
        def run() -> None:
            try:
                store.record(full(n))
            except StoreUnavailable as error:
                failed.append(error)

        return run

    first = threading.Thread(target=write(0))
    first.start()
    rest = [threading.Thread(target=write(n)) for n in range(1, 6)]
    assert entered.wait(10)  # the writer took write 0
    for thread in rest:
        thread.start()
    wait_until_queued(writer, 5)
    release.set()
    for thread in [first, *rest]:
        thread.join(10)
    assert len(failed) == 6, failed
    with pytest.raises(StoreUnavailable, match="closed"):
        store.record(full(7))
    store.close()
