"""Smoke test of scripts/bench-app: a tiny run answers every webhook right, no timing."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.bench_app import asgi_requests, call_asgi, call_wsgi, environs
from tests.bench.bench_tables import VALUE, rows

ROOT = Path(__file__).resolve().parents[2]
APPS = (
    "B1 app",
    "adapter, BeforeCreateGroup",
    "adapter, AfterGroupFull",
    "adapter, BeforeCreateGroup, no request line",
)


def bench_app(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m bench.bench_app` with args."""
    return subprocess.run(
        [sys.executable, "-m", "bench.bench_app", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bench_app_reports_every_app_against_b1() -> None:
    """Two tiny rounds exit 0 with a row per app, numbers in every cell and B1's ratio 1,
    and the adapter costs more CPU per webhook than B1's app."""
    result = bench_app("--rounds", "2", "--calls", "50")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout, "| app, webhook |")
    assert list(table) == list(APPS)
    for name, cells in table.items():
        assert len(cells) == 3, (name, cells)
        assert all(re.fullmatch(VALUE, cell) for cell in cells), (name, cells)
    assert table["B1 app"][2] == "1.0 (1.0..1.0)"
    for name in APPS[1:]:
        assert float(table[name][2].split()[0]) > 1, table[name]


def test_bench_app_refuses_nonpositive_counts() -> None:
    """--calls 0 is a usage error, exit 2 naming the options."""
    result = bench_app("--calls", "0")
    assert result.returncode == 2
    assert "--rounds and --calls must be positive" in result.stderr


def test_a_wrong_answer_fails_the_run() -> None:
    """An app answering anything but 200 with ErrorCode 0 is not timed as if it had worked,
    ASGI (the adapter's) or WSGI (B1's)."""
    refused = b'{"ActionStatus":"FAIL","ErrorCode":10016,"ErrorInfo":"no"}'

    async def refusing_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": refused})

    def refusing_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [])
        return [refused]

    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="10016"):
            call_asgi(refusing_asgi, asgi_requests("before", "wrong", 1), loop)
    finally:
        loop.close()
    with pytest.raises(RuntimeError, match="10016"):
        call_wsgi(refusing_wsgi, environs("before", "wrong", 1))
