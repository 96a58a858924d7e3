"""Smoke test of `scripts/bench --faults` (bench/bench_faults.py): a short run per store.

Latencies are not asserted (the machine is shared and noisy), but two things are properties
of the product, not of the machine: every request gets an HTTP answer, and every after-event
acknowledged while the policy service was killed and restarted is in the store afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.bench_faults import ROWS
from tests.bench.bench_tables import rows

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SHORT_RUN = ("--duration", "8", "--rate", "60", "--kill-at", "3", "--down", "1")


def run_bench(store: str, tmp_path: Path, **env: str) -> tuple[dict[str, list[str]], Any]:
    """A short run on one store: it exits 0; its table rows by first cell, and its numbers."""
    json_path = tmp_path / "faults.json"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "bench.bench_faults", *SHORT_RUN),
            *("--store", store, "--json", str(json_path), "--workdir", str(tmp_path / "work")),
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout, f"| metric | {store} |")
    return table, json.loads(json_path.read_text())["stores"][store]


def check_run(table: dict[str, list[str]], numbers: Any) -> None:
    """Every row with one cell; every request answered; acknowledged == found; the outage
    happened and the spool drained."""
    assert list(table) == [name for name, _ in ROWS]
    assert all(len(cells) == 1 and cells[0] for cells in table.values()), table
    sent = numbers["sent"]
    assert sent == numbers["scheduled"] == 480
    assert numbers["answered"] == sent, numbers["failed_requests"]
    assert table["requests answered (any HTTP answer)"] == [f"{sent} / {sent} (100%)"]
    after = numbers["after"]
    assert after["sent"] == sent // 2
    assert after["acknowledged"] == after["found"], numbers["failed_requests"]
    assert after["lost"] == 0
    assert after["full_event_count_not_1"] == 0
    assert table["must-have: AfterGroupFull acknowledged = found in the store"] == ["met"]
    # The kill happened under load: the adapter answered some webhooks without the service.
    assert numbers["outage"]["serving_s"] > numbers["outage"]["killed_s"] > 0
    assert after["spooled"] > 0 and numbers["before"]["fail_open"] > 0
    assert numbers["spool"]["drained_after_serving_s"] is not None
    assert numbers["adapter_metrics"]["spooled"] == numbers["adapter_metrics"]["replayed"]


@pytest.mark.timeout(90)
def test_bench_faults_on_sqlite(tmp_path: Path) -> None:
    """A short run on SQLite reports every row, and nothing acknowledged is lost."""
    check_run(*run_bench("sqlite", tmp_path))


@pytest.mark.timeout(90)
def test_bench_faults_on_postgresql(tmp_path: Path, postgres_server_url: str) -> None:
    """The same on PostgreSQL (skipped loudly without one; a failure when CI is set)."""
    check_run(*run_bench("postgresql", tmp_path, CHAT_POLICY_TEST_DATABASE_URL=postgres_server_url))
