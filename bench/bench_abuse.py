"""Abuse benchmark: webhooks while slow HTTP clients and idle gRPC streams hold connections
open (`scripts/bench --abuse`).

It starts `chat-policy service` and `chat-policy adapter` as real processes on free ports, the
way a user would (authentication on, a fresh data dir, examples/policy.toml, the shipped
defaults otherwise; SQLite, or a PostgreSQL schema of its own with --store postgresql). Then,
from one asyncio event loop in this process:

1. --slow slow HTTP connections to the adapter, each trickling the headers of a request that
   never ends, one byte every --trickle seconds (a slowloris client). A connection the server
   closes, or answers (408, 503, ...), is counted by what happened and opened again; a
   connection that cannot be opened is counted as refused and tried again.
2. --streams idle gRPC streams to the service, spread over --channels channels: calls of the
   server reflection's bidirectional ServerReflectionInfo, opened and never written to; and
   --watch-streams WatchGroupStates streams (for an SdkAppid that nothing writes, so that only
   the service's heartbeats flow). A stream is "held" while it has not ended; one that ends is
   counted by its status code (e.g. RESOURCE_EXHAUSTED for watch streams over
   CHAT_POLICY_WATCH_MAX_STREAMS). A watch stream is "accepted" once its first message (the
   service's progress message) arrived.
3. Once they are established (or --establish-timeout passed), signed webhooks paced at --rate
   for --duration seconds, open loop (each request is sent at its due time on a keep-alive
   connection of a pool, whatever happened to the earlier ones): even-numbered ones a
   Group.CallbackBeforeCreateGroup by an operator of its own, odd ones a
   Group.CallbackAfterGroupFull of a group of its own, signed as Chat signs (bench/wrk.py's
   helpers). Each must be answered HTTP 200 with ErrorCode 0 within Chat's 2 s; latency is from
   its due time to the end of the answer. Meanwhile the service's grpc.health.v1 Check ("")
   is asked every second (1 s deadline).

Afterwards the adapter's outcomes (its /metrics) tell fail-open or spooled answers apart from
allowed or recorded ones. The goal (issue 18): with every slow connection and idle stream
open, webhooks at 100 req/s answered with p99 < 100 ms, no error, every health check SERVING.

The Markdown report goes to stdout (--json writes the numbers), progress to stderr. Exit
status 0 whether the goal is met or not (it is shown loudly); 1 when the benchmark itself
could not run. Every client call has a deadline, so a server that answers nothing still gives
a report in bounded time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import re
import resource
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.bench_faults import DEFAULT_TEST_DATABASE_URL, SDK_APP_ID, started_pair
from bench.bench_state import positive
from bench.http_processes import EXAMPLE_POLICY, NORMAL_OUTCOMES, children, status_kb
from bench.processes import ChatPolicyProcess, http_get
from bench.report import heading, machine, markdown_table, number, percentile, verdict
from bench.report import progress as report_progress
from bench.wrk import Webhook, body, compute_sign, query_string
from chatpolicy.v1 import group_state_service_pb2 as state_pb

QUIET_SDK_APP_ID = 1  # the watch streams' filter: nothing is ever written for it
CHAT_TIMEOUT_S = 2.0  # Chat gives up on a webhook after this
CONNECT_TIMEOUT_S = 2.0
HEALTH_INTERVAL_S = 1.0
HEALTH_TIMEOUT_S = 1.0
IDLE_REOPEN_S = 1.0  # gunicorn closes a keep-alive connection idle for 2 s: reopen before
STREAM_SETTLE_S = 2.0  # streams that last this long after opening count as established
START_TIMEOUT_S = 30.0
GOAL_P99_MS = 100.0
REFLECTION_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
WATCH_METHOD = "/chatpolicy.v1.GroupStateService/WatchGroupStates"
# The slow connections' request: a header line long enough never to end at 1 byte a second.
SLOW_HEADER_BYTES = 8_000

progress = functools.partial(report_progress, "bench-abuse")


# --- slow HTTP connections -----------------------------------------------------------------


@dataclass
class SlowCounts:
    """What the slow connections saw."""

    wanted: int = 0
    opened: int = 0  # connections made, reopened ones included
    held: int = 0  # open right now
    held_most: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # connect failures by kind
    ended: Counter[str] = field(default_factory=Counter)  # how the server ended one
    bytes_sent: int = 0


def slow_head(port: int) -> bytes:
    """The bytes a slow connection trickles: a request line and headers that never end."""
    return (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"X-Slow: {'a' * SLOW_HEADER_BYTES}"
    ).encode()


def ending(data: bytes) -> str:
    """How the server ended a slow connection, from what it sent: "answered 408", ..."""
    if not data:
        return "closed without an answer"
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return f"answered {match.group(1).decode()}" if match else "answered something else"


async def slow_connection(
    port: int, delay_s: float, trickle_s: float, counts: SlowCounts, stop: asyncio.Event
) -> None:
    """Hold one slow connection until `stop`, opening it again whenever the server ends it."""
    head = slow_head(port)
    await asyncio.sleep(delay_s)
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as error:
            counts.refused[type(error).__name__] += 1
            await _sleep_unless(stop, trickle_s)
            continue
        counts.opened += 1
        counts.held += 1
        counts.held_most = max(counts.held_most, counts.held)
        answer = asyncio.ensure_future(reader.read(256))
        try:
            how = await _trickle(writer, head, answer, trickle_s, counts, stop)
        finally:
            counts.held -= 1
            answer.cancel()
            writer.transport.abort()
        if how:
            counts.ended[how] += 1


async def _trickle(
    writer: asyncio.StreamWriter,
    head: bytes,
    answer: asyncio.Future[bytes],
    trickle_s: float,
    counts: SlowCounts,
    stop: asyncio.Event,
) -> str:
    """Write `head` a byte at a time until the server answers or closes ("how"), the head is
    all sent, or `stop` ("": held to the end)."""
    for index in range(len(head)):
        if stop.is_set():
            return ""
        try:
            writer.write(head[index : index + 1])
            await writer.drain()
        except OSError as error:
            return f"write failed ({type(error).__name__})"
        counts.bytes_sent += 1
        done, _ = await asyncio.wait({answer}, timeout=trickle_s)
        if done:
            try:
                return ending(answer.result())
            except OSError as error:
                return f"read failed ({type(error).__name__})"
    return "the whole head was sent"


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


# --- idle gRPC streams ---------------------------------------------------------------------


@dataclass
class StreamCounts:
    """What the idle streams of one kind saw."""

    wanted: int = 0
    opened: int = 0
    held: int = 0  # not ended yet
    accepted: int = 0  # a first message arrived (watch streams)
    ended: Counter[str] = field(default_factory=Counter)  # by status code, before the end


async def idle_reflection_stream(
    channel: grpc.aio.Channel, counts: StreamCounts, stop: asyncio.Event
) -> None:
    """A ServerReflectionInfo stream, opened and never written to, held until `stop`."""
    call = channel.stream_stream(REFLECTION_METHOD)()
    await _hold(call, counts, stop, first_message=None)


async def idle_watch_stream(
    channel: grpc.aio.Channel, counts: StreamCounts, stop: asyncio.Event
) -> None:
    """A WatchGroupStates stream for an SdkAppid nothing writes, held until `stop`."""
    request = state_pb.WatchGroupStatesRequest(sdk_app_id=QUIET_SDK_APP_ID).SerializeToString()
    call = channel.unary_stream(WATCH_METHOD)(request)
    await _hold(call, counts, stop, first_message=call.read)


async def _hold(
    call: Any,
    counts: StreamCounts,
    stop: asyncio.Event,
    first_message: Callable[[], Any] | None,
) -> None:
    counts.opened += 1
    counts.held += 1
    ended = asyncio.ensure_future(call.code())
    try:
        if first_message is not None:
            reading = asyncio.ensure_future(first_message())
            done, _ = await asyncio.wait({reading, ended}, return_when=asyncio.FIRST_COMPLETED)
            if reading in done and reading.exception() is None:
                if reading.result() is not grpc.aio.EOF:
                    counts.accepted += 1
            else:
                reading.cancel()
        stopping = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({ended, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if ended in done:
            code = ended.result()
            counts.ended[code.name if code is not None else "?"] += 1
    except grpc.RpcError as error:
        counts.ended[error.code().name] += 1
    finally:
        counts.held -= 1
        call.cancel()
        ended.cancel()


# --- health and webhooks -------------------------------------------------------------------


async def watch_health(target: str, seen: list[tuple[float, str]], stop: asyncio.Event) -> None:
    """Check the service's health every HEALTH_INTERVAL_S until `stop`: its status name, or
    the error code of a check that failed."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        began = time.monotonic()
        while not stop.is_set():
            due = time.monotonic()
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT_S)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            except grpc.RpcError as error:
                status = error.code().name
            seen.append((due - began, status))
            await _sleep_unless(stop, max(0.0, due + HEALTH_INTERVAL_S - time.monotonic()))


