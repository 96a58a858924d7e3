"""Benchmark of the group-state stores, run by `scripts/bench-state` (see --help).

For each store: a fresh database, whose tables `chat-policy service` creates; a bulk fill of
--groups tracked groups in one SQL statement, then ANALYZE and VACUUM as after any bulk load;
then the service again, as a real process on a free port, measured through gRPC as a client
sees it. Each metric is the median of --rounds rounds (min..max beside it); ratios are taken
within a round, against a baseline measured in that round. The Markdown table goes to stdout,
progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql

from bench.processes import clean_env, free_port
from bench.report import cell, heading, markdown_table, percentile
from bench.report import progress as report_progress
from chatpolicy.v1 import group_state_service_pb2 as pb
from chatpolicy.v1 import group_state_service_pb2_grpc as rpc
from policy_service.api.page_tokens import FullGroupsFilter, encode_page_token
from policy_service.groups.state import GroupKey
from policy_service.groups.store import FullGroupsCursor
from policy_service.settings import ServiceSettings

CHAT_POLICY = Path(sys.executable).with_name("chat-policy")
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
STORES = ("sqlite", "postgresql")

LATENCY_CALLS = 2000  # timed sequential calls per unary latency, after WARMUP_CALLS
PAGE_CALLS = 300  # timed calls per kind of ListFullGroups page
WARMUP_CALLS = 100
PAGE_SIZE = 100
DEEP = 0.9  # where the deep page's cursor sits in the full groups
RECORD_THREADS = 8
WATCH_EVENTS = 500
WATCH_PACE_S = 0.002
CALL_TIMEOUT_S = 10.0
START_TIMEOUT_S = 60.0
DELIVERY_TIMEOUT_S = 30.0

# The fill. Group n (0 <= n < groups) belongs to app FIRST_APP + n % APPS; its GroupId is
# "@TGS#" and 10 digits of n * KNUTH mod 2**32 (odd multiplier: a bijection, so the ids are
# distinct, and their order is unrelated to n). Its one event happened at t = start + n * step,
# inside one day that ended an hour ago (well within the destroyed-group retention, so pruning
# leaves the fill alone). Of every 20 consecutive groups of an app (slot = n / APPS % 20),
# slots 0-3 are full since t (20%), slot 4 was destroyed at t (5%), and in the others a member
# left at t (75%). Every full group has a distinct full_since.
FIRST_APP = 1_400_000_000
APPS = 10
KNUTH = 2_654_435_761
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
FILL_COLUMNS = (
    'sdk_app_id, group_id, topic_id, "full", full_since_ms, last_event_time_ms,'
    " full_event_count, destroyed, last_event_kind, clear_reason"
)
# The rows, in SQL both stores accept; {numbers} yields n, {group_id} formats the GroupId.
FILL_ROWS = """
    SELECT {first_app} + n % {apps}, {group_id}, '', slot < 4, CASE WHEN slot < 4 THEN t END,
        t, CASE WHEN slot < 4 THEN 1 ELSE 0 END, slot = 4,
        CASE WHEN slot < 4 THEN 1 WHEN slot = 4 THEN 3 ELSE 2 END, ''
    FROM (SELECT n, n / {apps} % 20 AS slot, {start_ms} + n * {step_ms} AS t FROM {numbers}) g
"""
FULL_ORDER = "full_since_ms, sdk_app_id, group_id, topic_id"


progress = functools.partial(report_progress, "bench-state")


class BenchError(Exception):
    """The benchmark cannot go on: the service did not start, a watcher failed, ..."""


# --- the fill and the databases ----------------------------------------------------------


def fill_key(n: int) -> GroupKey:
    """The key of the fill's group n, as FILL_ROWS makes it."""
    return GroupKey(FIRST_APP + n % APPS, f"@TGS#{n * KNUTH % 2**32:010d}")


