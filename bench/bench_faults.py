"""Fault benchmark: kill -9 the policy service under webhook load (`scripts/bench --faults`).

For each store (SQLite, the shipped default; PostgreSQL in a schema of its own) this starts
`chat-policy service` and `chat-policy adapter` as real processes on free ports, the way a
user would: authentication on (CHAT_POLICY_CALLBACK_TOKENS, CHAT_POLICY_SDKAPPIDS), a fresh
data dir, CHAT_POLICY_METRICS_BIND=127.0.0.1:0, the shipped defaults for everything else.

A load generator in this process (--connections threads, one keep-alive http.client
connection each) posts signed webhooks paced to --rate for --duration seconds: even-numbered
requests are a Group.CallbackBeforeCreateGroup the shipped default policy allows, odd ones a
Group.CallbackAfterGroupFull of a group of their own (@TGS#F<run><n>). Each request is due at
start + n / rate (open loop: a slow answer does not delay the next requests, it only holds a
connection); each carries its own X-Request-ID, so the adapter's log line says what it did.

At --kill-at seconds the service gets SIGKILL; --down seconds later it is started again on
the same port and store, and the load never pauses. After the load the adapter's spool
(read-only, from its file) is left to drain for up to --drain-timeout seconds, then the
service is asked (BatchGetGroupStates, 1000 groups a call) which of the acknowledged
after-events' groups are full: that is "found in the store". Must-haves: every
before-webhook answered within Chat's 2 s, and every acknowledged after-event found.

The Markdown report goes to stdout (--json writes the numbers), progress to stderr. Exit
status 0 whether the must-haves are met or not (they are measured, and a missed one is shown
loudly); 1 when the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import itertools
import json
import math
import os
import re
import secrets
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import grpc
import psycopg
from psycopg import sql

from adapter.signature import compute_sign
from bench.bench_state import positive
from bench.processes import (
    ChatPolicyProcess,
    HarnessError,
    clean_env,
    free_ports,
    grpc_serving,
    http_get,
    tcp_listening,
    wait_until,
)
from bench.report import heading, machine, markdown_table, number, percentile, verdict
from bench.report import progress as report_progress
from chatpolicy.v1 import group_state_pb2, group_state_service_pb2, group_state_service_pb2_grpc

STORES = ("sqlite", "postgresql")
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
SDK_APP_ID = 1400000042
BEFORE = "Group.CallbackBeforeCreateGroup"
AFTER = "Group.CallbackAfterGroupFull"
SHORT = {BEFORE: "BeforeCreateGroup", AFTER: "AfterGroupFull"}

CHAT_TIMEOUT_S = 2.0  # Chat waits this long for an answer
HTTP_TIMEOUT_S = 10.0  # the load generator's own limit: slow answers are measured, not cut
LATE_S = 0.1  # a request sent this much after it was due: the load generator fell behind
# gunicorn closes a keep-alive connection idle for 2 s (its default keepalive); a connection
# idle for longer than this is reopened before use, so no request races that close.
IDLE_REOPEN_S = 1.0
SIGN_REFRESH_S = 5.0  # a new RequestTime and Sign this often (tolerance: 60 s)
START_TIMEOUT_S = 30.0
SPOOL_POLL_S = 0.1
BATCH_GET_LIMIT = 1000
WARMUP_REQUESTS = 10  # of each kind, before the load; not counted

progress = functools.partial(report_progress, "bench-faults")


# --- webhooks ----------------------------------------------------------------------------


class Signer:
    """Query strings as Chat sends them, with a Sign for a RequestTime at most
    SIGN_REFRESH_S old."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._current = ("0", "")  # (RequestTime, Sign), swapped whole: safe across threads

    def path(self, command: str) -> str:
        """The request path and query for `command`, signed."""
        request_time, sign = self._current
        now = int(time.time())
        if now - int(request_time) >= SIGN_REFRESH_S:
            request_time = str(now)
            sign = compute_sign(self._token, request_time)
            self._current = (request_time, sign)
        query = {
            "SdkAppid": SDK_APP_ID,
            "CallbackCommand": command,
            "contenttype": "json",
            "ClientIP": "203.0.113.7",
            "OptPlatform": "RESTAPI",
            "Sign": sign,
            "RequestTime": request_time,
        }
        return "/?" + urlencode(query)


