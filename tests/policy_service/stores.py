"""Fresh stores of each kind for the service tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_service.stores.store import Store, open_store
from tests.postgres import PostgresSchema


def open_fresh(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A fresh, empty store of a kind (PostgreSQL: in a schema of its own)."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'state' / 'chat-policy.db'}"
    else:
        schema: PostgresSchema = request.getfixturevalue("postgres_schema")
        url = schema.url
    return open_store(url)