def fill_rows(groups: int, numbers: str, group_id: str) -> str:
    """The SELECT of the fill's rows, given a store's number source and GroupId expression."""
    step_ms = max(1, DAY_MS // groups)
    start_ms = time.time_ns() // 1_000_000 - HOUR_MS - groups * step_ms
    return FILL_ROWS.format(
        first_app=FIRST_APP,
        apps=APPS,
        group_id=group_id,
        start_ms=start_ms,
        step_ms=step_ms,
        numbers=numbers,
    )


class SQLiteDatabase:
    """A new SQLite file in the store's work directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "chat-policy.db"
        self.url = f"sqlite:///{self.path}"

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        """The rows of one statement, on a connection of its own."""
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            return db.execute(statement).fetchall()

    def fill(self, groups: int) -> None:
        """Insert the fill in one statement (a recursive CTE), then ANALYZE and VACUUM."""
        rows = fill_rows(
            groups,
            numbers="numbers",
            group_id=f"'@TGS#' || printf('%010d', n * {KNUTH} % {2**32})",
        )
        with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            db.execute("PRAGMA cache_size = -1000000")  # 1 GB: the indexes stay cached as they grow
            db.execute(
                "WITH RECURSIVE numbers(n) AS"
                f" (SELECT 0 UNION ALL SELECT n + 1 FROM numbers WHERE n + 1 < {groups})"
                f" INSERT INTO group_state ({FILL_COLUMNS}) {rows}"
            )
            db.execute("ANALYZE")
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def size_bytes(self) -> int:
        """The database file and its write-ahead log."""
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    def version(self) -> str:
        """The SQLite library the service links (the same Python as this one)."""
        return f"SQLite {sqlite3.sqlite_version}"


class PostgresDatabase:
    """A new schema on the test server, selected by the URL's search_path."""

    def __init__(self, server_url: str, schema: str) -> None:
        self.url = with_search_path(server_url, schema)

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        """The rows of one statement, on a connection of its own."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(statement).fetchall()

    def fill(self, groups: int) -> None:
        """Insert the fill in one statement (generate_series), then VACUUM (ANALYZE)."""
        rows = fill_rows(
            groups,
            numbers=f"generate_series(0::bigint, {groups - 1}) AS n",
            group_id=f"'@TGS#' || lpad((n * {KNUTH} % {2**32})::text, 10, '0')",
        )
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"INSERT INTO group_state ({FILL_COLUMNS}) {rows}")
            conn.execute("VACUUM (ANALYZE) group_state")

    def size_bytes(self) -> int:
        """Both tables, with their indexes and TOAST."""
        ((size,),) = self.query(
            "SELECT pg_total_relation_size('group_state')"
            " + pg_total_relation_size('group_state_change')"
        )
        return int(size)

    def version(self) -> str:
        """The server's version."""
        ((version,),) = self.query("SHOW server_version")
        return f"PostgreSQL {version.split()[0]}"


Database = SQLiteDatabase | PostgresDatabase


def with_search_path(url: str, schema: str) -> str:
    """The URL with `-csearch_path=SCHEMA` added to its libpq options, percent-encoded."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["options"] = f"{query.get('options', '')} -csearch_path={schema}".strip()
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@contextlib.contextmanager
def fresh_database(store: str, workdir: Path) -> Iterator[Database]:
    """An empty database for `store`; a PostgreSQL schema is dropped afterwards."""
    if store == "sqlite":
        yield SQLiteDatabase(workdir)
        return
    server_url = os.environ.get("CHAT_POLICY_TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    schema = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield PostgresDatabase(server_url, schema)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def deep_page_token(db: Database, sdk_app_id: int) -> str:
    """A page token whose cursor sits DEEP into the full groups (of one app, or all: 0)."""
    where = '"full"' + (f" AND sdk_app_id = {sdk_app_id}" if sdk_app_id else "")
    ((count,),) = db.query(f"SELECT count(*) FROM group_state WHERE {where}")
    ((full_since_ms, app, group_id, topic_id),) = db.query(
        f"SELECT {FULL_ORDER} FROM group_state WHERE {where}"
        f" ORDER BY {FULL_ORDER} LIMIT 1 OFFSET {int(count * DEEP)}"
    )
    cursor = FullGroupsCursor(full_since_ms, GroupKey(app, group_id, topic_id))
    return encode_page_token(FullGroupsFilter(sdk_app_id=sdk_app_id), cursor)


# --- the service -------------------------------------------------------------------------


@contextlib.contextmanager
def running_service(db: Database, workdir: Path, watchers: int) -> Iterator[str]:
    """Run `chat-policy service` on `db` until the block ends; yield its gRPC target."""
    target = f"127.0.0.1:{free_port()}"
    env = clean_env(
        CHAT_POLICY_GRPC_BIND=target,
        CHAT_POLICY_METRICS_BIND="127.0.0.1:0",  # any free port: nothing here reads it
        CHAT_POLICY_DATABASE_URL=db.url,
        CHAT_POLICY_DATA_DIR=str(workdir),
        CHAT_POLICY_MAX_STREAMS=str(max(watchers, ServiceSettings().max_streams)),
        CHAT_POLICY_WATCH_MAX_STREAMS=str(max(watchers, ServiceSettings().watch_max_streams)),
    )
    log_path = workdir / "service.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(CHAT_POLICY), "service"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until_serving(target, process, log_path)
        yield target
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_serving(target: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll grpc.health.v1 until the service reports SERVING; BenchError if it exits first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace").splitlines()[-20:]
                raise BenchError(
                    f"the service exited with {process.returncode}:\n" + "\n".join(tail)
                )
            with contextlib.suppress(grpc.RpcError):
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.1)
    raise BenchError(f"the service did not answer within {START_TIMEOUT_S:.0f} s")


# --- measurements ------------------------------------------------------------------------


def time_alternately(calls: dict[str, Callable[[], object]], count: int) -> dict[str, list[float]]:
    """Milliseconds of `count` calls of each, taking turns so that drift hits all alike."""
    for _ in range(WARMUP_CALLS):
        for call in calls.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(count):
        for name, call in calls.items():
            start = time.perf_counter_ns()
            call()
            samples[name].append((time.perf_counter_ns() - start) / 1e6)
    return samples


def full_event(key: GroupKey) -> pb.RecordGroupFullRequest:
    """A Group.CallbackAfterGroupFull event for `key`, happening now."""
    event_time = Timestamp()
    event_time.GetCurrentTime()
    return pb.RecordGroupFullRequest(
        sdk_app_id=key.sdk_app_id, group_id=key.group_id, event_time=event_time
    )


def measure_lookups(channel: grpc.Channel, groups: int, rng: random.Random) -> dict[str, float]:
    """Health.Check (the transport floor) and GetGroupState of random filled groups."""
    health = health_pb2_grpc.HealthStub(channel)
    stub = rpc.GroupStateServiceStub(channel)
    keys = [fill_key(rng.randrange(groups)) for _ in range(WARMUP_CALLS + LATENCY_CALLS)]
    gets = iter(
        [pb.GetGroupStateRequest(sdk_app_id=k.sdk_app_id, group_id=k.group_id) for k in keys]
    )
    samples = time_alternately(
        {
            "health": lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S),
            "get": lambda: stub.GetGroupState(next(gets), timeout=CALL_TIMEOUT_S),
        },
        LATENCY_CALLS,
    )
    health, get = sorted(samples["health"]), sorted(samples["get"])
    health_p50, get_p50 = percentile(health, 50), percentile(get, 50)
    return {
        "health_p50": health_p50,
        "health_p99": percentile(health, 99),
        "get_p50": get_p50,
        "get_p99": percentile(get, 99),
        "get_ratio": get_p50 / health_p50,
    }


def record_rate(channel: grpc.Channel, threads: int, seconds: float, tag: str) -> float:
    """Events/s of `threads` threads recording full events of new groups for `seconds`."""
    stub = rpc.GroupStateServiceStub(channel)
    counts = [0] * threads
    errors: list[grpc.RpcError] = []
    start = threading.Barrier(threads + 1)

    def work(index: int) -> None:
        """One client thread: record until `seconds` after the common start."""
        start.wait()
        deadline = time.perf_counter() + seconds
        try:
            while time.perf_counter() < deadline:
                key = GroupKey(FIRST_APP + index % APPS, f"@TGS#{tag}-{index}-{counts[index]}")
                stub.RecordGroupFull(full_event(key), timeout=CALL_TIMEOUT_S)
                counts[index] += 1
        except grpc.RpcError as error:
            errors.append(error)

    workers = [threading.Thread(target=work, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise BenchError(f"RecordGroupFull failed in {len(errors)} threads, e.g. {errors[0]}")
    return sum(counts) / elapsed


def measure_record_rates(channel: grpc.Channel, seconds: float, tag: str) -> dict[str, float]:
    """RecordGroupFull's sustained rate from one client thread, then from RECORD_THREADS."""
    return {
        "record_1": record_rate(channel, 1, seconds, f"{tag}r1"),
        "record_n": record_rate(channel, RECORD_THREADS, seconds, f"{tag}r{RECORD_THREADS}"),
    }


def measure_pages(channel: grpc.Channel, deep_all: str, deep_app: str) -> dict[str, float]:
    """ListFullGroups' first page against a page DEEP in, of all apps and of FIRST_APP."""
    stub = rpc.GroupStateServiceStub(channel)

    def page(sdk_app_id: int, token: str) -> Callable[[], object]:
        """A call of one page of PAGE_SIZE full groups."""
        request = pb.ListFullGroupsRequest(
            sdk_app_id=sdk_app_id, page_size=PAGE_SIZE, page_token=token
        )
        return lambda: stub.ListFullGroups(request, timeout=CALL_TIMEOUT_S)

    samples = time_alternately(
        {
            "first": page(0, ""),
            "deep": page(0, deep_all),
            "app_first": page(FIRST_APP, ""),
            "app_deep": page(FIRST_APP, deep_app),
        },
        PAGE_CALLS,
    )
    p50 = {name: percentile(sorted(values), 50) for name, values in samples.items()}
    return {
        "page_first": p50["first"],
        "page_deep": p50["deep"],
        "page_ratio": p50["deep"] / p50["first"],
        "app_page_first": p50["app_first"],
        "app_page_deep": p50["app_deep"],
        "app_page_ratio": p50["app_deep"] / p50["app_first"],
    }


class Subscriber(threading.Thread):
    """One WatchGroupStates stream on a connection of its own, timestamping each change."""

    def __init__(self, target: str, prefix: str) -> None:
        super().__init__(daemon=True)
        self.ready = threading.Event()  # set by the first message: the stream caught up
        self.received: list[tuple[str, int]] = []  # (group_id, perf_counter_ns at receipt)
        self.error: grpc.RpcError | None = None
        self._prefix = prefix
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        # after_sequence unset: from now (0 would replay the whole change log).
        self._call = rpc.GroupStateServiceStub(self._channel).WatchGroupStates(
            pb.WatchGroupStatesRequest()
        )

    def run(self) -> None:
        """Read the stream until stop() cancels it; keep the changes of this round's groups."""
        try:
            for response in self._call:
                received_ns = time.perf_counter_ns()
                self.ready.set()
                self.received += [
                    (change.group_state.group_id, received_ns)
                    for change in response.changes
                    if change.group_state.group_id.startswith(self._prefix)
                ]
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = error

    def stop(self) -> None:
        """Cancel the stream, wait for the thread, close the connection."""
        self._call.cancel()
        self.join()
        self._channel.close()


def record_paced(channel: grpc.Channel, prefix: str) -> dict[str, int]:
    """Record WATCH_EVENTS full events of new groups, one every WATCH_PACE_S at most;
    return each group's perf_counter_ns when its RecordGroupFull returned."""
    stub = rpc.GroupStateServiceStub(channel)
    returned: dict[str, int] = {}
    start = time.perf_counter()
    for index in range(WATCH_EVENTS):
        time.sleep(max(0.0, start + index * WATCH_PACE_S - time.perf_counter()))
        key = GroupKey(FIRST_APP + index % APPS, f"{prefix}{index}")
        stub.RecordGroupFull(full_event(key), timeout=CALL_TIMEOUT_S)
        returned[key.group_id] = time.perf_counter_ns()
    return returned


def measure_watch(channel: grpc.Channel, target: str, watchers: int, tag: str) -> dict[str, float]:
    """Fan-out: `watchers` streams, then paced events; the pace the writer kept (the
    fan-out competes with it for CPU), delivery latency and exactness."""
    prefix = f"@TGS#{tag}w-"
    subscribers = [Subscriber(target, prefix) for _ in range(watchers)]
    try:
        for subscriber in subscribers:
            subscriber.start()
        for subscriber in subscribers:
            if not subscriber.ready.wait(START_TIMEOUT_S):
                raise BenchError(f"a watch stream sent nothing: {subscriber.error}")
        began = time.perf_counter()
        returned = record_paced(channel, prefix)
        write_rate = len(returned) / (time.perf_counter() - began)
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while time.monotonic() < deadline and any(
            len(subscriber.received) < len(returned) for subscriber in subscribers
        ):
            time.sleep(0.01)
    finally:
        for subscriber in subscribers:
            subscriber.stop()
    failed = [subscriber.error for subscriber in subscribers if subscriber.error]
    if failed:
        raise BenchError(f"{len(failed)} watch streams failed, e.g. {failed[0]}")
    latencies = sorted(
        (received_ns - returned[group_id]) / 1e6
        for subscriber in subscribers
        for group_id, received_ns in subscriber.received
    )
    missed = duplicated = 0
    for subscriber in subscribers:
        counts = Counter(group_id for group_id, _ in subscriber.received)
        missed += sum(1 for group_id in returned if not counts[group_id])
        duplicated += sum(count - 1 for count in counts.values())
    return {
        "watch_rate": write_rate,
        "watch_p50": percentile(latencies, 50),
        "watch_p99": percentile(latencies, 99),
        "watch_missed": missed,
        "watch_duplicated": duplicated,
    }


def measure_round(
    target: str, args: argparse.Namespace, deep_all: str, deep_app: str, number: int
) -> dict[str, float]:
    """Every gRPC metric once, on one client channel."""
    tag = f"R{number}"  # new groups of this round: distinct from the fill's and other rounds'
    with grpc.insecure_channel(target) as channel:
        return {
            **measure_lookups(channel, args.groups, random.Random(number)),
            **measure_record_rates(channel, args.seconds, tag),
            **measure_pages(channel, deep_all, deep_app),
            **measure_watch(channel, target, args.watchers, tag),
        }


# --- one store, and the report -----------------------------------------------------------


@dataclass
class StoreRun:
    """What one store measured: every metric's value per round."""

    version: str
    fill_s: float
    values: dict[str, list[float]]


def bench_store(store: str, args: argparse.Namespace) -> StoreRun:
    """Create, fill and measure one store."""
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-state-{store}-") as directory,
        fresh_database(store, Path(directory)) as db,
    ):
        workdir = Path(directory)
        progress(f"{store}: creating the tables (chat-policy service migrates)")
        with running_service(db, workdir, args.watchers):
            pass
        progress(f"{store}: filling {args.groups:,} groups")
        began = time.monotonic()
        db.fill(args.groups)
        fill_s = time.monotonic() - began
        progress(f"{store}: filled in {fill_s:.1f} s")
        size = db.size_bytes()
        values = {"size_mb": [size / 1e6], "size_per_group": [size / args.groups]}
        deep_all, deep_app = deep_page_token(db, 0), deep_page_token(db, FIRST_APP)
        with running_service(db, workdir, args.watchers) as target:
            for number in range(1, args.rounds + 1):
                progress(f"{store}: round {number} of {args.rounds}")
                for key, value in measure_round(target, args, deep_all, deep_app, number).items():
                    values.setdefault(key, []).append(value)
        return StoreRun(db.version(), fill_s, values)