def webhook_body(command: str, n: int, group_id: str) -> bytes:
    """The body of request `n`: a creation the default policy allows, or a full group."""
    event_ms = str(time.time_ns() // 1_000_000)
    document: dict[str, object]
    if command == BEFORE:
        account = f"bench_user_{n % 997}"
        document = {
            "CallbackCommand": BEFORE,
            "Operator_Account": account,
            "Owner_Account": account,
            "Type": "Public",
            "Name": f"Fault bench {n}",
            "CreateGroupNum": 3,
            "MemberList": [{"Member_Account": "bob"}, {"Member_Account": "peter"}],
            "EventTime": event_ms,
        }
    else:
        document = {"CallbackCommand": AFTER, "GroupId": group_id, "EventTime": event_ms}
    return json.dumps(document).encode()


@dataclass(slots=True)
class Record:
    """One request: what was sent, when (seconds from the load's start), what came back."""

    n: int
    command: str
    group_id: str
    request_id: str
    due_s: float
    start_s: float = 0.0
    end_s: float = 0.0
    status: int | None = None  # None: no HTTP answer (see error)
    error_code: int | None = None
    error: str | None = None

    @property
    def latency_s(self) -> float:
        """Time from sending to the whole answer (or to the failure)."""
        return self.end_s - self.start_s

    @property
    def acknowledged(self) -> bool:
        """HTTP 200 with ErrorCode 0: Chat takes the webhook as handled."""
        return self.status == 200 and self.error_code == 0


class Load:
    """Threads posting the webhooks, each request due at start + n / rate."""

    def __init__(self, port: int, signer: Signer, run_id: str, args: argparse.Namespace):
        self.port, self.signer, self.run_id = port, signer, run_id
        self.rate: float = args.rate
        self.duration_s: float = args.duration
        self.connections: int = args.connections
        self.records: list[Record] = []  # list.append is atomic: threads share it
        self._numbers = itertools.count()  # next() is atomic too
        self.errors: list[BaseException] = []

    @property
    def scheduled(self) -> int:
        """How many requests fall due within the duration."""
        return math.ceil(self.rate * self.duration_s)

    def run(self, t0: float) -> None:
        """Send every scheduled request; return when all are answered or failed."""
        threads = [
            threading.Thread(target=self._guarded, args=(t0,), name=f"load-{i}", daemon=True)
            for i in range(self.connections)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.errors:
            raise HarnessError(f"a load thread failed: {self.errors[0]!r}")

    def _guarded(self, t0: float) -> None:
        try:
            self._send_all(t0)
        except BaseException as error:  # a bug here, not an answer: report it
            self.errors.append(error)

    def _send_all(self, t0: float) -> None:
        connection: http.client.HTTPConnection | None = None
        last_used = 0.0
        while (n := next(self._numbers)) < self.scheduled:
            due = t0 + n / self.rate
            if (delay := due - time.monotonic()) > 0:
                time.sleep(delay)
            command = BEFORE if n % 2 == 0 else AFTER
            group_id = f"@TGS#F{self.run_id}{n}" if command == AFTER else ""
            request_id = f"bench-faults-{self.run_id}-{n}"
            path, body = self.signer.path(command), webhook_body(command, n, group_id)
            headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
            if connection is not None and time.monotonic() - last_used > IDLE_REOPEN_S:
                connection.close()
                connection = None
            if connection is None:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S
                )
            record = Record(n, command, group_id, request_id, due - t0)
            start = time.monotonic()
            try:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                end = time.monotonic()
                record.status = response.status
                try:
                    record.error_code = int(json.loads(answer)["ErrorCode"])
                except (ValueError, KeyError, TypeError):
                    record.error = f"answer without an ErrorCode: {answer[:200]!r}"
                reuse = not response.will_close
            except (OSError, http.client.HTTPException) as error:
                end = time.monotonic()
                record.error = f"{type(error).__name__}: {error}"
                reuse = False
            if not reuse:
                connection.close()
                connection = None
            record.start_s, record.end_s = start - t0, end - t0
            last_used = end
            self.records.append(record)
        if connection is not None:
            connection.close()


# --- the outage and the spool -------------------------------------------------------------


@dataclass
class Outage:
    """When the service was killed, started again and answered again (s from the start)."""

    killed_s: float | None = None
    restarted_s: float | None = None
    serving_s: float | None = None
    error: BaseException | None = None


def kill_and_restart(
    service: ChatPolicyProcess,
    grpc_port: int,
    t0: float,
    args: argparse.Namespace,
    outage: Outage,
) -> None:
    """At t0 + kill_at: kill -9 the service; after --down seconds start it again and wait
    until it answers SERVING. Failures go to outage.error."""
    try:
        time.sleep(max(0.0, t0 + args.kill_at - time.monotonic()))
        progress(f"kill -9 of the policy service (pid {service.pid})")
        service.kill()
        outage.killed_s = time.monotonic() - t0
        time.sleep(args.down)
        service.start()
        outage.restarted_s = time.monotonic() - t0
        progress(f"policy service started again (pid {service.pid})")
        wait_for_service(service, grpc_port, interval_s=0.01)
        outage.serving_s = time.monotonic() - t0
        progress(f"policy service serving {outage.serving_s - outage.killed_s:.2f} s after kill")
    except BaseException as error:
        outage.error = error


def wait_for_service(service: ChatPolicyProcess, grpc_port: int, interval_s: float) -> None:
    """Wait until the service listens, then until its health Check says SERVING."""
    target = f"127.0.0.1:{grpc_port}"
    for condition, what in (
        (lambda: tcp_listening(grpc_port), "the policy service to listen"),
        (lambda: grpc_serving(target), "the policy service to answer SERVING"),
    ):
        wait_until(
            condition, START_TIMEOUT_S, what, alive=service.check_alive, interval_s=interval_s
        )


def spool_depth(path: Path) -> int | None:
    """Events waiting in the adapter's spool, read without changing it; None if unreadable."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            (depth,) = connection.execute("SELECT count(*) FROM spooled_event").fetchone()
        finally:
            connection.close()
    except sqlite3.Error:
        return None
    return int(depth)


class SpoolWatch:
    """Samples the spool's depth every SPOOL_POLL_S from the load's start until stopped."""

    def __init__(self, path: Path, t0: float) -> None:
        self.path, self.t0 = path, t0
        self.samples: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spool-watch", daemon=True)

    def start(self) -> SpoolWatch:
        """Start sampling."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()

    def latest(self) -> int | None:
        """The latest depth read."""
        return self.samples[-1][1] if self.samples else None

    def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic() - self.t0, spool_depth(self.path)))
            if self._stop.wait(SPOOL_POLL_S):
                return


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (the `cpu` line of /proc/stat); None off Linux."""
    try:
        with open("/proc/stat") as stat:
            return [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def cpu_use(before: list[int] | None, after: list[int] | None) -> dict[str, float] | None:
    """Busy and steal shares (%) of all cores between two cpu_times() readings."""
    if before is None or after is None:
        return None
    delta = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(delta[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    if total <= 0:
        return None
    idle = delta[3] + delta[4]
    steal = delta[7] if len(delta) > 7 else 0
    return {"busy": 100 * (total - idle - steal) / total, "steal": 100 * steal / total}


# --- what the store, the logs and the metrics say --------------------------------------------


def store_states(grpc_port: int, group_ids: list[str]) -> tuple[int, int]:
    """Of these groups: how many the store holds as full, and how many of those with a
    full_event_count other than 1 (one event each was sent)."""
    found = repeated = 0
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = group_state_service_pb2_grpc.GroupStateServiceStub(channel)
        for start in range(0, len(group_ids), BATCH_GET_LIMIT):
            refs = [
                group_state_pb2.GroupRef(sdk_app_id=SDK_APP_ID, group_id=group_id)
                for group_id in group_ids[start : start + BATCH_GET_LIMIT]
            ]
            request = group_state_service_pb2.BatchGetGroupStatesRequest(groups=refs)
            answer = stub.BatchGetGroupStates(request, timeout=30, wait_for_ready=True)
            for state in answer.group_states:
                if state.full:
                    found += 1
                    repeated += state.full_event_count != 1
    return found, repeated


@dataclass
class LogFacts:
    """What a process's log says: request outcomes by request ID, errors and tracebacks."""

    outcomes: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    tracebacks: int = 0


