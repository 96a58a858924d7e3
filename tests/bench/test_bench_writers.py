"""Smoke test of scripts/bench-writers: a tiny run, no timing asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--writers", "1,2", "--seconds", "0.5", "--rounds", "1", "--concurrency", "2"]


def test_bench_writers_reports_every_configuration(postgres_server_url: str) -> None:
    """1 and 2 writer processes, one short round: a row each, writes counted, no errors, and
    the run's schema dropped afterwards."""
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        schemas_before = conn.execute("SELECT count(*) FROM pg_namespace").fetchone()
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_writers", "--url", postgres_server_url, *ARGS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if "writer process" in line]
    assert [row[0].strip() for row in rows] == ["1 writer process", "2 writer processes"]
    for row in rows:
        assert float(row[1].split()[0].replace(",", "")) > 0, row
        assert row[-1].strip() == "0", row
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        schemas_after = conn.execute("SELECT count(*) FROM pg_namespace").fetchone()
    assert schemas_after == schemas_before
