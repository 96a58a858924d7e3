"""What every store does with the audit trail and with the caller of a decision, run against
SQLite and PostgreSQL; and each store's migration from the schema before them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from policy_service.audit.audit_log import AuditCursor, AuditEvent, AuditQuery
from policy_service.engine.decision_log import DecisionQuery, DecisionRecord
from policy_service.errors import GroupNotFound, ValueNotStorable
from policy_service.groups.change_log import ChangeLogBounds
from policy_service.groups.state import EventKind, GroupCounts, GroupEvent, GroupKey
from policy_service.stores import postgres_schema as pg_schema
from policy_service.stores import sqlite_store
from policy_service.stores.postgres_store import PostgresGroupStateStore
from policy_service.stores.store import Store
from tests.event_loops import LoopThread, blocking_open
from tests.policy_service.stores import open_fresh
from tests.postgres import PostgresSchema

APP = 1400000000
OTHER_APP = 1400000123
KEY = GroupKey(APP, "@TGS#2J4SZEAEL")
CLEAR = "/chatpolicy.v1.GroupStateService/ClearGroupFull"
RECORD_FULL = "/chatpolicy.v1.GroupStateService/RecordGroupFull"
BEYOND_64_BITS = 2**63


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each kind (PostgreSQL: in a schema of its own), closed after."""
    opened = open_fresh(request.param, request, tmp_path)
    yield opened
    opened.close()


def audit(audit_id: str, occurred_at_ms: int, **fields: Any) -> AuditEvent:
    """A clear of KEY by ops, with the given fields changed."""
    event = AuditEvent(
        audit_id=audit_id,
        occurred_at_ms=occurred_at_ms,
        caller="ops",
        action=CLEAR,
        sdk_app_id=APP,
        group_id=KEY.group_id,
        topic_id="",
        reason="cap raised",
        result="OK",
        detail="applied",
        request_id="req-1",
        replica="host-a:4242",
    )
    return replace(event, **fields)


def newest_first(events: list[AuditEvent]) -> list[AuditEvent]:
    """The events ordered as list_audit_events orders them."""
    return sorted(events, key=lambda e: (e.occurred_at_ms, e.audit_id), reverse=True)


def walk(store: Store, query: AuditQuery, limit: int) -> list[AuditEvent]:
    """Every page of list_audit_events, following the cursor until an empty page."""
    walked: list[AuditEvent] = []
    after = None
    while page := store.list_audit_events(query, limit, after):
        assert len(page) <= limit
        walked += page
        after = AuditCursor(page[-1].occurred_at_ms, page[-1].audit_id)
    return walked


def test_audit_events_are_listed_newest_first_page_after_page(store: Store) -> None:
    """Pages of 4 over 30 events sharing times list each once, by (time, ID) descending."""
    prefixes = ["a", "B", "é", "中", "_"]
    events = [audit(f"{prefixes[n % 5]}{(n * 13) % 30:02}", 1000 + (n * 7) % 10) for n in range(30)]
    store.append_audit_events(events[:17])
    store.append_audit_events(events[17:])
    assert store.list_audit_events(AuditQuery(), 4, None) == newest_first(events)[:4]
    assert walk(store, AuditQuery(), 4) == newest_first(events)