def read_log(text: str) -> LogFacts:
    """Parse JSON log lines; a line that is not JSON counts only if it is a traceback."""
    facts = LogFacts()
    for line in text.splitlines():
        if "Traceback" in line:
            facts.tracebacks += 1
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        if entry.get("logger") == "adapter.request" and entry.get("request_id"):
            facts.outcomes[str(entry["request_id"])] = str(entry.get("outcome"))
        if entry.get("level") in ("ERROR", "CRITICAL"):
            facts.errors.append(str(entry.get("message", line))[:300])
    return facts


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def metric_sum(exposition: str, name: str, labels: str = "") -> float:
    """The sum of the samples of `name` whose labels contain `labels` (text format)."""
    total = 0.0
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        if match and match[1] == name and labels in (match[2] or ""):
            total += float(match[3])
    return total


# --- one store ---------------------------------------------------------------------------


@dataclass
class StoreRun:
    """Everything measured with one store."""

    store: str
    records: list[Record]
    outage: Outage
    spool_samples: list[tuple[float, int | None]]
    drain_end_s: float  # when waiting for the drain ended, from the load's start
    found: int
    repeated: int
    adapter_log: LogFacts
    service_log: LogFacts
    metrics: dict[str, float]
    exit_codes: dict[str, int | None]
    load_s: float
    cpu: dict[str, float] | None


