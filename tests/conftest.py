"""Fixtures shared by the test packages: a PostgreSQL server, a fresh schema per test, and an
event loop on a thread of its own.

CHAT_POLICY_TEST_DATABASE_URL names the server (default: the local one, user postgres,
database test). When it does not answer, PostgreSQL tests are skipped, loudly; with CI set
to any non-empty value they fail instead, so a pipeline never passes without running them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.event_loops import LoopThread
from tests.postgres import DEFAULT_TEST_DATABASE_URL, PostgresSchema, with_params, without_password


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The test server's URL, once it answered; skip (fail when CI is set) if it does not."""
    url = os.environ.get("CHAT_POLICY_TEST_DATABASE_URL", "") or DEFAULT_TEST_DATABASE_URL
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        detail = " ".join(str(error).split())  # libpq messages span lines
        reason = f"PostgreSQL not reachable at {without_password(url)}: {detail}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
        pytest.skip(f"{reason}; set CI=1 to make this a failure")
    return url


@pytest.fixture
def postgres_schema(postgres_server_url: str) -> Iterator[PostgresSchema]:
    """A new, empty schema, dropped with everything in it after the test."""
    name = f"t_{uuid.uuid4().hex}"
    ident = sql.Identifier(name)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
    # search_path selects the schema; application_name lets a test find its own sessions.
    url = with_params(postgres_server_url, options=f"-csearch_path={name}", application_name=name)
    yield PostgresSchema(name, url, postgres_server_url)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))


@pytest.fixture
def event_loop_thread() -> Iterator[LoopThread]:
    """An event loop on a thread of its own, for async code called from plain test code."""
    loop = LoopThread()
    yield loop
    loop.stop()
