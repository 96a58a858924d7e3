"""The SQLite group-state store: durable, idempotent, keyset-paged."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from policy_service.errors import StoreUnavailable
from policy_service.group_state import GroupKey
from policy_service.pagination import FullGroupsCursor
from policy_service.sqlite_store import MIGRATIONS, SQLiteGroupStateStore
from policy_service.store import UnsupportedDatabaseUrl, open_store

KEY = GroupKey(1400000000, "@TGS#2J4SZEAEL")


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
    outcome = store.record_full(KEY, 1670574414123)
    assert outcome.applied
    assert store.get(KEY) == outcome.state
    assert outcome.state.full_since_ms == 1670574414123
    assert store.get(GroupKey(KEY.sdk_app_id, KEY.group_id, "topic")) is None


def test_redelivery_and_late_events_are_not_applied(store: SQLiteGroupStateStore) -> None:
    """The same event twice, or an older one, leaves the stored state as it was."""
    store.record_full(KEY, 2000)
    assert not store.record_full(KEY, 2000).applied
    assert not store.record_full(KEY, 1000).applied
    assert store.record_full(KEY, 3000).applied
    state = store.get(KEY)
    assert state is not None
    assert (state.full_since_ms, state.last_event_time_ms, state.full_event_count) == (
        2000,
        3000,
        2,
    )


def test_state_survives_reopening_and_migrations_run_once(path: Path) -> None:
    """A second store on the same file sees the data; the schema version is recorded."""
    first = SQLiteGroupStateStore(path)
    first.record_full(KEY, 1000)
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
        store.record_full(key, 1000 + i // 10)
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
        store.record_full(GroupKey(1, f"a{i}"), 100 + i)
        store.record_full(GroupKey(2, f"b{i}"), 100 + i)
    first = store.list_full(1, 4, None)
    assert [s.key.group_id for s in first] == ["a0", "a1", "a2", "a3"]
    store.record_full(GroupKey(1, "early"), 50)
    rest = store.list_full(1, 100, FullGroupsCursor.after(first[-1]))
    assert [s.key.group_id for s in rest] == [f"a{i}" for i in range(4, 10)]


def test_concurrent_writers_lose_no_event(store: SQLiteGroupStateStore) -> None:
    """Eight threads recording distinct events for one group: every applied event is counted."""
    applied = []

    def write(thread: int) -> None:
        for i in range(50):
            applied.append(store.record_full(KEY, 1000 + i * 8 + thread).applied)

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