@contextlib.contextmanager
def database_url(store: str, server_url: str) -> Iterator[str | None]:
    """The CHAT_POLICY_DATABASE_URL of a run: None (the default SQLite file under the data
    dir) or a fresh PostgreSQL schema, dropped afterwards."""
    if store == "sqlite":
        yield None
        return
    schema = f"bench_faults_{secrets.token_hex(6)}"
    ident = sql.Identifier(schema)
    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
    try:
        parts = urlsplit(server_url)
        query = dict(parse_qsl(parts.query))
        query["options"] = f"{query.get('options', '')} -csearch_path={schema}".strip()
        yield urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))
    finally:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))


def run_store(store: str, args: argparse.Namespace, workdir: Path, server_url: str) -> StoreRun:
    """Start both processes on a fresh store, load, kill and restart, drain, check."""
    run_id = secrets.token_hex(3).upper()
    data_dir = workdir / store
    data_dir.mkdir()
    progress(f"{store}: starting chat-policy service and adapter (logs in {data_dir})")
    with started_pair(store, server_url, data_dir) as pair:
        signer = Signer(pair.token)
        warm_up(pair.http_port, signer, run_id)
        measured = measure(
            store, args, pair.service, pair.adapter, pair.grpc_port, pair.http_port, signer, run_id
        )
    service, adapter, exit_codes = pair.service, pair.adapter, pair.exit_codes
    progress(f"{store}: processes stopped, exit status {exit_codes}")
    adapter_log, service_log = read_log(adapter.log()), read_log(service.log())
    with (data_dir / "requests.jsonl").open("w") as out:  # kept with --workdir
        out.writelines(json.dumps(asdict(record)) + "\n" for record in measured["records"])
    return StoreRun(
        store=store,
        adapter_log=adapter_log,
        service_log=service_log,
        exit_codes=exit_codes,
        **measured,
    )


@dataclass
class Pair:
    """`chat-policy service` and `chat-policy adapter`, started by started_pair."""

    service: ChatPolicyProcess
    adapter: ChatPolicyProcess
    http_port: int
    grpc_port: int
    token: str
    exit_codes: dict[str, int | None] = field(default_factory=dict)  # once stopped


@contextlib.contextmanager
def started_pair(store: str, server_url: str, workdir: Path, **settings: str) -> Iterator[Pair]:
    """Start `chat-policy service`, then `chat-policy adapter`, on free ports and a fresh
    store (SQLite in workdir, or a new PostgreSQL schema), auth on, logs in workdir, plus
    CHAT_POLICY_* `settings`; wait until the adapter is ready; stop both when the block ends,
    their exit statuses in .exit_codes."""
    http_port, grpc_port = free_ports(2)
    token = secrets.token_hex(16)
    with database_url(store, server_url) as url:
        env = clean_env(
            CHAT_POLICY_HTTP_BIND=f"127.0.0.1:{http_port}",
            CHAT_POLICY_GRPC_BIND=f"127.0.0.1:{grpc_port}",
            CHAT_POLICY_DATA_DIR=str(workdir / "data"),
            CHAT_POLICY_METRICS_BIND="127.0.0.1:0",
            CHAT_POLICY_CALLBACK_TOKENS=token,
            CHAT_POLICY_SDKAPPIDS=str(SDK_APP_ID),
            **({"CHAT_POLICY_DATABASE_URL": url} if url else {}),
            **settings,
        )
        pair = Pair(
            ChatPolicyProcess("service", env, workdir / "service.log"),
            ChatPolicyProcess("adapter", env, workdir / "adapter.log"),
            http_port,
            grpc_port,
            token,
        )
        try:
            pair.service.start()
            wait_for_service(pair.service, grpc_port, interval_s=0.05)
            pair.adapter.start()
            wait_until(
                lambda: ready(http_port),
                START_TIMEOUT_S,
                "the adapter's /readyz to answer 200",
                alive=pair.adapter.check_alive,
            )
            yield pair
        finally:
            pair.exit_codes = {"adapter": pair.adapter.stop(), "service": pair.service.stop()}


def ready(http_port: int) -> bool:
    """True when the adapter's /readyz answers 200 (it reaches the policy service)."""
    try:
        return http_get(http_port, "/readyz")[0] == 200
    except OSError:
        return False


def warm_up(http_port: int, signer: Signer, run_id: str) -> None:
    """A few webhooks of each kind, one at a time: each must be answered 200, ErrorCode 0
    (else the setup is wrong: the token, the SdkAppid, the policy)."""
    for n in range(2 * WARMUP_REQUESTS):
        command = BEFORE if n % 2 == 0 else AFTER
        body = webhook_body(command, n, f"@TGS#W{run_id}{n}")
        connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=HTTP_TIMEOUT_S)
        try:
            connection.request("POST", signer.path(command), body=body)
            response = connection.getresponse()
            answer = response.read()
        finally:
            connection.close()
        if response.status != 200 or json.loads(answer).get("ErrorCode") != 0:
            raise HarnessError(f"warm-up {command} answered {response.status} {answer!r}")


