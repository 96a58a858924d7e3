"""What every store does, run against each one: SQLite and PostgreSQL (and the rate-counter
tests against InMemoryRateCounter too)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from policy_service.clock import now_ms
from policy_service.engine.decision_log import DecisionCursor, DecisionQuery, DecisionRecord
from policy_service.engine.rate_limit import Acquisition, InMemoryRateCounter, RateCounter
from policy_service.errors import GroupNotFound, ValueNotStorable
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
from policy_service.stores.store import (
    GroupStateStore,
    Store,
    UnsupportedDatabaseUrl,
    open_store,
)
from tests.event_loops import Blocking
from tests.policy_service.stores import open_fresh
from tests.threads import run_threads

APP = 1400000000
OTHER_APP = 1400000123
KEY = GroupKey(APP, "@TGS#2J4SZEAEL")
COMMUNITY = GroupKey(APP, "@TGS#_@TGS#cQVLVHIM62CJ")
REASON = "Capacity raised to 6000 members (ticket OPS-4711, 扩容)"


def record_full(store: GroupStateStore, key: GroupKey, event_time_ms: int) -> RecordOutcome:
    """Record a group-full event."""
    return store.record(GroupEvent(key, EventKind.FULL, event_time_ms))


def record_kind(
    store: GroupStateStore, key: GroupKey, kind: EventKind, event_time_ms: int
) -> RecordOutcome:
    """Record an event of any kind but a clear."""
    return store.record(GroupEvent(key, kind, event_time_ms))


def clear(store: GroupStateStore, key: GroupKey, event_time_ms: int) -> RecordOutcome:
    """Record a ClearGroupFull event with REASON."""
    return store.record(GroupEvent.cleared(key, event_time_ms, REASON))


def topic_of(group: GroupKey, name: str) -> GroupKey:
    """The key of a topic of a Community group, with an ID shaped like Chat's."""
    return GroupKey(group.sdk_app_id, group.group_id, f"{group.group_id}@TOPIC#_@TOPIC#{name}")


def group_of(sdk_app_id: int, n: int) -> GroupKey:
    """The n-th of many distinct groups of an application."""
    return GroupKey(sdk_app_id, f"@TGS#2A{n:07d}")


def full_state(key: GroupKey, full_since_ms: int) -> GroupState:
    """The state of a group after its first full event."""
    return GroupState(key, True, full_since_ms, full_since_ms, 1)


def walk_full(
    store: GroupStateStore, sdk_app_id: int, limit: int, at_most_ms: int | None
) -> list[GroupState]:
    """Every page of list_full, following the cursor until an empty page."""
    walked: list[GroupState] = []
    after = None
    while page := store.list_full(sdk_app_id, limit, after, at_most_ms):
        assert len(page) <= limit
        walked += page
        after = FullGroupsCursor.after(page[-1])
    return walked


