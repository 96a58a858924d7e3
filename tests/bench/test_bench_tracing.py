"""Smoke test of scripts/bench-tracing: a tiny run measures every variant, no timing asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.bench.bench_tables import VALUE, rows

ROOT = Path(__file__).resolve().parents[2]


def bench_tracing(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m bench.bench_tracing` with args."""
    return subprocess.run(
        [sys.executable, "-m", "bench.bench_tracing", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_bench_tracing_reports_off_on_and_a_baseline_commit() -> None:
    """One tiny round exits 0 with a row per variant (each child checked to have traced or
    not as its variant says), numbers in every cell and off's ratio 1."""
    result = bench_tracing("--rounds", "1", "--calls", "20", "--baseline-ref", "HEAD")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout, "| variant |")
    assert list(table) == ["off", "on", "on, 1 in 10 sampled", "off on HEAD"]
    for name, cells in table.items():
        assert len(cells) == 4, (name, cells)
        assert all(re.fullmatch(VALUE, cell) for cell in cells), (name, cells)
    assert table["off"][1] == table["off"][3] == "1.000"


def test_bench_tracing_refuses_nonpositive_counts() -> None:
    """--rounds 0 is a usage error, exit 2 naming the options."""
    result = bench_tracing("--rounds", "0")
    assert result.returncode == 2
    assert "--rounds and --calls must be positive" in result.stderr