def measure(
    store: str,
    args: argparse.Namespace,
    service: ChatPolicyProcess,
    adapter: ChatPolicyProcess,
    grpc_port: int,
    http_port: int,
    signer: Signer,
    run_id: str,
) -> dict[str, Any]:
    """The load with the outage in it, the drain, the store check, the adapter's metrics."""
    load = Load(http_port, signer, run_id, args)
    outage = Outage()
    progress(
        f"{store}: {load.scheduled:,} webhooks over {args.duration:g} s at {args.rate:g}/s;"
        f" kill -9 at {args.kill_at:g} s, restart {args.down:g} s later"
    )
    t0 = time.monotonic() + 0.2  # the threads are up before the first request is due
    cpu_before = cpu_times()
    watch = SpoolWatch(Path(adapter.env["CHAT_POLICY_DATA_DIR"]) / "adapter-spool.db", t0)
    watch.start()
    fault = threading.Thread(
        target=kill_and_restart, args=(service, grpc_port, t0, args, outage), daemon=True
    )
    fault.start()
    try:
        load.run(t0)
        load_s = time.monotonic() - t0
        cpu = cpu_use(cpu_before, cpu_times())
        fault.join()
        if outage.error is not None:
            raise HarnessError(f"the restart failed: {outage.error}") from outage.error
        progress(f"{store}: load done in {load_s:.1f} s; waiting for the spool to drain")
        deadline = time.monotonic() + args.drain_timeout
        while watch.latest() != 0 and time.monotonic() < deadline:  # not drained: reported
            adapter.check_alive()
            time.sleep(SPOOL_POLL_S)
    finally:
        watch.stop()
    drain_end_s = time.monotonic() - t0
    if watch.latest() != 0:
        progress(f"{store}: the spool did NOT drain within {args.drain_timeout:g} s")
    service.check_alive()
    adapter.check_alive()
    acknowledged = sorted(r.group_id for r in load.records if r.command == AFTER and r.acknowledged)
    progress(f"{store}: asking the store about {len(acknowledged):,} acknowledged groups")
    found, repeated = store_states(grpc_port, acknowledged)
    exposition = http_get(http_port, "/metrics")[1].decode()
    metrics = {
        "spooled": metric_sum(exposition, "chat_policy_adapter_spooled_events_total"),
        "replayed": metric_sum(exposition, "chat_policy_adapter_replayed_events_total"),
        "fail_open": metric_sum(
            exposition, "chat_policy_adapter_creation_fallbacks_total", 'outcome="fail-open"'
        ),
        "spool_depth": metric_sum(exposition, "chat_policy_adapter_spool_depth"),
    }
    return {
        "records": sorted(load.records, key=lambda r: r.n),
        "outage": outage,
        "spool_samples": watch.samples,
        "drain_end_s": drain_end_s,
        "found": found,
        "repeated": repeated,
        "metrics": metrics,
        "load_s": load_s,
        "cpu": cpu,
    }


# --- summary and report --------------------------------------------------------------------