def metric_labels(args: argparse.Namespace) -> dict[str, str]:
    """Each metric's row label, in table order."""
    deep = f"deep page ({DEEP:.0%} in) p50, ms"
    watch = f"WatchGroupStates fan-out to {args.watchers}"
    return {
        "health_p50": "Health.Check p50 (baseline: the transport floor), ms",
        "health_p99": "Health.Check p99, ms",
        "get_p50": "GetGroupState p50, ms",
        "get_p99": "GetGroupState p99, ms",
        "get_ratio": "GetGroupState p50 / Health.Check p50",
        "record_1": "RecordGroupFull, 1 thread, events/s",
        "record_n": f"RecordGroupFull, {RECORD_THREADS} threads, events/s",
        "page_first": f"ListFullGroups ({PAGE_SIZE}/page) first page p50, ms",
        "page_deep": f"ListFullGroups {deep}",
        "page_ratio": "ListFullGroups deep / first",
        "app_page_first": "ListFullGroups one sdk_app_id, first page p50, ms",
        "app_page_deep": f"ListFullGroups one sdk_app_id, {deep}",
        "app_page_ratio": "ListFullGroups one sdk_app_id, deep / first",
        "watch_rate": f"{watch}: events/s recorded meanwhile (at most 1 per"
        f" {WATCH_PACE_S * 1000:g} ms)",
        "watch_p50": f"{watch}: delivery p50, ms",
        "watch_p99": f"{watch}: delivery p99, ms",
        "watch_missed": f"{watch}: deliveries missed",
        "watch_duplicated": f"{watch}: deliveries duplicated",
        "size_mb": "store size on disk after the fill, MB",
        "size_per_group": "store size on disk per group, bytes",
    }