def varied_events() -> list[AuditEvent]:
    """40 events varying every filtered field; two share each occurred_at_ms."""
    return [
        audit(
            f"e-{n:02}",
            1000 + (n // 2) * 10,
            caller=["ops", "janitor", "管理"][n % 3],
            action=CLEAR if n % 4 else "policy.reload",
            sdk_app_id=APP if n % 2 == 0 else OTHER_APP,
            group_id=["@TGS#A", "@TGS#B"][n % 5 % 2],
        )
        for n in range(40)
    ]


def matches(query: AuditQuery, event: AuditEvent) -> bool:
    """Whether an event passes every filter the query sets (inclusive time bounds)."""
    return (
        query.caller in ("", event.caller)
        and query.action in ("", event.action)
        and query.sdk_app_id in (0, event.sdk_app_id)
        and query.group_id in ("", event.group_id)
        and (
            query.occurred_at_least_ms is None or event.occurred_at_ms >= query.occurred_at_least_ms
        )
        and (query.occurred_at_most_ms is None or event.occurred_at_ms <= query.occurred_at_most_ms)
    )


AUDIT_FILTERS = {
    "caller": AuditQuery(caller="管理"),
    "action": AuditQuery(action="policy.reload"),
    "sdk_app_id": AuditQuery(sdk_app_id=OTHER_APP),
    "group_id": AuditQuery(group_id="@TGS#B"),
    "at_least": AuditQuery(occurred_at_least_ms=1150),
    "at_most": AuditQuery(occurred_at_most_ms=1040),
    "app_group_caller_range": AuditQuery(
        caller="ops",
        sdk_app_id=APP,
        group_id="@TGS#A",
        occurred_at_least_ms=1020,
        occurred_at_most_ms=1160,
    ),
}


@pytest.mark.parametrize("query", AUDIT_FILTERS.values(), ids=AUDIT_FILTERS.keys())
def test_each_audit_filter_keeps_only_matching_events(store: Store, query: AuditQuery) -> None:
    """A filter (or several, ANDed) lists exactly the matching events, newest first, in pages."""
    events = varied_events()
    store.append_audit_events(events)
    expected = newest_first([event for event in events if matches(query, event)])
    assert 0 < len(expected) < len(events)
    assert walk(store, query, 3) == expected


def test_audit_event_round_trips_every_field_and_a_known_id_is_ignored(store: Store) -> None:
    """Every field reads back as appended (non-ASCII, a topic); a repeated ID keeps the first."""
    event = audit(
        "01J9-审计-😀",
        1_733_000_000_123,
        caller="运维",
        sdk_app_id=OTHER_APP,
        topic_id="@TGS#_@TGS#c@TOPIC#_@TOPIC#x",
        reason='容量 "6000" \\ raised',
        result="NOT_FOUND",
        detail="group '@TGS#x' of SdkAppid 1 is not known",
    )
    store.append_audit_events([event, replace(event, detail="repeated")])
    store.append_audit_events([replace(event, result="OK")])
    store.append_audit_events([])
    assert store.list_audit_events(AuditQuery(), 10, None) == [event]


def test_prune_audit_events_deletes_events_before_the_cutoff(store: Store) -> None:
    """2,500 older events (three batches) go in one call; one at the cutoff stays."""
    old = [audit(f"old-{n:04}", 1000 + n) for n in range(2500)]
    kept = [audit("at-cutoff", 5000), audit("newer", 6000)]
    store.append_audit_events(old + kept)
    assert store.prune_audit_events(5000) == 2500
    assert store.prune_audit_events(5000) == 0
    assert store.list_audit_events(AuditQuery(), 100, None) == newest_first(kept)


def test_an_audit_batch_that_cannot_be_stored_stores_none_of_it(store: Store) -> None:
    """A batch with a number beyond 64 bits raises ValueNotStorable and stores nothing."""
    batch = [audit("a-1", 1000), audit("a-2", 1001, sdk_app_id=BEYOND_64_BITS)]
    with pytest.raises(ValueNotStorable):
        store.append_audit_events(batch)
    assert store.list_audit_events(AuditQuery(), 10, None) == []


# --- a state change and its audit event, in one transaction ------------------------------------


def test_record_stores_its_audit_event_saying_whether_it_applied(store: Store) -> None:
    """An audited event that applies is stored with detail "applied"; one that changes nothing
    (a repeat, a clear of a group not full) is audited too, saying why."""
    store.record(GroupEvent(KEY, EventKind.FULL, 1000), audit("a-1", 5000, action=RECORD_FULL))
    store.record(GroupEvent(KEY, EventKind.FULL, 1000), audit("a-2", 5001, action=RECORD_FULL))
    cleared = store.record(GroupEvent.cleared(KEY, 2000, "cap raised"), audit("a-3", 5002))
    store.record(GroupEvent.cleared(KEY, 3000, "again"), audit("a-4", 5003))
    assert cleared.applied
    details = {e.audit_id: e.detail for e in store.list_audit_events(AuditQuery(), 10, None)}
    assert details == {
        "a-1": "applied",
        "a-2": "not applied: the group's last event is not older",
        "a-3": "applied",
        "a-4": "not applied: the group is not full",
    }


def test_a_record_that_fails_stores_no_audit_event(store: Store) -> None:
    """A clear of an unknown group, and an event the store cannot keep, store no audit event."""
    with pytest.raises(GroupNotFound):
        store.record(GroupEvent.cleared(KEY, 1000, "cap raised"), audit("a-1", 5000))
    too_big = GroupEvent(KEY, EventKind.FULL, BEYOND_64_BITS)
    with pytest.raises(ValueNotStorable):
        store.record(too_big, audit("a-2", 5000, action=RECORD_FULL))
    assert store.list_audit_events(AuditQuery(), 10, None) == []
    assert store.count(0) == GroupCounts(0, 0, 0)


def test_an_audit_event_that_cannot_be_stored_undoes_its_state_change(store: Store) -> None:
    """When the audit event is refused, the event it audits is not applied nor logged."""
    with pytest.raises(ValueNotStorable):
        store.record(
            GroupEvent(KEY, EventKind.FULL, 1000),
            audit("a-1", BEYOND_64_BITS, action=RECORD_FULL),
        )
    assert store.get(KEY) is None
    assert store.change_log_bounds() == ChangeLogBounds(0, 0)
    assert store.list_audit_events(AuditQuery(), 10, None) == []
    assert store.record(GroupEvent(KEY, EventKind.FULL, 1000)).applied


def test_audit_events_are_not_in_the_change_log(store: Store) -> None:
    """Appending and pruning audit events logs no change."""
    store.append_audit_events([audit("a-1", 1000)])
    assert store.prune_audit_events(10**12) == 1
    assert store.change_log_bounds() == ChangeLogBounds(0, 0)


# --- the caller of a decision ----------------------------------------------------------------


def decision(decision_id: str, decided_at_ms: int, caller: str) -> DecisionRecord:
    """An allowed decision of APP by alice, asked for by `caller`."""
    return DecisionRecord(
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
        request_json="{}",
        caller=caller,
    )


def test_a_decision_keeps_its_caller_and_the_list_filters_on_it(store: Store) -> None:
    """The caller reads back as recorded, and the caller filter keeps only its decisions."""
    records = [
        decision(f"d-{n}", 1000 + n, ["adapter", "crm", "客服", ""][n % 4]) for n in range(12)
    ]
    store.append_decisions(records)
    everything = store.list_decisions(DecisionQuery(), 100, None)
    assert sorted(everything, key=lambda r: r.decision_id) == sorted(
        records, key=lambda r: r.decision_id
    )
    crm = store.list_decisions(DecisionQuery(caller="客服"), 100, None)
    assert [r.decision_id for r in crm] == ["d-10", "d-6", "d-2"]
    paged = store.list_decisions(DecisionQuery(caller="crm", operator_account="alice"), 2, None)
    assert [r.decision_id for r in paged] == ["d-9", "d-5"]


# --- migration from the schema before the audit trail -----------------------------------------

OLD_DECISION = (
    "d-old",
    1000,
    APP,
    "alice",
    "deny",
    10101,
    "no",
    "r",
    "why",
    "rev",
    "[]",
    7,
    "{}",
)
OLD_INSERT = "INSERT INTO creation_decision VALUES ({})"


def test_sqlite_file_of_the_previous_version_is_migrated(
    tmp_path: Path, event_loop_thread: LoopThread
) -> None:
    """A file at the version before keeps its decisions (caller empty) and gains the trail."""
    path = tmp_path / "chat-policy.db"
    previous = len(sqlite_store.MIGRATIONS) - 1
    with sqlite3.connect(path) as db:
        for script in sqlite_store.MIGRATIONS[:previous]:
            db.executescript(script)
        db.execute(OLD_INSERT.format(", ".join("?" * 13)), OLD_DECISION)
        db.execute(f"PRAGMA user_version = {previous}")
    db.close()
    store = blocking_open(event_loop_thread, sqlite_store.SQLiteGroupStateStore.open, path)
    try:
        assert_migrated(store)
    finally:
        store.close()


def test_postgres_schema_of_the_previous_version_is_migrated(
    postgres_schema: PostgresSchema, event_loop_thread: LoopThread
) -> None:
    """A schema at the version before keeps its decisions (caller empty) and gains the trail."""
    previous = len(pg_schema.MIGRATIONS) - 1
    with postgres_schema.connect() as conn, conn.transaction():
        conn.execute(
            "CREATE TABLE schema_migrations ("
            " version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for number, script in enumerate(pg_schema.MIGRATIONS[:previous], start=1):
            conn.execute(script)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
        conn.execute(OLD_INSERT.format(", ".join(["%s"] * 13)), OLD_DECISION)
    store = blocking_open(event_loop_thread, PostgresGroupStateStore.open, postgres_schema.url)
    try:
        assert_migrated(store)
    finally:
        store.close()


def assert_migrated(store: Any) -> None:
    """The old decision reads back with an empty caller; decisions and audit events store."""
    (old,) = store.list_decisions(DecisionQuery(), 10, None)
    assert (old.decision_id, old.caller) == ("d-old", "")
    store.append_decisions([decision("d-new", 2000, "crm")])
    assert [r.decision_id for r in store.list_decisions(DecisionQuery(caller="crm"), 10, None)] == [
        "d-new"
    ]
    store.record(GroupEvent(KEY, EventKind.FULL, 1000), audit("a-1", 5000, action=RECORD_FULL))
    assert [e.audit_id for e in store.list_audit_events(AuditQuery(), 10, None)] == ["a-1"]