def summarize(run: StoreRun, args: argparse.Namespace) -> dict[str, Any]:
    """The numbers of one store's run (the report's cells and the JSON)."""
    records, outage = run.records, run.outage
    before = [r for r in records if r.command == BEFORE]
    after = [r for r in records if r.command == AFTER]
    outcomes = run.adapter_log.outcomes
    fail_open = [r for r in before if outcomes.get(r.request_id) == "fail-open"]
    spooled = [r for r in after if outcomes.get(r.request_id) == "spooled"]
    acknowledged = sum(r.acknowledged for r in after)
    serving_s = outage.serving_s or 0.0
    degraded_end = max((r.end_s for r in fail_open + spooled), default=None)
    depths = [depth for _, depth in run.spool_samples if depth is not None]
    drained_from = max(serving_s, max((r.end_s for r in spooled), default=0.0))
    drained_at = next(
        (t for t, depth in run.spool_samples if t >= drained_from and depth == 0), None
    )

    def latencies(kind: list[Record]) -> dict[str, float | None]:
        ordered = sorted(r.latency_s * 1000 for r in kind if r.status is not None)
        if not ordered:
            return {"p50_ms": None, "p99_ms": None, "max_ms": None}
        return {
            "p50_ms": percentile(ordered, 50),
            "p99_ms": percentile(ordered, 99),
            "max_ms": ordered[-1],
        }

    in_time = sum(r.status is not None and r.latency_s < CHAT_TIMEOUT_S for r in before)
    failures = [asdict(r) for r in records if r.error is not None or not r.acknowledged]
    return {
        "store": run.store,
        "sent": len(records),
        "scheduled": math.ceil(args.rate * args.duration),
        "late": sum(r.start_s - r.due_s > LATE_S for r in records),
        "late_max_s": max((r.start_s - r.due_s for r in records), default=0.0),
        "cpu_during_load": run.cpu,
        "answered": sum(r.status is not None for r in records),
        "statuses": dict(Counter(str(r.status or "no answer") for r in records)),
        "before": {
            "sent": len(before),
            "answered_within_2s": in_time,
            "fail_open": len(fail_open),
            "refused": sum(r.error_code not in (None, 0) for r in before),
            "latency": latencies(before),
        },
        "after": {
            "sent": len(after),
            "acknowledged": acknowledged,
            "spooled": len(spooled),
            "found": run.found,
            "lost": acknowledged - run.found,
            "full_event_count_not_1": run.repeated,
            "latency": latencies(after),
        },
        "no_log_line": sum(r.status is not None and r.request_id not in outcomes for r in records),
        "outage": {
            "killed_s": outage.killed_s,
            "restarted_s": outage.restarted_s,
            "serving_s": outage.serving_s,
            "down_s": serving_s - (outage.killed_s or 0.0),
            "degraded_after_serving_s": None if degraded_end is None else degraded_end - serving_s,
        },
        "spool": {
            "peak_depth": max(depths, default=0),
            "drained_after_serving_s": None if drained_at is None else drained_at - serving_s,
            "drain_timeout_s": args.drain_timeout,
            "depth_at_end": run.spool_samples[-1][1] if run.spool_samples else None,
        },
        "adapter_metrics": run.metrics,
        "logs": {
            "adapter_errors": run.adapter_log.errors,
            "adapter_tracebacks": run.adapter_log.tracebacks,
            "service_errors": run.service_log.errors,
            "service_tracebacks": run.service_log.tracebacks,
        },
        "exit_codes": run.exit_codes,
        "load_s": run.load_s,
        "must_have": {
            "before_within_2s": in_time == len(before),
            "acknowledged_equals_found": acknowledged == run.found,
        },
        "failed_requests": failures[:100],
    }


def share(part: int, whole: int) -> str:
    """`part / whole (percent)`."""
    percent = 100 * part / whole if whole else 0.0
    text = f"{percent:.2f}".rstrip("0").rstrip(".") if percent not in (0, 100) else f"{percent:g}"
    return f"{part:,} / {whole:,} ({text}%)"


def latency_cell(latency: dict[str, float | None]) -> str:
    """p50 / p99 / max."""
    return " / ".join(number(latency[key]) for key in ("p50_ms", "p99_ms", "max_ms"))


def seconds_cell(value: float | None, otherwise: str) -> str:
    """Seconds to two decimals, or what `None` means."""
    return otherwise if value is None else f"{value:.2f}"


# The table's rows: the first cell, and each store's cell from its summary.
ROWS: list[tuple[str, Any]] = [
    ("requests sent", lambda s: f"{s['sent']:,}"),
    (
        "requests sent > 100 ms after due (load generator behind); most behind, s",
        lambda s: f"{s['late']:,}; {s['late_max_s']:.2f}",
    ),
    (
        "machine CPU during the load: busy / steal, % of all cores",
        lambda s: (
            "-"
            if s["cpu_during_load"] is None
            else f"{s['cpu_during_load']['busy']:.0f} / {s['cpu_during_load']['steal']:.0f}"
        ),
    ),
    ("requests answered (any HTTP answer)", lambda s: share(s["answered"], s["sent"])),
    (
        "answers by HTTP status",
        lambda s: ", ".join(f"{k}: {v:,}" for k, v in sorted(s["statuses"].items())),
    ),
    (
        "BeforeCreateGroup answered within 2 s",
        lambda s: share(s["before"]["answered_within_2s"], s["before"]["sent"]),
    ),
    (
        "BeforeCreateGroup answered fail-open (ErrorCode 0, service down)",
        lambda s: f"{s['before']['fail_open']:,}",
    ),
    ("BeforeCreateGroup refused (ErrorCode ≠ 0)", lambda s: f"{s['before']['refused']:,}"),
    (
        "AfterGroupFull acknowledged (HTTP 200, ErrorCode 0)",
        lambda s: share(s["after"]["acknowledged"], s["after"]["sent"]),
    ),
    ("AfterGroupFull of those spooled (service down)", lambda s: f"{s['after']['spooled']:,}"),
    ("AfterGroupFull acknowledged, found full in the store", lambda s: f"{s['after']['found']:,}"),
    ("AfterGroupFull lost (acknowledged - found)", lambda s: f"{s['after']['lost']:,}"),
    (
        "AfterGroupFull found with full_event_count ≠ 1",
        lambda s: f"{s['after']['full_event_count_not_1']:,}",
    ),
    (
        "BeforeCreateGroup latency p50 / p99 / max, ms",
        lambda s: latency_cell(s["before"]["latency"]),
    ),
    ("AfterGroupFull latency p50 / p99 / max, ms", lambda s: latency_cell(s["after"]["latency"])),
    ("service down (kill -9 → SERVING again), s", lambda s: f"{s['outage']['down_s']:.2f}"),
    (
        "last fail-open or spooled answer, s after SERVING again",
        lambda s: seconds_cell(s["outage"]["degraded_after_serving_s"], "none"),
    ),
    ("spool depth, peak", lambda s: f"{s['spool']['peak_depth']:,}"),
    (
        "spool drained, s after SERVING again",
        lambda s: seconds_cell(
            s["spool"]["drained_after_serving_s"],
            f"**not within {s['spool']['drain_timeout_s']:g} s of the load's end**",
        ),
    ),
    (
        "adapter metrics: spooled / replayed / creation fail-open",
        lambda s: " / ".join(
            number(s["adapter_metrics"][key]) for key in ("spooled", "replayed", "fail_open")
        ),
    ),
    (
        "ERROR lines / tracebacks in the logs: adapter; service",
        lambda s: (
            f"{len(s['logs']['adapter_errors'])} / {s['logs']['adapter_tracebacks']};"
            f" {len(s['logs']['service_errors'])} / {s['logs']['service_tracebacks']}"
        ),
    ),
    (
        "must-have: every BeforeCreateGroup answered within 2 s",
        lambda s: verdict(s["must_have"]["before_within_2s"]),
    ),
    (
        "must-have: AfterGroupFull acknowledged = found in the store",
        lambda s: verdict(s["must_have"]["acknowledged_equals_found"]),
    ),
]


