"""Fresh stores of each kind for the service tests, opened on a test event loop and seen
through a blocking view (tests.event_loops.Blocking), so that plain test code calls them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from policy_service.stores.store import open_store
from tests.event_loops import LoopThread, blocking_open
from tests.postgres import PostgresSchema


def fresh_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, empty store of a kind (PostgreSQL: a schema of its own), for a
    test server to open on its loop (serve(store=URL))."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'chat-policy.db'}"
    schema: PostgresSchema = request.getfixturevalue("postgres_schema")
    return schema.url


def open_fresh(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A fresh, empty store of a kind (PostgreSQL: in a schema of its own), opened on the
    test's `event_loop_thread`; a Blocking view of it."""
    loop: LoopThread = request.getfixturevalue("event_loop_thread")
    return blocking_open(loop, open_store, fresh_url(kind, request, tmp_path))
