"""Smoke test of scripts/bench-policy: a tiny run, every row and number there, no timing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.bench.bench_tables import NUMBER, VALUE, rows

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ("baseline", "example", "example explain", "large")
LOADED = ("baseline", "example", "large")
GOAL = r"(?:≤ \d+: (?:met|\*\*missed\*\*))?"


def test_bench_policy_reports_every_policy(tmp_path: Path) -> None:
    """A tiny run exits 0 with a latency row per policy, a load row per loaded policy, the
    goals, and a JSON file of the same numbers."""
    json_path = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            *("-m", "bench.bench_policy", "--rounds", "1", "--decisions", "200"),
            *("--words", "500", "--rules", "50", "--json", str(json_path)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    latency = rows(result.stdout, "| policy | rules |")
    assert list(latency) == list(POLICIES)
    for name, cells in latency.items():
        assert len(cells) == 10, (name, cells)
        assert all(re.fullmatch(VALUE, cell) for cell in cells[:9]), (name, cells)
        assert re.fullmatch(GOAL, cells[9]), (name, cells)
        p50, p99 = (float(cells[i].split()[0].replace(",", "")) for i in (3, 4))
        assert 0 < p50 <= p99
    assert latency["example"][9].startswith("≤ 50: ")
    assert latency["large"][9].startswith("≤ 200: ")
    assert "Goals (median p99 of the rounds): example p99" in result.stdout
    loads = rows(result.stdout, "| policy | load, ms |")
    assert list(loads) == list(LOADED)
    for name, cells in loads.items():
        assert len(cells) == 6 and all(re.fullmatch(NUMBER, cell) for cell in cells), name
    numbers = json.loads(json_path.read_text())
    assert set(numbers["policies"]) == set(POLICIES)
    assert numbers["policies"]["large"]["rules"] == 50
    assert set(numbers["loads"]) == set(LOADED)