@dataclass(slots=True)
class Sent:
    """One webhook sent: when it was due, how long until its answer, what came back."""

    n: int
    webhook: str
    due_s: float
    latency_s: float | None = None  # None: no answer within Chat's 2 s
    status: int | None = None
    error_code: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        """HTTP 200 with ErrorCode 0 within Chat's 2 s."""
        return self.status == 200 and self.error_code == 0


class WebhookSender:
    """Signed webhooks on a pool of keep-alive connections, each sent at its due time."""

    def __init__(self, port: int, token: str, tag: str) -> None:
        self.port, self.token, self.tag = port, token, tag
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.connections_opened = 0

    def request(self, webhook: Webhook, n: int) -> bytes:
        """The HTTP request of webhook n, signed now."""
        now = int(time.time())
        path = (
            f"/?{query_string(SDK_APP_ID, webhook)}"
            f"&Sign={compute_sign(self.token, now)}&RequestTime={now}"
        )
        payload = body(webhook, self.tag, 0, n, now).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nX-Request-ID: bench-abuse-{self.tag}-{n}\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        return head.encode() + payload

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer, last = self._idle.pop()
            if time.monotonic() - last < IDLE_REOPEN_S:
                return reader, writer
            writer.transport.abort()
        self.connections_opened += 1
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def send(self, record: Sent, due: float) -> None:
        """Send `record`'s webhook and read its answer, within Chat's 2 s from its due time."""
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout_at(due + CHAT_TIMEOUT_S):
                reader, writer = await self._connection()
                writer.write(self.request(record.webhook, record.n))  # type: ignore[arg-type]
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                record.status = int(lines[0].split()[1])
                headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
                answer = await reader.readexactly(int(headers.get("content-length", "0")))
            record.latency_s = time.monotonic() - due
            try:
                record.error_code = int(json.loads(answer)["ErrorCode"])
            except (ValueError, KeyError, TypeError):
                record.error = f"answer without an ErrorCode: {answer[:100]!r}"
            if headers.get("connection", "") != "close":
                self._idle.append((reader, writer, time.monotonic()))
                writer = None
        except TimeoutError:
            record.error = f"no answer within {CHAT_TIMEOUT_S:g} s"
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as error:
            record.error = f"{type(error).__name__}: {error}"
        finally:
            if writer is not None:
                writer.transport.abort()

    def close(self) -> None:
        """Close the idle connections."""
        for _, writer, _ in self._idle:
            writer.transport.abort()
        self._idle.clear()