def wait_until_clock_passes(time_ms: int) -> None:
    """Return once now_ms() is above time_ms (a few milliseconds at most)."""
    while now_ms() <= time_ms:
        time.sleep(0.001)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each kind (PostgreSQL: in a schema of its own), closed after."""
    opened = open_fresh(request.param, request, tmp_path)
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def counter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RateCounter]:
    """A fresh rate counter: each store, and InMemoryRateCounter."""
    if request.param == "memory":
        yield Blocking(InMemoryRateCounter(), request.getfixturevalue("event_loop_thread"))
        return
    opened = open_fresh(request.param, request, tmp_path)
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


def test_paging_while_groups_are_inserted_concurrently_is_stable(
    store: GroupStateStore,
) -> None:
    """A walk racing a writer lists every group full before it exactly once, in order."""
    before = [GroupKey(APP, f"@TGS#before{i:03}") for i in range(300)]
    for i, key in enumerate(before):
        record_full(store, key, 1000 + i)
    stop = threading.Event()

    def insert() -> None:
        for i in range(100_000):
            if stop.is_set():
                return
            record_full(store, GroupKey(APP, f"@TGS#during{i:05}"), (i * 7919) % 2000)

    writer = threading.Thread(target=insert)
    writer.start()
    walked: list[GroupState] = []
    try:
        after = None
        while page := store.list_full(APP, 7, after):
            walked += page
            after = FullGroupsCursor.after(page[-1])
    finally:
        stop.set()
        writer.join()
    keys = [state.key for state in walked]
    assert len(keys) == len(set(keys))
    order = [(state.full_since_ms, state.key) for state in walked]
    assert order == sorted(order)
    assert set(before) <= set(keys)


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
        asyncio.run(open_store("mysql://db"))
    assert "postgresql://" in str(refused.value)
    with pytest.raises(UnsupportedDatabaseUrl) as refused:
        asyncio.run(open_store("mysql://user:s3cret@db/state"))
    assert "s3cret" not in str(refused.value)
    assert "mysql://user:***@db/state" in str(refused.value)


# --- ClearGroupFull -------------------------------------------------------------------------


def test_clear_ends_fullness_and_keeps_its_reason(store: GroupStateStore) -> None:
    """A clear of a full group leaves it not full, without full_since or count, with the reason."""
    record_full(store, KEY, 1000)
    record_full(store, KEY, 1500)
    outcome = clear(store, KEY, 2000)
    assert outcome.applied
    assert outcome.state == GroupState(KEY, False, None, 2000, 0, False, EventKind.CLEARED, REASON)
    assert outcome.changed == (outcome.state,)
    assert store.get(KEY) == outcome.state
    assert store.list_full(0, 10, None) == []


def test_full_event_after_a_clear_makes_the_group_full_again(store: GroupStateStore) -> None:
    """A full event newer than a clear starts a new full period and empties clear_reason."""
    record_full(store, KEY, 1000)
    clear(store, KEY, 2000)
    outcome = record_full(store, KEY, 3000)
    assert outcome.applied
    assert store.get(KEY) == GroupState(KEY, True, 3000, 3000, 1, False, EventKind.FULL, "")
    assert store.list_full(0, 10, None) == [outcome.state]


def test_clear_wins_a_tie_with_a_full_event(store: GroupStateStore) -> None:
    """At the same EventTime a clear beats a full event, arriving before or after it."""
    record_full(store, KEY, 1000)
    assert clear(store, KEY, 1000).applied
    assert not record_full(store, KEY, 1000).applied
    state = store.get(KEY)
    assert state is not None
    assert (state.full, state.last_event_kind, state.clear_reason) == (
        False,
        EventKind.CLEARED,
        REASON,
    )


def test_clear_not_newer_than_the_last_event_is_not_applied(store: GroupStateStore) -> None:
    """A clear older than the last event, or a repeated clear, changes and logs nothing."""
    record_full(store, KEY, 1000)
    record_full(store, KEY, 3000)
    still_full = store.get(KEY)
    head = store.change_log_bounds().head
    late = clear(store, KEY, 2000)
    assert not late.applied
    assert late.state == still_full
    assert store.get(KEY) == still_full
    assert store.change_log_bounds().head == head
    cleared = clear(store, KEY, 4000).state
    head = store.change_log_bounds().head
    repeated = store.record(GroupEvent.cleared(KEY, 4000, "Cleared again by another operator"))
    assert not repeated.applied
    assert store.get(KEY) == cleared
    assert store.changes_after(head, 10) == []


def test_clear_of_a_group_that_is_not_full_is_not_applied(store: GroupStateStore) -> None:
    """A clear of a group whose last event was an exit or a destruction changes and logs nothing."""
    exited, destroyed = group_of(APP, 1), group_of(APP, 2)
    record_full(store, exited, 1000)
    record_kind(store, exited, EventKind.MEMBER_EXIT, 1500)
    record_kind(store, destroyed, EventKind.DESTROYED, 1500)
    head = store.change_log_bounds().head
    for key in (exited, destroyed):
        before = store.get(key)
        outcome = clear(store, key, 2000)
        assert not outcome.applied
        assert outcome.state == before
        assert store.get(key) == before
    assert store.changes_after(head, 10) == []
    assert store.change_log_bounds().head == head


def test_clear_of_an_unknown_key_raises_group_not_found_and_writes_nothing(
    store: GroupStateStore,
) -> None:
    """A clear of a group or topic without a state raises GroupNotFound and writes nothing."""
    with pytest.raises(GroupNotFound) as raised:
        clear(store, KEY, 2000)
    assert (raised.value.sdk_app_id, raised.value.group_id, raised.value.topic_id) == (
        KEY.sdk_app_id,
        KEY.group_id,
        "",
    )
    assert store.get(KEY) is None
    assert store.count(0) == GroupCounts(0, 0, 0)
    assert store.change_log_bounds() == ChangeLogBounds(0, 0)
    assert store.changes_after(0, 10) == []

    record_full(store, COMMUNITY, 1000)
    group_before = store.get(COMMUNITY)
    bounds = store.change_log_bounds()
    topic = topic_of(COMMUNITY, "cUUOEA6XBUDS")
    with pytest.raises(GroupNotFound) as raised:
        clear(store, topic, 2000)
    assert raised.value.topic_id == topic.topic_id
    assert store.get(topic) is None
    assert store.get(COMMUNITY) == group_before
    assert store.count(0) == GroupCounts(1, 1, 0)
    assert store.change_log_bounds() == bounds


def test_clearing_a_group_does_not_clear_its_topics(store: GroupStateStore) -> None:
    """A clear changes only its own key: the group's full topic stays full, and the reverse."""
    topic = topic_of(COMMUNITY, "cUUOEA6XBUDS")
    record_full(store, COMMUNITY, 1000)
    record_full(store, topic, 1100)
    topic_before = store.get(topic)
    outcome = clear(store, COMMUNITY, 2000)
    assert [state.key for state in outcome.changed] == [COMMUNITY]
    assert store.get(topic) == topic_before
    assert [state.key for state in store.list_full(0, 10, None)] == [topic]

    record_full(store, COMMUNITY, 3000)
    group_before = store.get(COMMUNITY)
    assert clear(store, topic, 3100).changed == (store.get(topic),)
    assert store.get(COMMUNITY) == group_before
    assert [state.key for state in store.list_full(0, 10, None)] == [COMMUNITY]


# --- get_many -------------------------------------------------------------------------------


def test_get_many_returns_the_known_states_of_mixed_keys(store: GroupStateStore) -> None:
    """Known groups and topics of several apps come back as get gives them; unknown keys do not."""
    topic = topic_of(COMMUNITY, "cUUOEA6XBUDS")
    same_id_other_app = GroupKey(OTHER_APP, KEY.group_id)
    exited = group_of(APP, 1)
    record_full(store, KEY, 1000)
    record_full(store, COMMUNITY, 1050)
    record_full(store, topic, 1100)
    record_full(store, same_id_other_app, 1200)
    record_kind(store, exited, EventKind.MEMBER_EXIT, 1300)
    known = [KEY, topic, same_id_other_app, exited, COMMUNITY]
    unknown = [
        group_of(APP, 2),
        GroupKey(OTHER_APP + 1, KEY.group_id),
        topic_of(COMMUNITY, "cNOTTRACKED1"),
        GroupKey(OTHER_APP, topic.group_id, topic.topic_id),
        GroupKey(APP, KEY.group_id.lower()),
    ]
    mixed = [key for pair in zip(unknown, known, strict=True) for key in pair]
    found = store.get_many(mixed)
    assert found == {key: store.get(key) for key in known}
    assert None not in found.values()


def test_get_many_of_no_keys_is_empty(store: GroupStateStore) -> None:
    """An empty key sequence gives an empty dict, on an empty store and on a populated one."""
    assert store.get_many([]) == {}
    record_full(store, KEY, 1000)
    assert store.get_many([]) == {}
    assert store.get_many(()) == {}


def test_get_many_takes_a_thousand_keys_in_one_call(store: GroupStateStore) -> None:
    """1000 keys (600 known groups and topics of two apps, 400 unknown) give the 600 states."""
    keys = [
        GroupKey(APP + i % 2, f"@TGS#_@TGS#c{i:07d}", f"@TOPIC#_@TOPIC#c{i}" if i % 5 == 0 else "")
        for i in range(1000)
    ]
    recorded = {}
    for i, key in enumerate(keys):
        if i % 5 < 3:
            recorded[key] = record_full(store, key, 1000 + i).state
    assert len(recorded) == 600
    assert store.get_many(keys) == recorded


# --- list_full with full_since_at_most_ms ----------------------------------------------------


