"""Real processes for end-to-end tests: `chat-policy service|adapter|run` on free ports."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.processes import free_port
from tests.e2e.deployment import (
    Deployment,
    new_deployment,
)
from tests.e2e.postgres_cluster import (
    PostgresBinaries,
    PostgresCluster,
    PostgresUnavailable,
    initdb,
)
from tests.postgres import PostgresSchema


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """A deployment on free ports with its own data dir; every process stopped afterwards."""
    deployment = new_deployment(tmp_path)
    yield deployment
    deployment.stop_all()


@pytest.fixture(scope="session")
def postgres_binaries() -> PostgresBinaries:
    """PostgreSQL's initdb and pg_ctl; skip (fail when CI is set) if they are not installed."""
    try:
        return PostgresBinaries.find()
    except PostgresUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"{error} (CI is set, so this is a failure, not a skip)")
        pytest.skip(f"{error}; set CI=1 to make this a failure")


@pytest.fixture(scope="session")
def postgres_template(postgres_binaries: PostgresBinaries) -> Iterator[Path]:
    """A data directory made by initdb once per session, which clusters start as a copy of."""
    directory = Path(tempfile.mkdtemp(prefix="chat-policy-pg-template-"))
    try:
        initdb(postgres_binaries, directory / "data")
        yield directory / "data"
    finally:
        shutil.rmtree(directory)


@pytest.fixture
def postgres_cluster(
    postgres_binaries: PostgresBinaries, postgres_template: Path
) -> Iterator[PostgresCluster]:
    """A private, durable PostgreSQL server on a free port, started; stopped and removed after.

    One per test, so a test may stop, crash and start it at will and leave it either way.
    """
    with PostgresCluster(postgres_binaries, free_port(), template=postgres_template) as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The service's database: "" (SQLite in the data dir) or a fresh PostgreSQL schema.

    Requested before `deployment`, so that the service is stopped before the schema goes.
    """
    if request.param == "sqlite":
        return ""
    schema: PostgresSchema = request.getfixturevalue("postgres_schema")
    return schema.url
