"""The private PostgreSQL cluster that outage tests stop and start: the helper itself."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import psycopg
import pytest

from bench.processes import free_port, tcp_listening
from tests.e2e.postgres_cluster import (
    PostgresBinaries,
    PostgresCluster,
    PostgresError,
    process_running,
)

pytestmark = pytest.mark.e2e


def insert_committed(url: str) -> None:
    """Create table t with one committed row, 'kept'."""
    with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
        conn.execute("CREATE TABLE t (value text)")
        conn.execute("INSERT INTO t VALUES ('kept')")


def values(url: str) -> list[str]:
    """The values in table t."""
    with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
        return [value for (value,) in conn.execute("SELECT value FROM t").fetchall()]


def test_cluster_accepts_connections(postgres_cluster: PostgresCluster) -> None:
    """The started cluster answers on its port, with its socket in its data directory."""
    assert postgres_cluster.is_running
    with psycopg.connect(postgres_cluster.url, autocommit=True, connect_timeout=2) as conn:
        port, socket_dir, fsync, user = conn.execute(
            "SELECT current_setting('port'), current_setting('unix_socket_directories'),"
            " current_setting('fsync'), current_user"
        ).fetchone()
    assert (port, socket_dir) == (str(postgres_cluster.port), str(postgres_cluster.data_dir))
    assert (fsync, user) == ("on", "postgres")
    url = postgres_cluster.create_database("app")
    assert url.endswith("/app")
    insert_committed(url)
    assert values(url) == ["kept"]


def test_stopped_cluster_refuses_connections_at_once(postgres_cluster: PostgresCluster) -> None:
    """After stop() a connection attempt fails well inside its 2 s connect_timeout."""
    postgres_cluster.stop()
    assert not postgres_cluster.is_running
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres_cluster.url, connect_timeout=2).close()
    assert time.monotonic() - started < 1.0


def test_committed_data_survives_stop_and_start(postgres_cluster: PostgresCluster) -> None:
    """Rows committed before a fast stop are there once the cluster is started again."""
    insert_committed(postgres_cluster.url)
    postgres_cluster.stop("fast")
    postgres_cluster.start()
    assert postgres_cluster.is_running
    assert values(postgres_cluster.url) == ["kept"]


def test_committed_data_survives_a_crash(postgres_cluster: PostgresCluster) -> None:
    """After stop("immediate") the next start recovers from the WAL, committed rows kept."""
    insert_committed(postgres_cluster.url)
    postgres_cluster.stop("immediate")
    assert not postgres_cluster.is_running
    postgres_cluster.start()
    assert values(postgres_cluster.url) == ["kept"]
    assert "automatic recovery in progress" in postgres_cluster.log_path.read_text()


def test_close_leaves_nothing_behind(postgres_binaries: PostgresBinaries) -> None:
    """A cluster made by initdb, without durability, is gone with its directory once closed."""
    with PostgresCluster(postgres_binaries, free_port(), durable=False) as cluster:
        pid = cluster.pid
        assert pid is not None and process_running(pid)
        with psycopg.connect(cluster.url, autocommit=True, connect_timeout=2) as conn:
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
    assert not cluster.directory.exists()
    assert not tcp_listening(cluster.port)
    assert not process_running(pid)


def test_failed_start_reports_the_server_log(
    postgres_binaries: PostgresBinaries, postgres_template: Path
) -> None:
    """When the server cannot start (its port taken), the error holds the log's tail."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster = PostgresCluster(postgres_binaries, port, template=postgres_template)
        try:
            with pytest.raises(PostgresError, match=r"(?s)could not start.*Address already in use"):
                cluster.start()
            assert not cluster.is_running
        finally:
            cluster.close()
    assert not cluster.directory.exists()
