"""Benchmark of PostgreSQL writes across replicas, run by `scripts/bench-writers` (see --help).

1, 2 and 4 writer processes (the --writers list), each with a PostgreSQL store of its own on
one database and schema, as replicas of the policy service would be, record group-full
events as fast as they can for --seconds, --concurrency calls at a time per process, each
event on a group of its own (no two calls wait for one group's lock). A configuration's
writes/s is the sum over its processes of the events recorded in the window; the
configurations run interleaved, one round after another, and each cell is the median of
--rounds rounds (min..max), the ratio taken within a round against that round's 1 writer.
The CPU columns add up the writer processes' CPU time and the local PostgreSQL server's
(every process named postgres, read from /proc) over 90% of the window, per write. This
host's disk flushes the WAL in well under a millisecond; --commit-delay-us makes each flush
take longer (commit_delay, which waits holding the WAL write lock, so concurrent commits
share the flush as on a slower disk). The Markdown table goes to stdout, progress to stderr.

`--writer` runs one writer process (what the benchmark starts). It works with either store
API: coroutine methods and an async `open` (calls overlap as tasks on one event loop) or
plain methods and a constructor (calls overlap as threads).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench.report import cell, heading, markdown_table, number, progress
from policy_service.groups.state import EventKind, GroupEvent, GroupKey
from policy_service.stores.postgres_store import PostgresGroupStateStore

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
SDK_APP_ID = 1400000000
START_DELAY_S = 1.0  # every writer opens its store, then all start together after this
SERVER_SAMPLE = 0.9


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-writers", description=__doc__)
    parser.add_argument(
        "--url",
        default=os.environ.get("CHAT_POLICY_TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL,
        help="the PostgreSQL server (a schema of its own is created and dropped)",
    )
    parser.add_argument("--writers", default="1,2,4", help="writer processes per configuration")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every configuration")
    parser.add_argument("--concurrency", type=int, default=8, help="calls at once per process")
    parser.add_argument(
        "--commit-delay-us",
        type=int,
        default=0,
        help="make each WAL flush take this much longer (commit_delay with commit_siblings=0,"
        " the writers' sessions only): a disk or synchronous standby slower than this host's",
    )
    parser.add_argument("--writer", nargs=4, metavar=("URL", "START", "SECONDS", "ID"))
    args = parser.parse_args(argv)
    if args.writer:
        url, start, seconds, writer_id = args.writer
        counts = run_writer(url, float(start), float(seconds), writer_id, args.concurrency)
        print(json.dumps(counts))
        return 0
    configurations = [int(n) for n in args.writers.split(",")]
    results = measure(
        args.url,
        configurations,
        args.seconds,
        args.rounds,
        args.concurrency,
        args.commit_delay_us,
    )
    command = ["scripts/bench-writers", *(argv if argv is not None else sys.argv[1:])]
    print("\n".join(report(command, configurations, results)))
    return 0


Round = dict[int, dict[str, float]]  # writers -> writes_per_s, errors, client/server CPU


def measure(
    server_url: str,
    configurations: list[int],
    seconds: float,
    rounds: int,
    concurrency: int,
    commit_delay_us: int = 0,
) -> list[Round]:
    """Every configuration once per round, in a schema created for the run."""
    schema = f"bench_writers_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    options = f"-csearch_path={schema}"
    if commit_delay_us:
        options += f" -ccommit_delay={commit_delay_us} -ccommit_siblings=0"
    url = with_options(server_url, options)
    try:
        results: list[Round] = []
        for round_number in range(1, rounds + 1):
            results.append({})
            for writers in configurations:
                progress("bench-writers", f"round {round_number}: {writers} writer(s)")
                results[-1][writers] = run_configuration(url, writers, seconds, concurrency)
                progress("bench-writers", f"  {results[-1][writers]['writes_per_s']:,.0f} w/s")
        return results
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def run_configuration(url: str, writers: int, seconds: float, concurrency: int) -> dict[str, float]:
    """Start `writers` processes that write together for `seconds`; their totals."""
    start = time.time() + START_DELAY_S + 0.3 * writers
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bench_writers",
                "--concurrency",
                str(concurrency),
                "--writer",
                url,
                repr(start),
                repr(seconds),
                f"{uuid.uuid4().hex[:8]}",
            ],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )
        for _ in range(writers)
    ]
    time.sleep(max(0.0, start - time.time()))
    # The server's CPU over the first 90% of the window, scaled: the writers' backends end
    # when the window does, and a process that has ended is no longer counted.
    server_before = postgres_cpu_s()
    time.sleep(seconds * SERVER_SAMPLE)
    server_cpu = cpu_since(server_before, postgres_cpu_s()) / SERVER_SAMPLE
    totals = {"writes": 0.0, "errors": 0.0, "client_cpu_s": 0.0}
    for process in processes:
        out, _ = process.communicate(timeout=seconds + 60)
        if process.returncode != 0:
            raise RuntimeError(f"a writer process exited with {process.returncode}")
        counts = json.loads(out)
        for name in totals:
            totals[name] += counts[name]
    return {
        "writes_per_s": totals["writes"] / seconds,
        "errors": totals["errors"],
        "client_cpu_ms": 1000 * totals["client_cpu_s"] / max(totals["writes"], 1),
        "server_cpu_ms": 1000 * server_cpu / max(totals["writes"], 1),
    }


def postgres_cpu_s() -> dict[int, float]:
    """CPU seconds used so far by each live process named postgres (none without /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name.startswith("postgres"):
            fields = text[text.rindex(")") + 2 :].split()
            used[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return used


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two samples by the processes alive at the second (one that
    ended meanwhile is left out, rather than subtracted)."""
    return sum(used - before.get(pid, 0.0) for pid, used in after.items())


def run_writer(
    url: str, start: float, seconds: float, writer_id: str, concurrency: int
) -> dict[str, float]:
    """One writer process: events recorded (and failed) in [start, start + seconds)."""
    if inspect.iscoroutinefunction(PostgresGroupStateStore.record):
        return asyncio.run(write_async(url, start, seconds, writer_id, concurrency))
    return write_threads(url, start, seconds, writer_id, concurrency)


def event(writer_id: str, worker: int, n: int) -> GroupEvent:
    """A first full event of a group no other call touches."""
    return GroupEvent(GroupKey(SDK_APP_ID, f"@{writer_id}-{worker}-{n}"), EventKind.FULL, 1000)


async def write_async(
    url: str, start: float, seconds: float, writer_id: str, concurrency: int
) -> dict[str, float]:
    store: Any = await PostgresGroupStateStore.open(url)  # type: ignore[attr-defined,unused-ignore]
    counts = {"writes": 0, "errors": 0}

    async def worker(number: int) -> None:
        n = 0
        while time.time() < start + seconds:
            n += 1
            try:
                await store.record(event(writer_id, number, n))
            except Exception:
                counts["errors"] += 1
            else:
                if time.time() < start + seconds:
                    counts["writes"] += 1

    await asyncio.sleep(max(0.0, start - time.time()))
    cpu = time.process_time()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    cpu = time.process_time() - cpu
    await store.close()
    return {**counts, "client_cpu_s": cpu}


def write_threads(
    url: str, start: float, seconds: float, writer_id: str, concurrency: int
) -> dict[str, float]:
    store: Any = PostgresGroupStateStore(url)
    counts = {"writes": 0, "errors": 0}
    lock = threading.Lock()

    def worker(number: int) -> None:
        n = 0
        while time.time() < start + seconds:
            n += 1
            try:
                store.record(event(writer_id, number, n))
                done = "writes" if time.time() < start + seconds else ""
            except Exception:
                done = "errors"
            if done:
                with lock:
                    counts[done] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    time.sleep(max(0.0, start - time.time()))
    cpu = time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu = time.process_time() - cpu
    store.close()
    return {**counts, "client_cpu_s": cpu}


def report(command: list[str], configurations: list[int], results: list[Round]) -> list[str]:
    """The Markdown report: writes/s and the ratio to one writer per configuration."""
    base = configurations[0]
    rows = []
    for writers in configurations:
        rounds = [r[writers] for r in results]
        ratios = [r[writers]["writes_per_s"] / r[base]["writes_per_s"] for r in results]
        rows.append(
            [
                f"{writers} writer process{'es' if writers > 1 else ''}",
                cell([r["writes_per_s"] for r in rounds]),
                cell(ratios),
                cell([r["client_cpu_ms"] for r in rounds]),
                cell([r["server_cpu_ms"] for r in rounds]),
                number(sum(r["errors"] for r in rounds)),
            ]
        )
    columns = [
        "configuration",
        "writes/s",
        f"/ {base} writer",
        "writer CPU ms/write",
        "PostgreSQL CPU ms/write",
        "errors",
    ]
    return [*heading(command), "", *markdown_table(columns, rows)]


def with_options(url: str, options: str) -> str:
    """The URL with `options` appended to its libpq options."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["options"] = f"{query['options']} {options}" if query.get("options") else options
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


if __name__ == "__main__":
    sys.exit(main())
