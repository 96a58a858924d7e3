"""Smoke test of `scripts/bench --abuse` (bench/bench_abuse.py): a few slow connections and
idle streams, a short paced load; the report's shape and its counts, no timing asserted
(today's threaded adapter answers nothing while slow clients hold its threads: the goal's
verdict is measured, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.http_processes import NORMAL_OUTCOMES
from tests.bench.bench_tables import rows

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SMALL_RUN = (
    *("--slow", "12", "--streams", "12", "--watch-streams", "3", "--channels", "2"),
    *("--rate", "20", "--duration", "2", "--trickle", "0.5", "--establish-timeout", "10"),
)
ROWS = (
    "webhooks sent",
    "webhooks answered within 2 s (any HTTP answer)",
    "webhooks answered 200, ErrorCode 0",
    "latency p50, ms",
    "latency p99, ms",
    "latency max, ms",
    "errors (no answer, not 200, ErrorCode not 0, fail-open or spooled)",
    "errors by kind",
    "adapter outcomes",
    "health checks while loaded",
    "health checks in all",
    "slow connections held at the load's start / end",
    "slow connections opened (reopened included)",
    "slow connections ended by the server",
    "slow connections refused",
    "reflection streams held at the load's start / end",
    "reflection streams ended (refused) by code",
    "watch streams accepted (first message)",
    "watch streams held at the load's start / end",
    "watch streams ended (refused) by code",
    "established after, s",
    "peak RSS: service / adapter worker, MB",
)


@pytest.mark.timeout(90)
def test_bench_abuse_counts_what_it_held_and_sent(tmp_path: Path) -> None:
    """A small run exits 0 with every row and a goal line; every webhook is accounted for
    (answered or an error), every slow connection and stream was opened, the health of the
    service was checked, and the adapter's outcomes were read."""
    json_path = tmp_path / "abuse.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.bench_abuse", *SMALL_RUN, "--json", str(json_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = rows(result.stdout, "| metric | sqlite |")
    assert tuple(table) == ROWS
    assert all(len(cells) == 1 and cells[0] for cells in table.values()), table
    goal = [line for line in result.stdout.splitlines() if line.startswith("Goal (issue 18)")]
    assert len(goal) == 1 and goal[0].split(": ")[-1].rstrip(".").split(" (")[0] in (
        "met",
        "**missed**",
    ), goal
    numbers = json.loads(json_path.read_text())
    assert numbers["sent"] == 40
    assert table["webhooks sent"] == ["40"]
    assert numbers["ok"] <= numbers["answered"] <= numbers["sent"]
    assert numbers["sent"] - numbers["ok"] <= numbers["errors"]
    slow = numbers["slow"]
    assert slow["opened"] >= slow["wanted"] == 12
    assert slow["bytes_sent"] > 0
    for kind, wanted in (("reflection_streams", 12), ("watch_streams", 3)):
        assert numbers[kind]["opened"] == numbers[kind]["wanted"] == wanted, numbers[kind]
        assert numbers[kind]["held_at_load_start"] + sum(numbers[kind]["ended"].values()) == (
            wanted
        ), numbers[kind]
    assert sum(numbers["health"].values()) >= 2
    assert numbers["adapter_outcomes"], "the adapter's /metrics was not read"
    # Whatever the load did to latency, the adapter took every webhook as Chat's (its
    # SdkAppid, its signature): a webhook it refused means the run sent the wrong ones.
    relayed = NORMAL_OUTCOMES | {"fail-open", "fail-closed", "spooled"}
    assert set(numbers["adapter_outcomes"]) <= relayed, numbers["adapter_outcomes"]
    assert numbers["goal"]["met"] in (True, False)