async def send_webhooks(sender: WebhookSender, rate: float, duration_s: float) -> list[Sent]:
    """rate x duration webhooks, open loop: each at its due time, whatever the others do."""
    count = round(rate * duration_s)
    began = time.monotonic()
    records: list[Sent] = []
    tasks = []
    for n in range(count):
        due = began + n / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        record = Sent(n, "before" if n % 2 == 0 else "after", due - began)
        records.append(record)
        tasks.append(asyncio.create_task(sender.send(record, due)))
    await asyncio.gather(*tasks)
    sender.close()
    return records


# --- the run -------------------------------------------------------------------------------


@dataclass
class AbuseRun:
    """Everything the report needs."""

    slow: SlowCounts
    reflection: StreamCounts
    watch: StreamCounts
    health: list[tuple[float, str]] = field(default_factory=list)
    webhooks: list[Sent] = field(default_factory=list)
    established_s: float = 0.0
    at_load_start: dict[str, int] = field(default_factory=dict)
    at_load_end: dict[str, int] = field(default_factory=dict)
    load_s: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    webhook_connections: int = 0


def holding(run: AbuseRun) -> dict[str, int]:
    """What is held open right now."""
    return {
        "slow": run.slow.held,
        "reflection": run.reflection.held,
        "watch": run.watch.held,
        "watch_accepted": run.watch.accepted,
    }


