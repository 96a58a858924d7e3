"""The SQLite store's own concerns: its file, WAL, migrations and query plans.

What every store does (events, pagination, concurrency) is in test_store_contract.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from policy_service.decision_log import DecisionCursor, DecisionQuery
from policy_service.decision_rows import list_decisions_query
from policy_service.errors import StoreUnavailable
from policy_service.group_state import EventKind, GroupEvent, GroupKey, GroupState
from policy_service.sqlite_store import MIGRATIONS, SQLiteGroupStateStore
from policy_service.store import open_store

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