def test_list_full_keeps_groups_full_since_at_most_the_bound(store: GroupStateStore) -> None:
    """Only full groups with full_since_ms <= the bound are listed, the bound itself included."""
    first, since_1500, topic = group_of(APP, 1), group_of(APP, 2), topic_of(COMMUNITY, "cT1")
    other_app, too_new, other_too_new = (
        group_of(OTHER_APP, 1),
        group_of(APP, 3),
        group_of(OTHER_APP, 2),
    )
    exited, cleared = group_of(APP, 4), group_of(APP, 5)
    record_full(store, first, 1000)
    record_full(store, since_1500, 1500)
    record_full(store, since_1500, 9000)  # still full since 1500: its last event is later
    record_full(store, topic, 2000)
    record_full(store, other_app, 2000)
    record_full(store, too_new, 2001)
    record_full(store, other_too_new, 5000)
    record_full(store, exited, 500)
    record_kind(store, exited, EventKind.MEMBER_EXIT, 600)
    record_full(store, cleared, 700)
    clear(store, cleared, 800)

    def listed(sdk_app_id: int, at_most_ms: int | None) -> list[GroupKey]:
        return [state.key for state in store.list_full(sdk_app_id, 100, None, at_most_ms)]

    assert listed(0, 2000) == [first, since_1500, topic, other_app]
    assert store.list_full(0, 100, None, 2000) == [
        store.get(key) for key in (first, since_1500, topic, other_app)
    ]
    assert listed(0, 1999) == [first, since_1500]
    assert listed(0, 999) == []
    assert listed(APP, 2000) == [first, since_1500, topic]
    assert listed(OTHER_APP, 2000) == [other_app]
    assert listed(OTHER_APP, 1999) == []
    everything = [first, since_1500, topic, other_app, too_new, other_too_new]
    assert listed(0, None) == everything
    assert listed(0, 5000) == everything


def test_bounded_pages_walk_exactly_the_groups_full_since_at_most_the_bound(
    store: GroupStateStore,
) -> None:
    """Pages of 4 under a bound, for all apps and one, give exactly the bounded groups in order."""
    full_since: dict[GroupKey, int] = {}
    for i in range(90):
        group = group_of(APP + i % 3, i)
        key = topic_of(group, f"c{i:03d}") if i % 4 == 0 else group
        full_since[key] = 1000 + (i * 7) % 30 * 10
        record_full(store, key, full_since[key])
    bound = 1150
    for sdk_app_id in (0, APP):
        expected = sorted(
            (since, key)
            for key, since in full_since.items()
            if since <= bound and sdk_app_id in (0, key.sdk_app_id)
        )
        assert any(since == bound for since, _ in expected)
        assert len(expected) < sum(sdk_app_id in (0, key.sdk_app_id) for key in full_since)
        walked = walk_full(store, sdk_app_id, 4, bound)
        assert [(state.full_since_ms, state.key) for state in walked] == expected


# --- count ----------------------------------------------------------------------------------


def test_count_of_an_empty_store_is_zero(store: GroupStateStore) -> None:
    """A new store counts no tracked, full or destroyed state, for every app and for one."""
    assert store.count(0) == GroupCounts(0, 0, 0)
    assert store.count(APP) == GroupCounts(0, 0, 0)


def test_count_tallies_tracked_full_and_destroyed_states(store: GroupStateStore) -> None:
    """count(app) tallies that app's groups and topics, count(0) every app's, others count 0."""
    full_topic, cleared_topic = topic_of(COMMUNITY, "cA"), topic_of(COMMUNITY, "cB")
    record_full(store, COMMUNITY, 1000)
    record_full(store, full_topic, 1000)
    record_full(store, cleared_topic, 1000)
    clear(store, cleared_topic, 1100)
    exited = group_of(APP, 1)
    record_full(store, exited, 1000)
    record_kind(store, exited, EventKind.MEMBER_EXIT, 1100)
    destroyed = GroupKey(APP, "@TGS#_@TGS#cDESTROYED1")
    record_full(store, topic_of(destroyed, "cC"), 1000)
    record_kind(store, destroyed, EventKind.DESTROYED, 2000)
    record_full(store, group_of(OTHER_APP, 1), 1000)
    record_kind(store, group_of(OTHER_APP, 2), EventKind.DESTROYED, 1000)
    assert store.count(APP) == GroupCounts(6, 2, 2)
    assert store.count(OTHER_APP) == GroupCounts(2, 1, 1)
    assert store.count(0) == GroupCounts(8, 3, 3)
    assert store.count(OTHER_APP + 1) == GroupCounts(0, 0, 0)


# --- change log -----------------------------------------------------------------------------


def test_change_log_bounds_of_a_new_store_are_zero(store: GroupStateStore) -> None:
    """A new store's log is empty: bounds (0, 0) and no change after 0."""
    assert store.change_log_bounds() == ChangeLogBounds(0, 0)
    assert store.changes_after(0, 10) == []


def test_whole_group_event_logs_one_change_per_changed_state(store: GroupStateStore) -> None:
    """An exit of a group with two topics logs three changes, each the state stored after it."""
    topics = topic_of(COMMUNITY, "cA"), topic_of(COMMUNITY, "cB")
    record_full(store, COMMUNITY, 1000)
    for topic in topics:
        record_full(store, topic, 1100)
    head = store.change_log_bounds().head
    before = now_ms()
    outcome = record_kind(store, COMMUNITY, EventKind.MEMBER_EXIT, 2000)
    after = now_ms()
    logged = store.changes_after(head, 100)
    assert len(logged) == 3
    assert {change.state for change in logged} == set(outcome.changed)
    assert {change.state.key for change in logged} == {COMMUNITY, *topics}
    for change in logged:
        assert change.state == store.get(change.state.key)
        assert before <= change.change_time_ms <= after
        assert not change.forgotten
    sequences = [change.sequence for change in logged]
    assert head < sequences[0] < sequences[1] < sequences[2]
    assert store.change_log_bounds() == ChangeLogBounds(0, sequences[-1])


