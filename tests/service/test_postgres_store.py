"""The PostgreSQL group-state store's own concerns: migrations, schemas, pool, failures.

What every store does (events, pagination, concurrency) is in test_store_contract.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import psycopg
import pytest

from policy_service.errors import StoreUnavailable
from policy_service.group_state import EventKind, GroupEvent, GroupKey
from policy_service.pagination import FullGroupsCursor
from policy_service.postgres_store import MIGRATIONS, PostgresGroupStateStore, list_full_query
from policy_service.store import open_store
from tests.conftest import PostgresSchema

KEY = GroupKey(1400000000, "@TGS#2J4SZEAEL")
FULL = GroupEvent(KEY, EventKind.FULL, 1000)


def closed_port() -> int:
    """A local TCP port nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_urls_open_a_postgres_store(postgres_schema: PostgresSchema, scheme: str) -> None:
    """open_store gives the PostgreSQL store for postgresql:// and postgres:// URLs."""
    url = scheme + postgres_schema.url.removeprefix("postgresql")
    store = open_store(url)
    try:
        assert isinstance(store, PostgresGroupStateStore)
    finally:
        store.close()


def test_concurrent_replicas_apply_each_migration_once(postgres_schema: PostgresSchema) -> None:
    """Six stores opened at once on a fresh schema all succeed; each version is applied once."""
    barrier = threading.Barrier(6)
    stores: list[PostgresGroupStateStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        barrier.wait()
        try:
            stores.append(PostgresGroupStateStore(postgres_schema.url, min_size=1, max_size=2))
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
    assert tables == [
        (postgres_schema.name, "group_state"),
        (postgres_schema.name, "schema_migrations"),
    ]


def test_state_survives_a_new_store_on_the_same_schema(postgres_schema: PostgresSchema) -> None:
    """A second store on the same schema sees what the first recorded, and migrates nothing."""
    first = PostgresGroupStateStore(postgres_schema.url)
    outcome = first.record(FULL)
    first.close()
    second = PostgresGroupStateStore(postgres_schema.url)
    try:
        assert second.get(KEY) == outcome.state
    finally:
        second.close()
    with postgres_schema.connect() as conn:
        row = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert row == (len(MIGRATIONS),)


def test_unreachable_server_is_store_unavailable_quickly() -> None:
    """A port nothing listens on fails at once as StoreUnavailable, without the password."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="PostgreSQL") as failed:
        PostgresGroupStateStore(f"postgresql://chat:s3cret@127.0.0.1:{closed_port()}/test")
    assert time.monotonic() - started < 10
    assert "s3cret" not in str(failed.value)
    assert "s3cret" not in repr(failed.value.__cause__)


def test_malformed_url_is_store_unavailable_without_the_url() -> None:
    """A URL libpq cannot parse is StoreUnavailable, quoting neither it nor its password."""
    with pytest.raises(StoreUnavailable, match="cannot be parsed") as failed:
        PostgresGroupStateStore("postgresql://chat:s3cret@[::1/test")
    assert "s3cret" not in str(failed.value)
    assert failed.value.__cause__ is None


def test_failing_statement_is_store_unavailable(postgres_schema: PostgresSchema) -> None:
    """A query error (here, the table dropped under the store) is StoreUnavailable."""
    store = PostgresGroupStateStore(postgres_schema.url)
    try:
        with postgres_schema.connect() as conn:
            conn.execute("DROP TABLE group_state")
        with pytest.raises(StoreUnavailable, match="group_state"):
            store.record(FULL)
        with pytest.raises(StoreUnavailable, match="group_state"):
            store.get(KEY)
    finally:
        store.close()


def test_pool_recovers_after_server_connections_are_terminated(
    postgres_schema: PostgresSchema,
) -> None:
    """With every connection of the store killed, a call within a few seconds succeeds."""
    store = PostgresGroupStateStore(postgres_schema.url, min_size=4, max_size=4)
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


def explain(conn: psycopg.Connection[Any], sdk_app_id: int, after: FullGroupsCursor) -> Any:
    """The executed plan (JSON) of a 50-row page of list_full after `after`."""
    query, params = list_full_query(sdk_app_id, 50, after)
    row = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}", params).fetchone()
    assert row is not None
    return row[0][0]["Plan"]


@pytest.mark.parametrize("sdk_app_id", [0, 2])
def test_deep_page_is_an_index_range_scan(postgres_schema: PostgresSchema, sdk_app_id: int) -> None:
    """Deep in 20,000 groups, a page starts at its cursor in a partial index: as cheap as page 2."""
    store = PostgresGroupStateStore(postgres_schema.url)
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