async def abuse(args: argparse.Namespace, http_port: int, grpc_target: str, token: str) -> AbuseRun:
    """Open the slow connections and idle streams, wait until they are established, send the
    webhooks while checking health, then let everything go."""
    run = AbuseRun(
        SlowCounts(wanted=args.slow),
        StreamCounts(wanted=args.streams),
        StreamCounts(wanted=args.watch_streams),
    )
    stop = asyncio.Event()
    began = time.monotonic()
    channels = [grpc.aio.insecure_channel(grpc_target) for _ in range(args.channels)]
    tasks = [asyncio.create_task(watch_health(grpc_target, run.health, stop))]
    try:
        for i in range(args.watch_streams):
            channel = channels[i % len(channels)]
            tasks.append(asyncio.create_task(idle_watch_stream(channel, run.watch, stop)))
        for i in range(args.streams):
            channel = channels[i % len(channels)]
            tasks.append(asyncio.create_task(idle_reflection_stream(channel, run.reflection, stop)))
        ramp_s = min(2.0, args.trickle)  # spread the connects and the trickles
        for i in range(args.slow):
            delay = ramp_s * i / max(args.slow, 1) + random.uniform(0, 0.01)
            tasks.append(
                asyncio.create_task(slow_connection(http_port, delay, args.trickle, run.slow, stop))
            )
        progress(
            f"opening {args.slow} slow HTTP connections, {args.streams} idle reflection streams"
            f" and {args.watch_streams} watch streams"
        )
        deadline = began + args.establish_timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            streams_opened = run.reflection.opened + run.watch.opened
            all_open = run.slow.held >= args.slow and streams_opened >= (
                args.streams + args.watch_streams
            )
            if all_open and time.monotonic() - began >= STREAM_SETTLE_S + ramp_s:
                break
        run.established_s = time.monotonic() - began
        run.at_load_start = holding(run)
        progress(f"established after {run.established_s:.1f} s: {run.at_load_start}")
        progress(f"sending webhooks at {args.rate:g}/s for {args.duration:g} s")
        sender = WebhookSender(http_port, token, secrets.token_hex(3))
        load_began = time.monotonic()
        run.webhooks = await send_webhooks(sender, args.rate, args.duration)
        run.load_s = time.monotonic() - load_began
        run.webhook_connections = sender.connections_opened
        run.at_load_end = holding(run)
    finally:
        stop.set()
        await asyncio.sleep(0)
        _, pending = await asyncio.wait(tasks, timeout=5.0)
        for task in pending:
            task.cancel()
        for channel in channels:
            await channel.close(grace=None)
    return run


def raise_file_limit(needed: int) -> None:
    """Raise this process's soft limit of open files to its hard limit if `needed` is more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if hard < needed:
            progress(f"only {hard} open files allowed (ulimit -n): some connections will fail")


def adapter_outcomes(http_port: int) -> dict[str, int]:
    """The adapter's webhook answers so far by outcome (its /metrics)."""
    text = http_get(http_port, "/metrics", timeout_s=10.0)[1].decode()
    counts: Counter[str] = Counter()
    for match in re.finditer(
        r"^chat_policy_adapter_webhook_requests_total\{([^}]*)\} ([0-9.e+]+)$", text, re.MULTILINE
    ):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        counts[labels.get("outcome", "")] += int(float(match.group(2)))
    return dict(counts)