def test_every_applied_record_appends_its_changes_in_order(store: GroupStateStore) -> None:
    """Each applied record appends exactly its changed states, stamped during the call, in order."""
    topic = topic_of(COMMUNITY, "cA")
    events = [
        GroupEvent(KEY, EventKind.FULL, 1000),
        GroupEvent(KEY, EventKind.FULL, 1100),
        GroupEvent(topic, EventKind.FULL, 1200),
        GroupEvent(GroupKey(OTHER_APP, KEY.group_id), EventKind.DESTROYED, 1300),
        GroupEvent.cleared(KEY, 1400, REASON),
        GroupEvent(COMMUNITY, EventKind.DESTROYED, 1500),
    ]
    last = 0
    for event in events:
        before = now_ms()
        outcome = store.record(event)
        after = now_ms()
        assert outcome.applied
        logged = store.changes_after(last, 100)
        assert sorted(change.state.key for change in logged) == sorted(
            state.key for state in outcome.changed
        )
        for change in logged:
            assert change.sequence > last
            assert change.state == store.get(change.state.key)
            assert before <= change.change_time_ms <= after
            assert not change.forgotten
            last = change.sequence
        assert store.change_log_bounds() == ChangeLogBounds(0, last)
    assert len(store.changes_after(0, 100)) == 7


def test_record_that_is_not_applied_logs_nothing(store: GroupStateStore) -> None:
    """A repeated event, a late one and a clear of a not-full group leave the log as it was."""
    record_full(store, KEY, 2000)
    record_full(store, group_of(APP, 1), 1000)
    record_kind(store, group_of(APP, 1), EventKind.MEMBER_EXIT, 1500)
    bounds, logged = store.change_log_bounds(), store.changes_after(0, 100)
    for event in (
        GroupEvent(KEY, EventKind.FULL, 2000),
        GroupEvent(KEY, EventKind.FULL, 1000),
        GroupEvent(KEY, EventKind.MEMBER_EXIT, 1500),
        GroupEvent.cleared(KEY, 1999, REASON),
        GroupEvent.cleared(group_of(APP, 1), 3000, REASON),
        GroupEvent(group_of(APP, 1), EventKind.MEMBER_EXIT, 1500),
    ):
        assert not store.record(event).applied
    assert store.change_log_bounds() == bounds
    assert store.changes_after(0, 100) == logged


def test_changes_after_respects_limit_and_order(store: GroupStateStore) -> None:
    """changes_after gives at most `limit` changes above the sequence, oldest first."""
    keys = [group_of(APP, i) for i in range(7)]
    for i, key in enumerate(keys):
        record_full(store, key, 1000 + i)
    everything = store.changes_after(0, 100)
    assert [change.state.key for change in everything] == keys
    assert [change.sequence for change in everything] == sorted(
        {change.sequence for change in everything}
    )
    assert store.changes_after(0, 3) == everything[:3]
    assert store.changes_after(everything[2].sequence, 3) == everything[3:6]
    assert store.changes_after(everything[5].sequence, 3) == everything[6:]
    assert store.changes_after(everything[-1].sequence, 3) == []
    assert store.changes_after(0, 1) == everything[:1]
    assert store.change_log_bounds() == ChangeLogBounds(0, everything[-1].sequence)


# --- prune ----------------------------------------------------------------------------------


def test_prune_forgets_destroyed_states_older_than_the_cutoff(store: GroupStateStore) -> None:
    """Destroyed states last changed before the cutoff are forgotten and logged so; others stay."""
    old = GroupKey(APP, "@TGS#_@TGS#cDESTROYED1")
    old_topics = topic_of(old, "cA"), topic_of(old, "cB")
    for topic in old_topics:
        record_full(store, topic, 1000)
    record_kind(store, old, EventKind.DESTROYED, 1500)
    other_app_old = group_of(OTHER_APP, 1)
    record_kind(store, other_app_old, EventKind.DESTROYED, 1200)
    at_cutoff, newer = group_of(APP, 1), group_of(APP, 2)
    record_kind(store, at_cutoff, EventKind.DESTROYED, 2000)
    record_kind(store, newer, EventKind.DESTROYED, 3000)
    full_old, exited_old, cleared_old = group_of(APP, 3), group_of(APP, 4), group_of(APP, 5)
    record_full(store, full_old, 100)
    record_full(store, exited_old, 100)
    record_kind(store, exited_old, EventKind.MEMBER_EXIT, 200)
    record_full(store, cleared_old, 100)
    clear(store, cleared_old, 200)
    forgotten = [old, *old_topics, other_app_old]
    kept = [at_cutoff, newer, full_old, exited_old, cleared_old]
    last_states = store.get_many(forgotten)
    kept_states = store.get_many(kept)
    assert store.count(0) == GroupCounts(9, 1, 6)
    head = store.change_log_bounds().head

    before = now_ms()
    assert store.prune(2000, 0) == PruneOutcome(forgotten=4, changes_deleted=0)
    after = now_ms()

    for key in forgotten:
        assert store.get(key) is None
    assert store.get_many(forgotten) == {}
    assert store.get_many(kept) == kept_states
    assert store.count(0) == GroupCounts(5, 1, 2)
    assert store.count(OTHER_APP) == GroupCounts(0, 0, 0)
    logged = store.changes_after(head, 100)
    assert {change.state.key: change.state for change in logged} == last_states
    assert len(logged) == 4
    for change in logged:
        assert change.forgotten
        assert before <= change.change_time_ms <= after
    sequences = [change.sequence for change in logged]
    assert head < sequences[0] and sequences == sorted(set(sequences))
    assert store.change_log_bounds() == ChangeLogBounds(0, sequences[-1])

    assert store.prune(2000, 0) == PruneOutcome(0, 0)
    assert store.change_log_bounds() == ChangeLogBounds(0, sequences[-1])
    assert store.count(0) == GroupCounts(5, 1, 2)


def test_prune_deletes_changes_stamped_before_the_cutoff(store: GroupStateStore) -> None:
    """Older changes go, pruned_through becomes the newest of them, and head and states stay."""
    for i in range(3):
        record_full(store, group_of(APP, i), 1000 + i)
    old = store.changes_after(0, 100)
    wait_until_clock_passes(max(change.change_time_ms for change in old))
    for i in range(3, 6):
        record_full(store, group_of(APP, i), 1000 + i)
    new = store.changes_after(old[-1].sequence, 100)
    assert len(new) == 3
    cutoff = min(change.change_time_ms for change in new)  # stamped at the cutoff: kept
    head = store.change_log_bounds().head

    assert store.prune(0, cutoff) == PruneOutcome(forgotten=0, changes_deleted=3)
    assert store.change_log_bounds() == ChangeLogBounds(old[-1].sequence, head)
    assert store.changes_after(0, 100) == new
    assert store.changes_after(0, 1)[0].sequence > old[-1].sequence
    assert store.count(0) == GroupCounts(6, 6, 0)

    assert store.prune(0, cutoff) == PruneOutcome(0, 0)
    assert store.change_log_bounds() == ChangeLogBounds(old[-1].sequence, head)
    assert store.changes_after(0, 100) == new


