"""What every group-state store does, run against each one: SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from policy_service.group_state import EventKind, GroupEvent, GroupKey, RecordOutcome
from policy_service.pagination import FullGroupsCursor
from policy_service.store import GroupStateStore, UnsupportedDatabaseUrl, open_store
from tests.conftest import PostgresSchema

KEY = GroupKey(1400000000, "@TGS#2J4SZEAEL")


def record_full(store: GroupStateStore, key: GroupKey, event_time_ms: int) -> RecordOutcome:
    """Record a group-full event."""
    return store.record(GroupEvent(key, EventKind.FULL, event_time_ms))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GroupStateStore]:
    """A fresh, empty store of each kind (PostgreSQL: in a schema of its own), closed after."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state' / 'chat-policy.db'}"
    else:
        schema: PostgresSchema = request.getfixturevalue("postgres_schema")
        url = schema.url
    opened = open_store(url)
    yield opened
    opened.close()


def test_recorded_event_is_read_back(store: GroupStateStore) -> None:
    """A recorded full event is returned by get; an unknown group is None."""
    outcome = record_full(store, KEY, 1670574414123)
    assert outcome.applied
    assert store.get(KEY) == outcome.state
    assert outcome.state.full_since_ms == 1670574414123
    assert store.get(GroupKey(KEY.sdk_app_id, KEY.group_id, "topic")) is None


def test_redelivery_and_late_events_are_not_applied(store: GroupStateStore) -> None:
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


def test_member_exit_clears_the_group_and_its_topics(store: GroupStateStore) -> None:
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


def test_late_topic_event_loses_to_a_stored_exit(store: GroupStateStore) -> None:
    """A full event for a topic never seen, older than the group's exit, is not applied."""
    store.record(GroupEvent(KEY, EventKind.MEMBER_EXIT, 2000))
    topic = GroupKey(KEY.sdk_app_id, KEY.group_id, "new-topic")
    assert not record_full(store, topic, 1500).applied
    assert store.get(topic) is None
    assert record_full(store, topic, 2500).applied
    assert [s.key for s in store.list_full(0, 10, None)] == [topic]


def test_destroyed_group_is_stored_as_destroyed(store: GroupStateStore) -> None:
    """A destruction for a group never seen is kept, not full and destroyed."""
    outcome = store.record(GroupEvent(KEY, EventKind.DESTROYED, 2000))
    assert store.get(KEY) == outcome.state
    assert (outcome.state.full, outcome.state.destroyed) == (False, True)


def test_full_groups_are_walked_in_order_without_gaps_or_repeats(
    store: GroupStateStore,
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


def test_ids_are_ordered_as_python_orders_str(store: GroupStateStore) -> None:
    """Case, punctuation and non-ASCII IDs come in code-point order, page after page."""
    ids = ["b", "B", "a", "_x", "Z", "é", "ä", "z", "@TGS#1", "中文", "😀", "a b", "ab"]
    for group_id in ids:
        record_full(store, GroupKey(7, group_id), 1000)
        record_full(store, GroupKey(7, "g", group_id), 1000)
    for sdk_app_id in (0, 7):
        walked, after = [], None
        while page := store.list_full(sdk_app_id, 3, after):
            walked += [(s.key.group_id, s.key.topic_id) for s in page]
            after = FullGroupsCursor.after(page[-1])
        assert walked == sorted([(i, "") for i in ids] + [("g", i) for i in ids])


def test_list_is_filtered_by_app_and_stable_under_earlier_inserts(
    store: GroupStateStore,
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


def test_filtered_walk_with_shared_times_has_no_gaps(store: GroupStateStore) -> None:
    """Pages of 4 of one app, its groups sharing full_since with other apps', miss none."""
    for i in range(60):
        record_full(store, GroupKey(1 + i % 3, f"g{i:02}", "t" if i % 4 == 0 else ""), i // 7)
    walked, after = [], None
    while page := store.list_full(2, 4, after):
        walked += page
        after = FullGroupsCursor.after(page[-1])
    expected = sorted(
        (i // 7, f"g{i:02}", "t" if i % 4 == 0 else "") for i in range(60) if i % 3 == 1
    )
    assert [(s.full_since_ms, s.key.group_id, s.key.topic_id) for s in walked] == expected
    assert {s.key.sdk_app_id for s in walked} == {2}


def test_concurrent_writers_lose_no_event(store: GroupStateStore) -> None:
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


def test_exit_racing_a_new_topic_always_wins(store: GroupStateStore) -> None:
    """A topic's first full event racing its group's newer exit never leaves the topic full."""
    groups = [GroupKey(KEY.sdk_app_id, f"race{i:03}") for i in range(100)]
    for group in groups:
        record_full(store, group, 1000)

    def full_topics() -> None:
        for group in groups:
            record_full(store, GroupKey(group.sdk_app_id, group.group_id, "topic"), 1500)

    def exits() -> None:
        for group in groups:
            store.record(GroupEvent(group, EventKind.MEMBER_EXIT, 2000))

    threads = [threading.Thread(target=full_topics), threading.Thread(target=exits)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.list_full(0, 1000, None) == []


def test_unknown_database_url_is_refused_without_its_password() -> None:
    """Only sqlite:/// and postgresql:// URLs open a store; the refusal hides the password."""
    with pytest.raises(UnsupportedDatabaseUrl, match="mysql://db") as refused:
        open_store("mysql://db")
    assert "postgresql://" in str(refused.value)
    with pytest.raises(UnsupportedDatabaseUrl) as refused:
        open_store("mysql://user:s3cret@db/state")
    assert "s3cret" not in str(refused.value)
    assert "mysql://user:***@db/state" in str(refused.value)