def peak_rss(adapter: ChatPolicyProcess, service: ChatPolicyProcess) -> dict[str, float]:
    """VmHWM of the service, of the adapter's master and of its largest worker, in MB."""
    workers = [status_kb(pid, "VmHWM") or 0 for pid in children(adapter.pid)]
    return {
        "service": (status_kb(service.pid, "VmHWM") or 0) / 1000,
        "adapter_master": (status_kb(adapter.pid, "VmHWM") or 0) / 1000,
        "adapter_worker": max(workers, default=0) / 1000,
    }


def run_abuse(args: argparse.Namespace, workdir: Path) -> AbuseRun:
    """Start the deployment, abuse it, stop it."""
    raise_file_limit(args.slow + args.channels + 4 * round(args.rate) + 200)
    progress(f"{args.store}: starting chat-policy service and adapter (logs in {workdir})")
    with started_pair(
        args.store,
        args.database_url,
        workdir,
        CHAT_POLICY_POLICY_FILE=str(EXAMPLE_POLICY),
    ) as pair:
        http_port = pair.http_port
        before = adapter_outcomes(http_port)
        run = asyncio.run(abuse(args, http_port, f"127.0.0.1:{pair.grpc_port}", pair.token))
        progress("slow connections and streams let go; reading the adapter's outcomes")
        after: dict[str, int] = {}
        with contextlib.suppress(OSError):
            after = adapter_outcomes(http_port)
        run.outcomes = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
        run.rss_mb = peak_rss(pair.adapter, pair.service)
    run.exit_codes = pair.exit_codes
    return run


# --- the report ----------------------------------------------------------------------------


def summarize(run: AbuseRun, args: argparse.Namespace) -> dict[str, Any]:
    """The numbers of the report."""
    records = run.webhooks
    answered = [r for r in records if r.latency_s is not None]
    latencies = sorted(1000 * r.latency_s for r in answered if r.latency_s is not None)
    bad = [r for r in records if not r.ok]
    errors: Counter[str] = Counter()
    for r in bad:
        if r.latency_s is None:
            errors[r.error.split(":")[0]] += 1
        elif r.status != 200:
            errors[f"HTTP {r.status}"] += 1
        else:
            errors[f"ErrorCode {r.error_code}" if r.error_code is not None else "no ErrorCode"] += 1
    degraded = {k: v for k, v in run.outcomes.items() if k not in NORMAL_OUTCOMES}
    health = Counter(status for _, status in run.health)
    during = [s for t, s in run.health if t >= run.established_s]
    latency = {
        "p50": percentile(latencies, 50) if latencies else None,
        "p99": percentile(latencies, 99) if latencies else None,
        "max": latencies[-1] if latencies else None,
    }
    error_count = len(bad) + sum(degraded.values())
    reasons = []
    if not records:
        reasons.append("no webhook sent")
    if latency["p99"] is None or latency["p99"] >= GOAL_P99_MS:
        reasons.append(f"p99 {number(latency['p99'])} ms")
    if error_count:
        reasons.append(f"{error_count} errors")
    not_serving = [s for s in during if s != "SERVING"]
    if not_serving or not during:
        reasons.append(f"{len(not_serving)} of {len(during)} health checks not SERVING")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "database_url")},
        "sent": len(records),
        "answered": len(answered),
        "ok": len(records) - len(bad),
        "latency_ms": latency,
        "errors": error_count,
        "error_kinds": dict(errors),
        "error_sample": next((f"{r.webhook} {r.status} {r.error}" for r in bad), ""),
        "adapter_outcomes": run.outcomes,
        "degraded_outcomes": degraded,
        "health": dict(health),
        "health_during_load": dict(Counter(during)),
        "slow": {
            "wanted": run.slow.wanted,
            "opened": run.slow.opened,
            "held_at_load_start": run.at_load_start.get("slow", 0),
            "held_at_load_end": run.at_load_end.get("slow", 0),
            "held_most": run.slow.held_most,
            "ended_by_server": dict(run.slow.ended),
            "refused": dict(run.slow.refused),
            "bytes_sent": run.slow.bytes_sent,
        },
        "reflection_streams": {
            "wanted": run.reflection.wanted,
            "opened": run.reflection.opened,
            "held_at_load_start": run.at_load_start.get("reflection", 0),
            "held_at_load_end": run.at_load_end.get("reflection", 0),
            "ended": dict(run.reflection.ended),
        },
        "watch_streams": {
            "wanted": run.watch.wanted,
            "opened": run.watch.opened,
            "accepted": run.watch.accepted,
            "held_at_load_start": run.at_load_start.get("watch", 0),
            "held_at_load_end": run.at_load_end.get("watch", 0),
            "ended": dict(run.watch.ended),
        },
        "established_s": run.established_s,
        "load_s": run.load_s,
        "webhook_connections": run.webhook_connections,
        "rss_mb": run.rss_mb,
        "exit_codes": run.exit_codes,
        "goal": {"met": not reasons, "missed_by": reasons},
    }