def test_pruning_the_whole_log_keeps_head_and_never_reuses_a_sequence(
    store: GroupStateStore,
) -> None:
    """With every change deleted, bounds are (head, head), and the next change is above head."""
    for i in range(3):
        record_full(store, group_of(APP, i), 1000 + i)
    logged = store.changes_after(0, 100)
    head = store.change_log_bounds().head
    wait_until_clock_passes(max(change.change_time_ms for change in logged))
    assert store.prune(0, now_ms()) == PruneOutcome(0, 3)
    assert store.change_log_bounds() == ChangeLogBounds(head, head)
    assert store.changes_after(0, 100) == []
    record_full(store, group_of(APP, 3), 1003)
    (change,) = store.changes_after(0, 100)
    assert change.sequence > head
    assert store.change_log_bounds() == ChangeLogBounds(head, change.sequence)


def test_prune_forgets_and_deletes_in_one_pass(store: GroupStateStore) -> None:
    """One pass both forgets old destroyed states and deletes old changes, counting each."""
    destroyed = GroupKey(APP, "@TGS#_@TGS#cDESTROYED1")
    record_full(store, topic_of(destroyed, "cA"), 1000)
    record_kind(store, destroyed, EventKind.DESTROYED, 1500)
    record_full(store, KEY, 1000)
    old = store.changes_after(0, 100)
    assert len(old) == 4
    wait_until_clock_passes(max(change.change_time_ms for change in old))
    cutoff = now_ms()
    outcome = store.prune(2000, cutoff)
    assert outcome == PruneOutcome(forgotten=2, changes_deleted=4)
    logged = store.changes_after(0, 100)
    assert [change.forgotten for change in logged] == [True, True]
    bounds = store.change_log_bounds()
    assert bounds == ChangeLogBounds(old[-1].sequence, logged[-1].sequence)
    assert store.count(0) == GroupCounts(1, 1, 0)
    assert store.prune(2000, cutoff) == PruneOutcome(0, 0)
    assert store.change_log_bounds() == bounds


def test_concurrent_prunes_forget_each_state_once(store: GroupStateStore) -> None:
    """Four prunes at once forget 40 destroyed states and delete old changes once in total."""
    for i in range(40):
        record_kind(store, group_of(APP, i), EventKind.DESTROYED, 1000 + i)
    old = store.changes_after(0, 100)
    wait_until_clock_passes(max(change.change_time_ms for change in old))
    cutoff = now_ms()
    outcomes: list[PruneOutcome] = []

    def prune() -> None:
        outcomes.append(store.prune(5000, cutoff))

    assert run_threads(*[prune] * 4) == []
    assert sum(outcome.forgotten for outcome in outcomes) == 40
    assert sum(outcome.changes_deleted for outcome in outcomes) == 40
    logged = store.changes_after(0, 1000)
    assert len(logged) == 40
    assert sorted(change.state.key for change in logged) == [group_of(APP, i) for i in range(40)]
    assert all(change.forgotten for change in logged)
    assert store.count(0) == GroupCounts(0, 0, 0)


def test_group_reused_after_being_forgotten_is_tracked_afresh(store: GroupStateStore) -> None:
    """A forgotten group and topic start anew, even from events older than their destruction."""
    topic = topic_of(COMMUNITY, "cA")
    record_full(store, topic, 1000)
    record_kind(store, COMMUNITY, EventKind.DESTROYED, 2000)
    assert store.prune(3000, 0) == PruneOutcome(2, 0)
    head = store.change_log_bounds().head
    group_outcome = record_full(store, COMMUNITY, 1500)
    topic_outcome = record_full(store, topic, 1600)
    assert group_outcome.applied and topic_outcome.applied
    assert store.get(COMMUNITY) == group_outcome.state == full_state(COMMUNITY, 1500)
    assert store.get(topic) == topic_outcome.state == full_state(topic, 1600)
    assert store.count(0) == GroupCounts(2, 2, 0)
    assert [state.key for state in store.list_full(0, 10, None)] == [COMMUNITY, topic]
    logged = store.changes_after(head, 100)
    assert [(change.state, change.forgotten) for change in logged] == [
        (full_state(COMMUNITY, 1500), False),
        (full_state(topic, 1600), False),
    ]


# --- wait_for_changes and ping --------------------------------------------------------------


def test_first_wait_with_zero_timeout_returns_at_once(store: GroupStateStore) -> None:
    """The first call, with timeout 0, starts listening and returns at once."""
    started = time.monotonic()
    store.wait_for_changes(0)
    assert time.monotonic() - started < 1


def test_wait_returns_when_another_thread_records(store: GroupStateStore) -> None:
    """A 10 s wait returns well before its timeout when another thread records meanwhile."""
    store.wait_for_changes(0)
    stop = threading.Event()

    def write_later() -> None:
        if not stop.wait(0.3):
            record_full(store, KEY, 1000)

    writer = threading.Thread(target=write_later)
    writer.start()
    try:
        started = time.monotonic()
        store.wait_for_changes(10)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        writer.join()
    assert elapsed < 5


def test_commit_between_waits_is_not_missed(store: GroupStateStore) -> None:
    """A change committed after one wait returned wakes the next wait at once."""
    store.wait_for_changes(0)
    record_full(store, KEY, 1000)
    started = time.monotonic()
    store.wait_for_changes(10)
    assert time.monotonic() - started < 5


def test_wait_without_a_change_lasts_about_its_timeout(store: GroupStateStore) -> None:
    """With nothing committed, wait_for_changes(0.2) returns after about 0.2 s."""
    store.wait_for_changes(0)
    started = time.monotonic()
    store.wait_for_changes(0.2)
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 3


def test_ping_answers_on_a_working_store(store: GroupStateStore) -> None:
    """ping returns None when the store answers."""
    assert store.ping() is None  # type: ignore[func-returns-value]


# --- concurrency ----------------------------------------------------------------------------