def table(args: argparse.Namespace, runs: dict[str, StoreRun]) -> list[str]:
    """The Markdown table: a row per metric, a column per store that finished."""
    rows = (
        [label, *(cell(run.values[key]) for run in runs.values())]
        for key, label in metric_labels(args).items()
    )
    return markdown_table(["metric", *runs], rows)


def report(
    args: argparse.Namespace,
    argv: list[str],
    runs: dict[str, StoreRun],
    failures: dict[str, str],
    total_s: float,
    load_at_start: float,
) -> str:
    """The Markdown report: command, machine, the table, fill times and failures."""
    lines = [
        *heading(["scripts/bench-state", *argv], (run.version for run in runs.values())),
        f"{args.groups:,} groups over {APPS} SdkAppids, 20% full, 5% destroyed. Each cell is"
        f" the median of {args.rounds} rounds (min..max). Latencies: {LATENCY_CALLS:,}"
        f" sequential calls ({PAGE_CALLS} per kind of page), ratios within a round. Watch"
        f" delivery: receipt by each subscriber minus the return of the RecordGroupFull call,"
        f" {WATCH_EVENTS} events, at most one per {WATCH_PACE_S * 1000:g} ms.",
        "",
    ]
    if runs:
        fills = ", ".join(f"{store} {run.fill_s:.1f} s" for store, run in runs.items())
        lines += [
            *table(args, runs),
            "",
            f"Fill, one INSERT ... SELECT then ANALYZE/VACUUM: {fills}.",
        ]
    lines += [f"**{store} failed**: {message}" for store, message in failures.items()]
    lines.append(
        f"Whole run: {total_s / 60:.1f} min. 1-minute load average before it: {load_at_start:.1f}"
        " (other work on the machine skews the results)."
    )
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------