def counts_cell(counts: dict[str, int]) -> str:
    """`3 answered 408, 2 closed without an answer`, or 0."""
    if not counts:
        return "0"
    return ", ".join(f"{v:,} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def report(summary: dict[str, Any], argv: list[str]) -> str:
    """The Markdown report."""
    s = summary
    settings = s["settings"]
    slow, reflection, watch = s["slow"], s["reflection_streams"], s["watch_streams"]
    latency = s["latency_ms"]
    lines = heading(["scripts/bench", "--abuse", *argv])
    lines += [
        "",
        f"`chat-policy service` + `chat-policy adapter` on {settings['store']}, shipped defaults"
        " (examples/policy.toml, auth on). From one asyncio loop:"
        f" {settings['slow']:,} slow HTTP connections to the adapter, each trickling request"
        f" headers one byte every {settings['trickle']:g} s (reopened when the server ends"
        f" one); {settings['streams']:,} idle ServerReflectionInfo streams and"
        f" {settings['watch_streams']:,} WatchGroupStates streams (an SdkAppid nothing writes)"
        f" to the service over {settings['channels']} channels; then signed webhooks at"
        f" {settings['rate']:g}/s for {settings['duration']:g} s, open loop, half"
        " BeforeCreateGroup and half AfterGroupFull, each an operator or group of its own;"
        " latency from each webhook's due time, Chat's 2 s limit; the service's health"
        f" checked every {HEALTH_INTERVAL_S:g} s ({HEALTH_TIMEOUT_S:g} s deadline).",
        "",
    ]
    rows = [
        ("webhooks sent", f"{s['sent']:,}"),
        ("webhooks answered within 2 s (any HTTP answer)", f"{s['answered']:,}"),
        ("webhooks answered 200, ErrorCode 0", f"{s['ok']:,}"),
        ("latency p50, ms", number(latency["p50"])),
        ("latency p99, ms", number(latency["p99"])),
        ("latency max, ms", number(latency["max"])),
        ("errors (no answer, not 200, ErrorCode not 0, fail-open or spooled)", f"{s['errors']:,}"),
        ("errors by kind", counts_cell(s["error_kinds"])),
        ("adapter outcomes", counts_cell(s["adapter_outcomes"])),
        ("health checks while loaded", counts_cell(s["health_during_load"])),
        ("health checks in all", counts_cell(s["health"])),
        ("slow connections held at the load's start / end", _pair(slow)),
        ("slow connections opened (reopened included)", f"{slow['opened']:,}"),
        ("slow connections ended by the server", counts_cell(slow["ended_by_server"])),
        ("slow connections refused", counts_cell(slow["refused"])),
        ("reflection streams held at the load's start / end", _pair(reflection)),
        ("reflection streams ended (refused) by code", counts_cell(reflection["ended"])),
        ("watch streams accepted (first message)", f"{watch['accepted']:,} / {watch['wanted']:,}"),
        ("watch streams held at the load's start / end", _pair(watch)),
        ("watch streams ended (refused) by code", counts_cell(watch["ended"])),
        ("established after, s", f"{s['established_s']:.1f}"),
        ("peak RSS: service / adapter worker, MB", _rss(s["rss_mb"])),
    ]
    lines += markdown_table(["metric", settings["store"]], [list(row) for row in rows])
    goal = s["goal"]
    missed_by = "" if goal["met"] else f" ({'; '.join(goal['missed_by'])})"
    lines += [
        "",
        f"Goal (issue 18): while {settings['slow']:,} slow HTTP connections and"
        f" {settings['streams'] + settings['watch_streams']:,} idle streams are open, webhooks"
        f" at {settings['rate']:g} req/s answered with p99 < {GOAL_P99_MS:g} ms, no error,"
        f" health SERVING: {verdict(goal['met'])}{missed_by}.",
    ]
    if s["error_sample"]:
        lines.append(f"First error: {s['error_sample'][:200]}")
    return "\n".join(lines)


def _pair(counts: dict[str, Any]) -> str:
    return (
        f"{counts['held_at_load_start']:,} / {counts['held_at_load_end']:,}"
        f" (of {counts['wanted']:,})"
    )


def _rss(rss: dict[str, float]) -> str:
    if not rss:
        return "-"
    return f"{number(rss['service'])} / {number(rss['adapter_worker'])}"


# --- command line --------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of scripts/bench --abuse."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench --abuse",
        description="Signed webhooks paced at --rate while --slow slow HTTP connections"
        " (headers trickled) hold the adapter and --streams idle gRPC streams hold the"
        " service; report latency, errors, health and what the servers did with the"
        " connections, and the goal of issue 18.",
    )
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--slow", type=int, default=1000, help="slow HTTP connections")
    parser.add_argument(
        "--trickle", type=positive(float), default=1.0, help="seconds between two header bytes"
    )
    parser.add_argument(
        "--streams", type=int, default=1000, help="idle ServerReflectionInfo streams"
    )
    parser.add_argument(
        "--watch-streams", type=int, default=100, help="idle WatchGroupStates streams"
    )
    parser.add_argument(
        "--channels", type=positive(int), default=10, help="gRPC channels the streams share"
    )
    parser.add_argument("--rate", type=positive(float), default=100.0, help="webhooks/s")
    parser.add_argument(
        "--duration", type=positive(float), default=20.0, help="seconds of webhooks"
    )
    parser.add_argument(
        "--establish-timeout",
        type=positive(float),
        default=30.0,
        help="seconds to wait for the connections and streams before the webhooks",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    parser.add_argument("--workdir", type=Path, help="keep logs here (default: a temp dir)")
    parser.add_argument(
        "--database-url",
        default="",
        help="--store postgresql: the server (default CHAT_POLICY_TEST_DATABASE_URL, else"
        f" {DEFAULT_TEST_DATABASE_URL}); a schema is made and dropped",
    )
    args = parser.parse_args(argv)
    for name in ("slow", "streams", "watch_streams"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more")
    if not args.database_url:
        args.database_url = os.environ.get("CHAT_POLICY_TEST_DATABASE_URL") or (
            DEFAULT_TEST_DATABASE_URL
        )
    return args


def main(argv: list[str]) -> int:
    """Run it and print the report; 1 when it could not run."""
    args = parse_args(argv)
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-abuse-")))
        else:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        try:
            run = run_abuse(args, workdir)
        except Exception as error:  # the benchmark could not run: say why
            progress(f"could not run: {type(error).__name__}: {error}")
            return 1
    summary = summarize(run, args)
    summary["total_s"] = time.monotonic() - began
    print(report(summary, argv))
    print(f"\nWhole run: {summary['total_s']:.0f} s.")
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