def test_reader_sees_every_change_once_in_order_under_concurrent_writers(
    store: GroupStateStore,
) -> None:
    """Following changes_after while 8 threads record 400 events sees each change once, in order."""
    writers_done = threading.Event()
    seen: list[StateChange] = []
    went_back: list[tuple[int, int]] = []

    def write(thread: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(50):
                record_full(store, group_of(APP + thread % 2, thread * 100 + i), 1000 + i)

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
            batch = store.changes_after(last, 50)
            for change in batch:
                if change.sequence <= last:
                    went_back.append((last, change.sequence))
                last = max(last, change.sequence)
                seen.append(change)
            if done and not batch:
                return

    assert run_threads(write_all, read) == []
    assert went_back == []
    assert len(seen) == 400
    assert len({change.sequence for change in seen}) == 400
    expected = {
        group_of(APP + thread % 2, thread * 100 + i): full_state(
            group_of(APP + thread % 2, thread * 100 + i), 1000 + i
        )
        for thread in range(8)
        for i in range(50)
    }
    assert {change.state.key: change.state for change in seen} == expected


# --- rate counting (the stores and InMemoryRateCounter) ---------------------------------------

WINDOW_MS = 1000


def take(
    counter: RateCounter, bucket: str, now: int, limit: int = 2, *, force: bool = False
) -> Acquisition:
    """Acquire in `bucket` with a window of WINDOW_MS."""
    return counter.acquire(bucket, window_ms=WINDOW_MS, limit=limit, now_ms=now, force=force)


def test_acquire_counts_the_window_and_refuses_at_the_limit(counter: RateCounter) -> None:
    """Three slots are taken with their counts before; the fourth is refused and takes none."""
    taken = [take(counter, "b", 10_000 + i, limit=3) for i in range(3)]
    assert [(a.count_before, a.within_limit) for a in taken] == [(0, True), (1, True), (2, True)]
    assert all(a.slot is not None for a in taken)
    assert len({a.slot for a in taken}) == 3
    assert take(counter, "b", 10_003, limit=3) == Acquisition(3, False, None)
    assert take(counter, "b", 10_004, limit=3) == Acquisition(3, False, None)


def test_window_slides_so_a_slot_stamped_window_ms_ago_no_longer_counts(
    counter: RateCounter,
) -> None:
    """A slot counts while younger than the window: at exactly window_ms old it is out."""
    assert take(counter, "b", 1000).within_limit
    assert take(counter, "b", 1500).within_limit
    assert take(counter, "b", 1999) == Acquisition(2, False, None)
    at_window = take(counter, "b", 2000)
    assert (at_window.count_before, at_window.within_limit) == (1, True)
    assert take(counter, "b", 2499) == Acquisition(2, False, None)
    assert take(counter, "b", 2500).count_before == 1
    # The slots out of the window are still there for a longer one.
    wide = counter.acquire("b", window_ms=10_000, limit=10, now_ms=2500)
    assert (wide.count_before, wide.within_limit) == (4, True)


def test_forced_acquire_takes_a_slot_beyond_the_limit(counter: RateCounter) -> None:
    """force takes a slot even at the limit, reporting within_limit False; it then counts."""
    first = take(counter, "b", 1000, limit=1)
    forced = take(counter, "b", 1001, limit=1, force=True)
    assert (forced.count_before, forced.within_limit) == (1, False)
    assert forced.slot is not None
    assert forced.slot != first.slot
    assert take(counter, "b", 1002, limit=1) == Acquisition(2, False, None)
    within = take(counter, "other", 1002, limit=1, force=True)
    assert (within.count_before, within.within_limit) == (0, True)
    assert within.slot is not None


def test_count_slots_counts_the_window_as_acquire_does_and_takes_none(
    counter: RateCounter,
) -> None:
    """count_slots says what acquire's count_before would be, and leaves the window as it is:
    a limit of 1 still lets the next acquire take the slot."""
    assert counter.count_slots("b", window_ms=WINDOW_MS, now_ms=1000) == 0
    assert counter.count_slots("b", window_ms=WINDOW_MS, now_ms=1000) == 0
    assert take(counter, "b", 1000, limit=1).within_limit
    take(counter, "other", 1000, limit=1)
    assert counter.count_slots("b", window_ms=WINDOW_MS, now_ms=1001) == 1
    assert take(counter, "b", 1001, limit=1) == Acquisition(1, False, None)
    assert counter.count_slots("b", window_ms=WINDOW_MS, now_ms=1999) == 1
    assert counter.count_slots("b", window_ms=WINDOW_MS, now_ms=2000) == 0
    assert take(counter, "b", 2000, limit=1).within_limit


def test_release_frees_a_slot(counter: RateCounter) -> None:
    """A released slot no longer counts; releasing it again changes nothing."""
    first = take(counter, "b", 1000)
    take(counter, "b", 1001)
    assert take(counter, "b", 1002) == Acquisition(2, False, None)
    assert first.slot is not None
    counter.release(first.slot)
    again = take(counter, "b", 1003)
    assert (again.count_before, again.within_limit) == (1, True)
    counter.release(first.slot)
    assert take(counter, "b", 1004) == Acquisition(2, False, None)


def test_buckets_are_counted_apart(counter: RateCounter) -> None:
    """A bucket at its limit does not count against another one."""
    alice, bob = f"rule/{APP}/alice", f"rule/{APP}/管理员"
    assert take(counter, alice, 1000, limit=1).within_limit
    bob_first = take(counter, bob, 1001, limit=1)
    assert (bob_first.count_before, bob_first.within_limit) == (0, True)
    assert take(counter, alice, 1002, limit=1) == Acquisition(1, False, None)
    assert take(counter, bob, 1003, limit=1) == Acquisition(1, False, None)


def test_prune_slots_deletes_only_slots_stamped_before_the_cutoff(counter: RateCounter) -> None:
    """prune_slots deletes the older slots of every bucket, keeps the one stamped at the cutoff."""
    for now, bucket in ((1000, "a"), (1999, "b"), (2000, "a"), (3000, "b")):
        assert take(counter, bucket, now, limit=10).within_limit
    assert counter.prune_slots(2000) == 2
    assert counter.prune_slots(2000) == 0
    for bucket in ("a", "b"):
        assert counter.acquire(bucket, window_ms=10**9, limit=10, now_ms=3000).count_before == 1


def test_prune_slots_deletes_a_backlog_larger_than_a_batch(counter: RateCounter) -> None:
    """2,100 old slots (three batches) are all deleted by one call, and a newer one is kept."""
    for i in range(2100):
        counter.acquire(f"b{i % 3}", window_ms=1, limit=1, now_ms=1000 + i)
    counter.acquire("b0", window_ms=1, limit=1, now_ms=9000)
    assert counter.prune_slots(5000) == 2100
    assert counter.acquire("b0", window_ms=10**9, limit=10, now_ms=9001).count_before == 1


def test_threads_racing_on_one_bucket_take_exactly_the_limit(counter: RateCounter) -> None:
    """Eight threads making 20 acquires each at limit 50 take exactly 50 slots, counts 0 to 49."""
    results: list[Acquisition] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        for _ in range(20):
            results.append(counter.acquire("race", window_ms=60_000, limit=50, now_ms=10_000))

    assert run_threads(*[race] * 8) == []
    assert len(results) == 160
    taken = [result for result in results if result.within_limit]
    assert sorted(result.count_before for result in taken) == list(range(50))
    assert len({result.slot for result in taken} - {None}) == 50
    assert all(
        result == Acquisition(50, False, None) for result in results if not result.within_limit
    )
    assert counter.acquire("race", window_ms=60_000, limit=50, now_ms=10_001).count_before == 50


# --- the decision log -------------------------------------------------------------------------


def decision(decision_id: str, decided_at_ms: int, **fields: Any) -> DecisionRecord:
    """An allowed decision of APP by alice, with the given fields changed."""
    record = DecisionRecord(
        decision_id=decision_id,
        decided_at_ms=decided_at_ms,
        sdk_app_id=APP,
        operator_account="alice",
        effect="allow",
        error_code=0,
        error_info="",
        rule_id="default",
        reason="no rule matched",
        policy_revision="rev-1",
        shadow_rule_ids=(),
        latency_us=42,
        request_json='{"GroupType": "Public"}',
    )
    return replace(record, **fields)


def walk_decisions(store: Store, query: DecisionQuery, limit: int) -> list[DecisionRecord]:
    """Every page of list_decisions, following the cursor until an empty page."""
    walked: list[DecisionRecord] = []
    after = None
    while page := store.list_decisions(query, limit, after):
        assert len(page) <= limit
        walked += page
        after = DecisionCursor(page[-1].decided_at_ms, page[-1].decision_id)
    return walked


def newest_first(records: list[DecisionRecord]) -> list[DecisionRecord]:
    """The records ordered as list_decisions orders them."""
    return sorted(records, key=lambda r: (r.decided_at_ms, r.decision_id), reverse=True)


def test_decisions_are_listed_newest_first_page_after_page(store: Store) -> None:
    """Pages of 4 over 30 decisions sharing times list each once, by (time, ID) descending."""
    prefixes = ["a", "B", "é", "中", "_"]
    records = [
        decision(f"{prefixes[n % 5]}{(n * 13) % 30:02}", 1000 + (n * 7) % 10) for n in range(30)
    ]
    store.append_decisions(records[:17])
    store.append_decisions(records[17:])
    assert store.list_decisions(DecisionQuery(), 4, None) == newest_first(records)[:4]
    assert walk_decisions(store, DecisionQuery(), 4) == newest_first(records)
    assert store.list_decisions(DecisionQuery(), 100, None) == newest_first(records)


def filtered_decisions() -> list[DecisionRecord]:
    """40 decisions varying every filtered field; two share each decided_at_ms."""
    return [
        decision(
            f"d-{n:02}",
            1000 + (n // 2) * 10,
            sdk_app_id=APP if n % 2 == 0 else OTHER_APP,
            operator_account=["alice", "bob", "Алиса"][n % 3],
            effect="deny" if n % 4 == 0 else "allow",
            rule_id="no-public" if n % 5 == 0 else "default",
        )
        for n in range(40)
    ]


def matches(query: DecisionQuery, record: DecisionRecord) -> bool:
    """Whether a record passes every filter of the query set (inclusive time bounds)."""
    return (
        query.sdk_app_id in (0, record.sdk_app_id)
        and query.operator_account in ("", record.operator_account)
        and query.effect in ("", record.effect)
        and query.rule_id in ("", record.rule_id)
        and query.decision_id in ("", record.decision_id)
        and (query.decided_at_least_ms is None or record.decided_at_ms >= query.decided_at_least_ms)
        and (query.decided_at_most_ms is None or record.decided_at_ms <= query.decided_at_most_ms)
    )


DECISION_FILTERS = {
    "sdk_app_id": DecisionQuery(sdk_app_id=OTHER_APP),
    "operator_account": DecisionQuery(operator_account="Алиса"),
    "effect": DecisionQuery(effect="deny"),
    "rule_id": DecisionQuery(rule_id="no-public"),
    "decision_id": DecisionQuery(decision_id="d-17"),
    "decided_at_least": DecisionQuery(decided_at_least_ms=1150),
    "decided_at_most": DecisionQuery(decided_at_most_ms=1040),
    "time_range": DecisionQuery(decided_at_least_ms=1050, decided_at_most_ms=1120),
    "app_operator_effect": DecisionQuery(sdk_app_id=APP, operator_account="alice", effect="deny"),
    "operator_rule_time": DecisionQuery(
        operator_account="bob", rule_id="no-public", decided_at_most_ms=1160
    ),
}


@pytest.mark.parametrize("query", DECISION_FILTERS.values(), ids=DECISION_FILTERS.keys())
def test_each_decision_filter_keeps_only_matching_records(
    store: Store, query: DecisionQuery
) -> None:
    """A filter (or several, ANDed) lists exactly the matching decisions, newest first, in pages."""
    records = filtered_decisions()
    store.append_decisions(records)
    expected = newest_first([record for record in records if matches(query, record)])
    assert 0 < len(expected) < len(records)
    assert walk_decisions(store, query, 3) == expected
    assert store.list_decisions(query, 2, None) == expected[:2]


def test_filters_matching_nothing_list_nothing(store: Store) -> None:
    """Filters that no decision passes together give an empty page."""
    store.append_decisions(filtered_decisions())
    assert store.list_decisions(DecisionQuery(sdk_app_id=APP, decision_id="d-17"), 10, None) == []
    assert store.list_decisions(DecisionQuery(effect="Deny"), 10, None) == []
    assert store.list_decisions(DecisionQuery(decided_at_least_ms=1200), 10, None) == []


def test_duplicate_decision_id_is_ignored(store: Store) -> None:
    """A decision_id already stored, or repeated in a batch, keeps its first record."""
    first = decision("d-1", 1000)
    store.append_decisions([first])
    second = decision("d-2", 1500)
    store.append_decisions([replace(first, effect="deny", decided_at_ms=2000), second])
    third = decision("d-3", 1600)
    store.append_decisions([third, replace(third, reason="repeated")])
    store.append_decisions([])
    assert store.list_decisions(DecisionQuery(), 10, None) == [third, second, first]


def test_prune_decisions_deletes_records_decided_before_the_cutoff(store: Store) -> None:
    """2,500 older decisions (three batches) go in one call; one decided at the cutoff stays."""
    old = [decision(f"old-{n:04}", 1000 + n) for n in range(2500)]
    kept = [decision("at-cutoff", 5000), decision("newer", 6000)]
    store.append_decisions(old + kept)
    assert store.prune_decisions(5000) == 2500
    assert store.prune_decisions(5000) == 0
    assert store.list_decisions(DecisionQuery(), 100, None) == newest_first(kept)


def test_decision_round_trips_every_field(store: Store) -> None:
    """Every field reads back as appended, shadow rule IDs and non-ASCII JSON included."""
    request = {"GroupType": "Public", "Name": "讨论组 😀", "Quote": "\"'\\", "MemberList": []}
    record = DecisionRecord(
        decision_id="01J9Z3Q-决定-😀",
        decided_at_ms=1_733_000_000_123,
        sdk_app_id=OTHER_APP,
        operator_account="管理员@example",
        effect="deny",
        error_code=10101,
        error_info="公开群不能从网页创建",
        rule_id="no-public-groups-from-web",
        reason='group type "Public" from platform Web',
        policy_revision="sha256:9f86d081884c7d65",
        shadow_rule_ids=("quota-per-app", "名字规则", "rate/ops"),
        latency_us=987_654,
        request_json=json.dumps(request, ensure_ascii=False, indent=1),
    )
    plain = decision("plain", 1_733_000_000_000)
    store.append_decisions([record, plain])
    (read,) = store.list_decisions(DecisionQuery(decision_id=record.decision_id), 10, None)
    assert read == record
    assert read.shadow_rule_ids == ("quota-per-app", "名字规则", "rate/ops")
    assert read.request_json == record.request_json
    assert json.loads(read.request_json) == request
    assert store.list_decisions(DecisionQuery(decision_id="plain"), 10, None) == [plain]


def test_slots_and_decisions_are_not_in_the_change_log(store: Store) -> None:
    """Taking, releasing and pruning slots and decisions logs no change and wakes no waiter."""
    store.wait_for_changes(0)
    slot = take(store, "b", 1000).slot
    assert slot is not None
    store.release(slot)
    take(store, "b", 1001)
    store.append_decisions([decision("d-1", 1000)])
    assert store.prune_slots(10**12) == 1
    assert store.prune_decisions(10**12) == 1
    assert store.change_log_bounds() == ChangeLogBounds(0, 0)
    started = time.monotonic()
    store.wait_for_changes(0.3)
    assert time.monotonic() - started >= 0.25


# --- values a store cannot keep ---------------------------------------------------------------
# The service's edge refuses these first (field_limits); called directly, every store refuses
# them as ValueNotStorable, which is not retried, never as StoreUnavailable, which is.

BEYOND_64_BITS = 2**63


@pytest.mark.parametrize(
    "event",
    [
        GroupEvent(GroupKey(BEYOND_64_BITS, "@TGS#2J4SZEAEL"), EventKind.FULL, 1000),
        GroupEvent(KEY, EventKind.FULL, BEYOND_64_BITS),
        GroupEvent(KEY, EventKind.MEMBER_EXIT, -BEYOND_64_BITS - 1),
    ],
    ids=["sdk_app_id", "event_time", "negative_event_time"],
)
def test_an_event_with_a_number_beyond_64_bits_is_not_storable_and_writes_nothing(
    store: Store, event: GroupEvent
) -> None:
    """Recording it raises ValueNotStorable; nothing is written, and the store serves on."""
    with pytest.raises(ValueNotStorable):
        store.record(event)
    assert store.count(0) == GroupCounts(0, 0, 0)
    assert store.change_log_bounds() == ChangeLogBounds(0, 0)
    assert record_full(store, KEY, 1000).applied


def test_event_times_at_the_bounds_of_64_bits_are_stored_and_read_back(store: Store) -> None:
    """-2**63 and 2**63-1 fit: written as SQL literals, the lower bound is a numeric one."""
    low, high = GroupKey(APP, "@TGS#low"), GroupKey(APP, "@TGS#high")
    assert record_full(store, low, -BEYOND_64_BITS).applied
    assert record_full(store, high, BEYOND_64_BITS - 1).applied
    assert store.get(low) == full_state(low, -BEYOND_64_BITS)
    assert store.get(high) == full_state(high, BEYOND_64_BITS - 1)
    changes = store.changes_after(0, 10)
    assert [change.state for change in changes] == [store.get(low), store.get(high)]


def test_a_decision_batch_with_a_number_beyond_64_bits_is_not_storable_and_writes_nothing(
    store: Store,
) -> None:
    """The batch raises ValueNotStorable and stores none of its records; the store serves on."""
    batch = [decision("d-1", 1000), decision("d-2", 1001, latency_us=BEYOND_64_BITS)]
    with pytest.raises(ValueNotStorable):
        store.append_decisions(batch)
    assert store.list_decisions(DecisionQuery(), 10, None) == []
    store.append_decisions(batch[:1])
    assert store.list_decisions(DecisionQuery(), 10, None) == batch[:1]


def test_a_rate_limit_bucket_that_is_not_text_is_not_storable(store: Store) -> None:
    """A bucket holding a lone surrogate (no UTF-8 for it) raises ValueNotStorable."""
    with pytest.raises(ValueNotStorable):
        take(store, "rule:1400000000:\ud800", 1000)
    assert take(store, "rule:1400000000:alice", 1000).within_limit
