"""The SQLite group-state store: durable, idempotent, keyset-paged."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from policy_service.errors import StoreUnavailable
from policy_service.group_state import EventKind, GroupEvent, GroupKey, GroupState, RecordOutcome
from policy_service.pagination import FullGroupsCursor
from policy_service.sqlite_store import MIGRATIONS, SQLiteGroupStateStore
from policy_service.store import UnsupportedDatabaseUrl, open_store

KEY = GroupKey(1400000000, "@TGS#2J4SZEAEL")


def record_full(store: SQLiteGroupStateStore, key: GroupKey, event_time_ms: int) -> RecordOutcome:
    """Record a group-full event."""
    return store.record(GroupEvent(key, EventKind.FULL, event_time_ms))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the store's file goes."""
    return tmp_path / "state" / "chat-policy.db"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteGroupStateStore]:
    """A fresh store, closed afterwards."""
    opened = open_store(f"sqlite:///{path}")
    assert isinstance(opened, SQLiteGroupStateStore)
    yield opened
    opened.close()


def test_recorded_event_is_read_back(store: SQLiteGroupStateStore) -> None:
    """A recorded full event is returned by get; an unknown group is None."""
    outcome = record_full(store, KEY, 1670574414123)
    assert outcome.applied
    assert store.get(KEY) == outcome.state
    assert outcome.state.full_since_ms == 1670574414123
    assert store.get(GroupKey(KEY.sdk_app_id, KEY.group_id, "topic")) is None


def test_redelivery_and_late_events_are_not_applied(store: SQLiteGroupStateStore) -> None:
    """The same event twice, or an older one, leaves the stored state as it was."""
    record_full(store, KEY, 2000)
    assert not record_full(store, KEY, 2000).applied
    assert not record_full(store, KEY, 1000).applied
    assert record_full(store, KEY, 3000).applied
    state = store.get(KEY)
    assert state is not None
    assert (state.full_since_ms, state.last_event_time_ms, state.full_event_count) == (
        2000,
        3000,
        2,
    )


def test_member_exit_clears_the_group_and_its_topics(store: SQLiteGroupStateStore) -> None:
    """An exit stored for a group makes it and its full topic not full, and is idempotent."""
    topic = GroupKey(KEY.sdk_app_id, KEY.group_id, "topic")
    record_full(store, KEY, 1000)
    record_full(store, topic, 1100)
    exit_event = GroupEvent(KEY, EventKind.MEMBER_EXIT, 2000)
    assert store.record(exit_event).applied
    assert not store.record(exit_event).applied
    for key in (KEY, topic):
        state = store.get(key)
        assert state is not None
        assert (state.full, state.last_event_kind) == (False, EventKind.MEMBER_EXIT)
    assert store.list_full(0, 10, None) == []


def test_destroyed_group_is_stored_as_destroyed(store: SQLiteGroupStateStore) -> None:
    """A destruction for a group never seen is kept, not full and destroyed."""
    outcome = store.record(GroupEvent(KEY, EventKind.DESTROYED, 2000))
    assert store.get(KEY) == outcome.state
    assert (outcome.state.full, outcome.state.destroyed) == (False, True)


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
    record_full(first, KEY, 1000)
    first.close()
    second = SQLiteGroupStateStore(path)
    assert second.get(KEY) is not None
    second.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_full_groups_are_walked_in_order_without_gaps_or_repeats(
    store: SQLiteGroupStateStore,
) -> None:
    """Pages of 7 over 250 groups (many sharing full_since) return each group once, in order."""
    keys = [GroupKey(1 + i % 3, f"g{i:03}", "t" if i % 5 == 0 else "") for i in range(250)]
    for i, key in enumerate(keys):
        record_full(store, key, 1000 + i // 10)
    walked, after = [], None
    while page := store.list_full(0, 7, after):
        walked += page
        after = FullGroupsCursor.after(page[-1])
    order = [(s.full_since_ms, s.key.sdk_app_id, s.key.group_id, s.key.topic_id) for s in walked]
    assert order == sorted(order)
    assert sorted(s.key for s in walked) == sorted(keys)


def test_list_is_filtered_by_app_and_stable_under_earlier_inserts(
    store: SQLiteGroupStateStore,
) -> None:
    """The app filter applies; groups inserted before the cursor do not repeat earlier items."""
    for i in range(10):
        record_full(store, GroupKey(1, f"a{i}"), 100 + i)
        record_full(store, GroupKey(2, f"b{i}"), 100 + i)
    first = store.list_full(1, 4, None)
    assert [s.key.group_id for s in first] == ["a0", "a1", "a2", "a3"]
    record_full(store, GroupKey(1, "early"), 50)
    rest = store.list_full(1, 100, FullGroupsCursor.after(first[-1]))
    assert [s.key.group_id for s in rest] == [f"a{i}" for i in range(4, 10)]


def test_concurrent_writers_lose_no_event(store: SQLiteGroupStateStore) -> None:
    """Eight threads recording distinct events for one group: every applied event is counted."""
    applied = []

    def write(thread: int) -> None:
        for i in range(50):
            applied.append(record_full(store, KEY, 1000 + i * 8 + thread).applied)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state = store.get(KEY)
    assert state is not None
    assert state.full_event_count == sum(applied)
    assert state.last_event_time_ms == 1000 + 49 * 8 + 7


def test_unusable_file_is_store_unavailable(tmp_path: Path) -> None:
    """A path that is a directory cannot be opened and says so as StoreUnavailable."""
    with pytest.raises(StoreUnavailable, match="SQLite"):
        SQLiteGroupStateStore(tmp_path)


def test_unknown_database_url_is_refused() -> None:
    """Only sqlite:/// URLs are supported in this build."""
    with pytest.raises(UnsupportedDatabaseUrl, match="postgresql://db"):
        open_store("postgresql://db")
