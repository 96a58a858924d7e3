"""The SQLite store's own concerns: its file, WAL, migrations and query plans.

What every store does (events, pagination, concurrency) is in test_store_contract.py.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

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

KEY = GroupKey(1400000000, "@TGS#2J4SZEAEL")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the store's file goes."""
    return tmp_path / "state" / "chat-policy.db"


def test_sqlite_url_opens_a_sqlite_store(path: Path) -> None:
    """open_store gives the SQLite store for a sqlite:/// URL, creating its directory."""
    store = open_store(f"sqlite:///{path}")
    assert isinstance(store, SQLiteGroupStateStore)
    store.close()
    assert path.is_file()


def test_version_one_database_is_migrated_in_place(path: Path) -> None:
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
    store = SQLiteGroupStateStore(path)
    assert store.get(KEY) == GroupState(KEY, True, 1000, 1200, 2, False, EventKind.FULL)
    store.close()


def test_state_survives_reopening_and_migrations_run_once(path: Path) -> None:
    """A second store on the same file sees the data; the schema version is recorded."""
    first = SQLiteGroupStateStore(path)
    first.record(GroupEvent(KEY, EventKind.FULL, 1000))
    first.close()
    second = SQLiteGroupStateStore(path)
    assert second.get(KEY) is not None
    second.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_unusable_file_is_store_unavailable(tmp_path: Path) -> None:
    """A path that is a directory cannot be opened and says so as StoreUnavailable."""
    with pytest.raises(StoreUnavailable, match="SQLite"):
        SQLiteGroupStateStore(tmp_path)


DECISION_INDEXES = {
    "unfiltered": (DecisionQuery(), "creation_decision_time"),
    "sdk_app_id": (DecisionQuery(sdk_app_id=2), "creation_decision_app_time"),
    "operator_account": (DecisionQuery(operator_account="op0"), "creation_decision_operator_time"),
}


@pytest.mark.parametrize("filtered", DECISION_INDEXES.values(), ids=DECISION_INDEXES.keys())
def test_decision_page_searches_its_index_from_the_cursor(
    path: Path, filtered: tuple[DecisionQuery, str]
) -> None:
    """A page of decisions after a cursor is one index search bounded by it, with no sort."""
    query, index = filtered
    SQLiteGroupStateStore(path).close()
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
    """Holds the store's first BEGIN IMMEDIATE until released and counts the COMMITs run,
    through its connection's trace callback."""

    def __init__(self, store: SQLiteGroupStateStore) -> None:
        self.began, self.release = threading.Event(), threading.Event()
        self.commits = 0
        store._db.set_trace_callback(self.trace)

    def trace(self, statement: str) -> None:
        if statement == "BEGIN IMMEDIATE" and not self.began.is_set():
            self.began.set()
            self.release.wait(10)
        self.commits += statement == "COMMIT"


def run_queued(
    store: SQLiteGroupStateStore, writes: list[Callable[[], object]]
) -> tuple[list[object], int]:
    """Run each write in a thread of its own, the first one's transaction held at BEGIN until
    the others are all queued behind it; what each returned or raised, and the COMMITs run."""
    held = Held(store)
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
    deadline = time.monotonic() + 10
    while len(store._pending) < len(writes) and time.monotonic() < deadline:
        time.sleep(0.001)
    held.release.set()
    for thread in threads:
        thread.join()
    store._db.set_trace_callback(None)
    return outcomes, held.commits


def test_concurrent_records_share_one_commit_and_survive_reopening(path: Path) -> None:
    """Sixteen records queued together commit once, each applied, and all are in the file."""
    store = SQLiteGroupStateStore(path)
    outcomes, commits = run_queued(store, [lambda n=n: store.record(full(n)) for n in range(16)])
    store.close()
    assert commits == 1
    reopened = SQLiteGroupStateStore(path)
    for n, outcome in enumerate(outcomes):
        assert isinstance(outcome, RecordOutcome) and outcome.applied
        assert outcome.state == GroupState(group(n), True, 1000 + n, 1000 + n, 1)
        assert reopened.get(group(n)) == outcome.state
    changes = reopened.changes_after(0, 100)
    assert [change.sequence for change in changes] == list(range(1, 17))
    assert {change.state.key for change in changes} == {group(n) for n in range(16)}
    reopened.close()


def test_error_in_one_write_reaches_only_its_caller(path: Path) -> None:
    """A clear of an unknown group and a half-written insert that raises fail alone, rolled
    back to their own savepoints; the writes committed with them stay."""
    store = SQLiteGroupStateStore(path)
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
    reopened = SQLiteGroupStateStore(path)
    for n, outcome in ((0, recorded), (1, recorded_too)):
        assert isinstance(outcome, RecordOutcome)
        assert reopened.get(group(n)) == outcome.state
    assert reopened.get(group(99)) is None
    decisions = reopened.list_decisions(DecisionQuery(), 10, None)
    assert [record.decision_id for record in decisions] == ["kept"]
    assert len(reopened.changes_after(0, 10)) == 2
    reopened.close()


def test_failed_commit_fails_every_caller_and_keeps_nothing(path: Path) -> None:
    """When the shared COMMIT fails, each caller queued in it gets StoreUnavailable, none of
    the writes is in the file, and the next write commits."""
    store = SQLiteGroupStateStore(path)

    def deny_commit(action: int, operation: str | None, *_: str | None) -> int:
        refused = action == sqlite3.SQLITE_TRANSACTION and operation == "COMMIT"
        return sqlite3.SQLITE_DENY if refused else sqlite3.SQLITE_OK

    store._db.set_authorizer(deny_commit)
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
    store._db.set_authorizer(None)
    assert store.record(full(2)).applied
    store.close()
    reopened = SQLiteGroupStateStore(path)
    assert [reopened.get(group(n)) is None for n in range(3)] == [True, True, False]
    assert reopened.acquire("bucket", window_ms=1000, limit=5, now_ms=1000).count_before == 0
    assert reopened.list_decisions(DecisionQuery(), 10, None) == []
    assert [change.state.key for change in reopened.changes_after(0, 10)] == [group(2)]
    reopened.close()


def test_acquires_in_one_commit_take_exactly_the_limit(path: Path) -> None:
    """Twenty acquires on one bucket at limit 5 queued into one transaction take exactly five
    slots, each counting the slots taken before it in that transaction."""
    store = SQLiteGroupStateStore(path)

    def acquire() -> Acquisition:
        return store.acquire("race", window_ms=60_000, limit=5, now_ms=10_000)

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


def test_writes_after_close_are_store_unavailable(path: Path) -> None:
    """A write whose transaction cannot begin fails with StoreUnavailable, and so does the
    next one: the failed write left the queue."""
    store = SQLiteGroupStateStore(path)
    store.close()
    for n in range(2):
        with pytest.raises(StoreUnavailable, match="SQLite"):
            store.record(full(n))