def table(summaries: list[dict[str, Any]]) -> list[str]:
    """The Markdown table: a row per metric, a column per store."""
    columns = ["metric", *(s["store"] for s in summaries)]
    return markdown_table(columns, ([name, *map(cell, summaries)] for name, cell in ROWS))


def missed(summary: dict[str, Any]) -> list[str]:
    """The must-haves a store's run missed, as sentences."""
    store, found = summary["store"], []
    before, after = summary["before"], summary["after"]
    if not summary["must_have"]["before_within_2s"]:
        late = before["sent"] - before["answered_within_2s"]
        found.append(f"{store}: {late:,} BeforeCreateGroup webhooks not answered within 2 s")
    if not summary["must_have"]["acknowledged_equals_found"]:
        found.append(
            f"{store}: {after['acknowledged']:,} AfterGroupFull acknowledged but"
            f" {after['found']:,} found in the store"
        )
    return found


def report(
    argv: list[str],
    args: argparse.Namespace,
    summaries: list[dict[str, Any]],
    versions: dict[str, str],
    total_s: float,
    load_average: float,
) -> str:
    """The Markdown report: command, machine, what was done, the table, verdicts, notes."""
    lines = [
        *heading(["scripts/bench", "--faults", *argv], (versions[s["store"]] for s in summaries)),
        "The load generator runs on the same cores.",
        f"Per store: `chat-policy service` and `chat-policy adapter` on free ports (auth on,"
        f" shipped defaults otherwise), {args.rate:g} signed webhooks/s for {args.duration:g} s"
        f" from {args.connections} keep-alive connections, half BeforeCreateGroup (allowed by"
        " the default policy), half AfterGroupFull of a new group each; the service killed"
        f" with SIGKILL at {args.kill_at:g} s and started again {args.down:g} s later on the"
        " same port and store, the load never pausing.",
        "",
        *table(summaries),
        "",
    ]
    all_missed = [line for s in summaries for line in missed(s)]
    if all_missed:
        lines += ["**MUST-HAVE MISSED:**", *(f"- **{line}**" for line in all_missed), ""]
    else:
        lines += ["Both must-haves met on every store.", ""]
    lines += [
        "Answered within 2 s: the whole answer read by the load generator, timed from sending"
        " (a connection opened for the request included), < 2 s. Acknowledged: HTTP 200 with"
        " ErrorCode 0, which Chat takes as delivered. Found: BatchGetGroupStates after the"
        " spool drained says the group is full; each group got one event, so its"
        " full_event_count must be 1. Fail-open and spooled come from the adapter's log line"
        " of each request (its X-Request-ID); the adapter's own metrics are beside them."
        " SERVING again: the restarted service's health Check answers SERVING (kill -9 to"
        f" that = --down plus the service's start). Whole run: {total_s:.0f} s; 1-minute load"
        f" average before it: {load_average:.1f}.",
    ]
    notes = []
    for s in summaries:
        if s["no_log_line"]:
            notes.append(f"{s['store']}: {s['no_log_line']:,} answered requests had no log line")
        for process, code in s["exit_codes"].items():
            if code != 0:
                notes.append(f"{s['store']}: chat-policy {process} exited with {code} on SIGTERM")
        for process in ("adapter", "service"):
            for message in sorted(set(s["logs"][f"{process}_errors"]))[:5]:
                notes.append(f"{s['store']}: {process} logged ERROR: {message}")
        for failure in s["failed_requests"][:5]:
            notes.append(
                f"{s['store']}: {SHORT[failure['command']]} #{failure['n']}"
                f" ({failure['request_id']}) at {failure['start_s']:.2f} s: status"
                f" {failure['status']}, ErrorCode {failure['error_code']}, {failure['error']}"
            )
    if notes:
        lines += ["", "Notes:", *(f"- {note}" for note in notes)]
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of scripts/bench --faults."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench --faults",
        description="Under a steady load of signed BeforeCreateGroup and AfterGroupFull"
        " webhooks, kill -9 the policy service once and start it again; report answers,"
        " latencies, fail-open answers, and whether every acknowledged after-event reached"
        " the store. Must-haves: every BeforeCreateGroup answered within 2 s; after-events"
        " acknowledged = found in the store. PostgreSQL: CHAT_POLICY_TEST_DATABASE_URL"
        f" (default {DEFAULT_TEST_DATABASE_URL}), a new schema per run, dropped after.",
    )
    parser.add_argument(
        "--duration", type=positive(float), default=60.0, help="seconds of load (60)"
    )
    parser.add_argument(
        "--rate", type=positive(float), default=200.0, help="webhooks per second, both kinds (200)"
    )
    parser.add_argument(
        "--kill-at", type=float, help="seconds into the load to kill the service (a third in)"
    )
    parser.add_argument(
        "--down",
        type=float,
        default=1.0,
        help="seconds between the kill and the restart (1: the shipped systemd units restart"
        " with RestartSec=1; the service's own start comes on top, and is reported)",
    )
    parser.add_argument(
        "--store",
        choices=(*STORES, "both"),
        default="both",
        help="sqlite (the default store: a file in the data dir), postgresql, or both (both)",
    )
    parser.add_argument(
        "--connections", type=int, default=64, help="load generator connections/threads (64)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=positive(float),
        default=60.0,
        help="seconds to wait after the load for the spool to drain (60)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="keep each store's data dir and the processes' logs in DIR/<store> (an empty or"
        " new directory; default: a temporary directory, removed at the end)",
    )
    args = parser.parse_args(argv)
    if args.kill_at is None:
        args.kill_at = args.duration / 3
    if not 0 <= args.kill_at < args.duration:
        parser.error("--kill-at must be within the load: 0 <= KILL_AT < DURATION")
    if args.down < 0:
        parser.error("--down must not be negative")
    if args.connections < 1:
        parser.error("--connections must be at least 1")
    return args


def check_postgres(server_url: str) -> str:
    """The server's version; HarnessError naming the URL when it does not answer."""
    try:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as error:
        detail = " ".join(str(error).split())
        raise HarnessError(
            f"PostgreSQL not reachable at {server_url}: {detail} (set"
            " CHAT_POLICY_TEST_DATABASE_URL, or run with --store sqlite)"
        ) from None
    return f"PostgreSQL {str(row[0]).split()[0] if row else '?'}"


def main(argv: list[str]) -> int:
    """Run each store, print the report; 1 only when the benchmark itself failed."""
    args = parse_args(argv)
    began, load_average = time.monotonic(), os.getloadavg()[0]
    stores = list(STORES) if args.store == "both" else [args.store]
    server_url = os.environ.get("CHAT_POLICY_TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    versions = {"sqlite": f"SQLite {sqlite3.sqlite_version}"}
    summaries = []
    try:
        if "postgresql" in stores:
            versions["postgresql"] = check_postgres(server_url)
        with contextlib.ExitStack() as stack:
            if args.workdir is None:
                workdir = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-faults-"))
                )
            else:
                workdir = args.workdir
                workdir.mkdir(parents=True, exist_ok=True)
            for store in stores:
                run = run_store(store, args, workdir, server_url)
                summaries.append(summarize(run, args))
    except (HarnessError, OSError, grpc.RpcError, psycopg.Error) as error:
        progress(f"the benchmark could not run: {error}")
        return 1
    total_s = time.monotonic() - began
    print(report(argv, args, summaries, versions, total_s, load_average))
    for summary in summaries:
        for line in missed(summary):
            progress(f"MUST-HAVE MISSED: {line}")
    if args.json is not None:
        document = {
            "command": ["scripts/bench", "--faults", *argv],
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "versions": versions,
            "settings": vars(args),
            "total_s": total_s,
            "load_average": load_average,
            "stores": {s["store"]: s for s in summaries},
        }
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