def store_list(text: str) -> list[str]:
    """Parse --stores: a comma list of known stores."""
    stores = [store.strip() for store in text.split(",") if store.strip()]
    unknown = set(stores) - set(STORES)
    if unknown or not stores:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(STORES)}")
    return stores


def positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: a number of `kind` above zero."""

    def parse(text: str) -> float:
        """The number, or an argparse error."""
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be positive")
        return value

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of scripts/bench-state."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench-state",
        description="Fill each store with tracked groups, measure the service through gRPC,"
        " print a Markdown table. PostgreSQL: CHAT_POLICY_TEST_DATABASE_URL"
        f" (default {DEFAULT_TEST_DATABASE_URL}), in a schema made and dropped for the run.",
    )
    parser.add_argument("--stores", type=store_list, default=list(STORES), help="sqlite,postgresql")
    parser.add_argument("--groups", type=positive(int), default=1_000_000, help="groups filled")
    parser.add_argument("--rounds", type=positive(int), default=3, help="rounds per metric")
    parser.add_argument(
        "--seconds", type=positive(float), default=5.0, help="duration of each rate measurement"
    )
    parser.add_argument("--watchers", type=positive(int), default=50, help="watch subscribers")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Benchmark every store asked for; exit 1 if any failed (the others are still reported)."""
    args = parse_args(argv)
    began, load_at_start = time.monotonic(), os.getloadavg()[0]
    runs: dict[str, StoreRun] = {}
    failures: dict[str, str] = {}
    for store in args.stores:
        try:
            runs[store] = bench_store(store, args)
        except Exception as error:  # reported below; the other stores still run
            traceback.print_exc()
            failures[store] = f"{type(error).__name__}: {' '.join(str(error).split())}"
    print(report(args, argv, runs, failures, time.monotonic() - began, load_at_start))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
