"""Smoke test of scripts/bench-access: a tiny run, every row and number there, no timing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.bench.bench_tables import VALUE, rows

ROOT = Path(__file__).resolve().parents[2]


def test_bench_access_reports_the_check_and_unary_calls() -> None:
    """A tiny run exits 0 with the check's two rows and the unary table with its difference
    and verdict."""
    result = subprocess.run(
        [
            sys.executable,
            *("-m", "bench.bench_access", "--rounds", "1", "--checks", "200"),
            *("--unary", "40", "--block", "10", "--callers", "3"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    checks = rows(result.stdout, "| call |")
    assert list(checks) == ["token (plaintext)", "client certificate (mTLS)"]
    assert all(re.fullmatch(VALUE, cells[0]) for cells in checks.values()), checks
    unary = rows(result.stdout, "| server |")
    assert list(unary) == ["no access file", "access file (3 callers), token", "difference"]
    assert re.fullmatch(VALUE, unary["no access file"][0])
    assert re.fullmatch(r"-?[\d,.]+: < 5 (?:met|\*\*missed\*\*)", unary["difference"][0])
