"""Smoke test of scripts/bench-state: a tiny run on both stores, no timing asserted."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from pathlib import Path

import pytest

from bench.bench_state import fresh_database, running_service
from bench.processes import grpc_serving
from policy_service.settings import ServiceSettings

pytestmark = pytest.mark.e2e

BENCH_STATE = Path(__file__).resolve().parents[2] / "scripts" / "bench-state"
# Every metric the issue asks for, as the table names it.
METRICS = (
    "Health.Check p50 (baseline",
    "Health.Check p99",
    "GetGroupState p50",
    "GetGroupState p99",
    "GetGroupState p50 / Health.Check p50",
    "RecordGroupFull, 1 thread, events/s",
    "RecordGroupFull, 8 threads, events/s",
    "ListFullGroups (100/page) first page p50",
    "ListFullGroups deep page (90% in) p50",
    "ListFullGroups deep / first",
    "ListFullGroups one sdk_app_id, first page p50",
    "ListFullGroups one sdk_app_id, deep page (90% in) p50",
    "ListFullGroups one sdk_app_id, deep / first",
    "WatchGroupStates fan-out to 3: events/s recorded meanwhile",
    "WatchGroupStates fan-out to 3: delivery p50",
    "WatchGroupStates fan-out to 3: delivery p99",
    "WatchGroupStates fan-out to 3: deliveries missed",
    "WatchGroupStates fan-out to 3: deliveries duplicated",
    "store size on disk after the fill",
    "store size on disk per group",
)


@pytest.mark.timeout(300)
def test_bench_state_reports_every_metric_for_both_stores(postgres_server_url: str) -> None:
    """A small run on SQLite and PostgreSQL exits 0 with a table naming every metric."""
    result = subprocess.run(
        [
            str(BENCH_STATE),
            *("--stores", "sqlite,postgresql", "--groups", "2000", "--rounds", "1"),
            *("--seconds", "0.5", "--watchers", "3"),
        ],
        env={**os.environ, "CHAT_POLICY_TEST_DATABASE_URL": postgres_server_url},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "| metric | sqlite | postgresql |" in result.stdout
    table_rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    for metric in METRICS:
        assert any(row.startswith(f"| {metric}") for row in table_rows), metric


def test_bench_state_service_binds_no_fixed_port(tmp_path: Path) -> None:
    """The policy service bench-state starts serves while the service's default metrics port
    is taken: every port it binds is chosen free."""
    host, _, port = ServiceSettings().metrics_bind.rpartition(":")
    with contextlib.ExitStack() as stack:
        taken = stack.enter_context(socket.socket())
        with contextlib.suppress(OSError):  # already taken by something else: as good
            taken.bind((host, int(port)))
            taken.listen()
        database = stack.enter_context(fresh_database("sqlite", tmp_path))
        target = stack.enter_context(running_service(database, tmp_path, 1))
        assert grpc_serving(target)
