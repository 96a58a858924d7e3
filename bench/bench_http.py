"""HTTP benchmark of the whole deployment against its floor, run by `scripts/bench` (--help).

Configurations, each started fresh as real processes on free ports for every round
(bench/http_processes.py), in this order within a round:

- B0: a bare Falcon app under gunicorn that parses the body and answers Chat's OK;
- B1: B0 plus one unary grpcio call per request to a do-nothing grpcio echo server
  (bench/baseline_apps.py), the floor an adapter making one gRPC call can approach;
- B1-async: B1 on asyncio: the same resource as a falcon.asgi.App under gunicorn's uvicorn
  worker (uvloop, httptools), one grpc.aio call per request to a grpc.aio echo server: the
  floor an asyncio adapter and service can approach;
- E2E: `chat-policy service` + `chat-policy adapter` with their shipped defaults except ports
  and data dir, auth on (CHAT_POLICY_CALLBACK_TOKENS) and CHAT_POLICY_SDKAPPIDS set, on SQLite
  (the default file in the data dir) and PostgreSQL (a new schema, dropped afterwards), for
  Group.CallbackBeforeCreateGroup with examples/policy.toml and for
  Group.CallbackAfterGroupFull (a new group per request) with the shipped default policy.

Each is loaded by wrk from loopback, on the same cores (bench/wrk.py): a warm-up, then a
closed loop (16 connections, as fast as the answers come), then a paced run (~300 req/s).
Measured per run: req/s, latency percentiles (wrk's), server CPU per request (utime + stime
of every server process from /proc, across the run, over the requests completed), wrk's own
CPU, errors of any kind (socket errors, timeouts, answers other than 200 with ErrorCode 0,
adapter outcomes other than allowed/recorded, e.g. fail-open or spooled); per configuration,
each process's peak RSS (VmHWM). Cells are medians over the rounds with min..max; ratios to
B0, B1 and B1-async are taken within a round. Then (--million, on by default, about a minute) the
policy service's peak RSS on a SQLite and a PostgreSQL store filled with 1,000,000 groups
(bench/bench_state.py's fill) after reads and writes through gRPC.

The Markdown report goes to stdout (and --json writes the numbers), progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import json
import os
import random
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import psycopg

from bench.bench_state import (
    DEFAULT_TEST_DATABASE_URL,
    FIRST_APP,
    fill_key,
    fresh_database,
    positive,
    running_service,
)
from bench.http_processes import (
    MB,
    NORMAL_OUTCOMES,
    Configuration,
    Deployment,
    StartError,
    configurations,
    e2e_environ,
    machine_ticks,
    start,
    status_kb,
)
from bench.processes import clean_env, free_ports, http_get
from bench.report import cell, heading, machine, markdown_table, number, verdict
from bench.report import progress as report_progress
from bench.wrk import INSTALL_HINT, Load, WrkError, run_wrk, wrk_path
from chatpolicy.v1 import creation_policy_service_pb2 as creation_pb
from chatpolicy.v1 import creation_policy_service_pb2_grpc as creation_rpc
from chatpolicy.v1 import group_state_service_pb2 as state_pb
from chatpolicy.v1 import group_state_service_pb2_grpc as state_rpc

CONNECTIONS = 16
WRK_THREADS = 2
PACED_RATE = 300.0
SDK_APP_ID = 1_400_012_345
MODES = ("closed", "paced")
GOAL_THROUGHPUT_RATIO = 0.9  # E2E req/s >= this x B1's, closed loop
GOAL_ASYNC_THROUGHPUT_RATIO = 0.6  # E2E req/s >= this x B1-async's, closed loop
BASELINES = ("b0", "b1", "b1async")
GOAL_PACED_P99_MS = 15.0
GOAL_CPU_RATIO = 1.15  # E2E server CPU per request <= this x B1's, closed loop
GOAL_WORKER_RSS_MB = 80.0
GOAL_SERVICE_RSS_MB = 150.0  # with MILLION tracked groups
MILLION = 1_000_000
MILLION_GETS = 2_000
MILLION_CHECKS = 2_000
MILLION_RECORDS = 500
MILLION_PAGE_SIZE = 1_000
CALL_TIMEOUT_S = 30.0
# Before each configuration, wait (up to QUIET_WAIT_S) until the machine is this idle: other
# jobs on the same cores skew everything. A run during which other work took more than
# OTHER_WORK_FLAG_PCT of the machine is flagged.
QUIET_BUSY_PCT = 15.0
QUIET_WAIT_S = 120.0
OTHER_WORK_FLAG_PCT = 10.0

progress = functools.partial(report_progress, "bench")


# --- one configuration, one round ---------------------------------------------------------


@dataclass
class RoundResult:
    """What one round measured of one configuration: per mode, numbers; peak RSS."""

    modes: dict[str, dict[str, float]] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what made a run's errors, for people


def measure(deployment: Deployment, load: Load, workdir: Path) -> tuple[dict[str, float], str]:
    """One wrk run against a running deployment: its numbers, and a sample of what went
    wrong ("" when nothing did). Server CPU is read from /proc just before and after wrk."""
    outcomes_before = deployment.adapter_outcomes()
    before = deployment.snapshot()
    result = run_wrk(deployment.url, load, workdir)
    after = deployment.snapshot()
    outcomes = deployment.adapter_outcomes()
    outcomes.subtract(outcomes_before)
    degraded = {k: v for k, v in outcomes.items() if k not in NORMAL_OUTCOMES and v > 0}
    cpu = after.cpu_s_since(before)
    machine = after.machine_since(before)
    requests = max(result.requests, 1)
    total = machine["total_s"] or 1.0
    values = {
        "rate": result.rate,
        **{key: result.latency_ms[key] for key in ("p50", "p90", "p99", "p99_9", "max")},
        "cpu_us": (cpu.get("http", 0.0) + cpu.get("grpc", 0.0)) * 1e6 / requests,
        "cpu_http_us": cpu.get("http", 0.0) * 1e6 / requests,
        "cpu_grpc_us": cpu.get("grpc", 0.0) * 1e6 / requests,
        "cpu_postgresql_us": cpu.get("postgresql", 0.0) * 1e6 / requests,
        # The gRPC server is one Python process: above ~90% of one core it is the bottleneck.
        "grpc_core_pct": 100 * cpu.get("grpc", 0.0) / (result.duration_s or 1.0),
        "wrk_cpu_us": result.cpu_s * 1e6 / requests,
        # The machine's CPU time (all cores) that went to none of the above: other work.
        "other_pct": 100 * (machine["busy_s"] - sum(cpu.values()) - result.cpu_s) / total,
        "busy_pct": 100 * machine["busy_s"] / total,
        "steal_pct": 100 * machine["steal_s"] / total,
        "requests": result.requests,
        "errors": result.errors + sum(degraded.values()),
        "socket_errors": result.socket_errors,
        "timeouts": result.timeouts,
        "bad_answers": result.bad_answers,
        "degraded": sum(degraded.values()),
    }
    problems = []
    if result.errors:
        problems.append(
            f"{result.socket_errors} socket errors, {result.timeouts} timeouts,"
            f" {result.bad_answers} answers not 200 with ErrorCode 0"
            + (f" (e.g. {result.bad_sample})" if result.bad_sample else "")
        )
    if degraded:
        problems.append(f"adapter outcomes {dict(sorted(degraded.items()))}")
    if load.rate and result.rate < 0.95 * load.rate:
        problems.append(f"paced at {result.rate:.0f} req/s, below the {load.rate:g} asked")
    if values["other_pct"] > OTHER_WORK_FLAG_PCT:
        problems.append(f"other work took {values['other_pct']:.0f}% of the machine meanwhile")
    return values, "; ".join(problems)


def machine_busy_pct(seconds: float) -> float:
    """How busy the machine's cores were over the next `seconds`, in % of all of them."""
    before = machine_ticks()
    time.sleep(seconds)
    after = machine_ticks()
    delta = {key: after[key] - before[key] for key in after}
    total = sum(delta.values()) or 1
    return 100 * (total - delta["idle"] - delta["iowait"] - delta["steal"]) / total


def wait_for_quiet() -> None:
    """Wait until the machine is nearly idle (other jobs finished), QUIET_WAIT_S at most."""
    deadline = time.monotonic() + QUIET_WAIT_S
    busy = machine_busy_pct(1.0)
    if busy <= QUIET_BUSY_PCT:
        return
    progress(f"  the machine is {busy:.0f}% busy with other work: waiting for it to quieten")
    while busy > QUIET_BUSY_PCT and time.monotonic() < deadline:
        busy = machine_busy_pct(2.0)
    if busy > QUIET_BUSY_PCT:
        progress(f"  still {busy:.0f}% busy after {QUIET_WAIT_S:.0f} s: going on")


def bench_configuration(
    configuration: Configuration, args: argparse.Namespace, workdir: Path, number: int
) -> RoundResult:
    """Start the configuration fresh, warm it up, run the closed loop then the paced run,
    read its peak RSS, stop it."""
    result = RoundResult()
    if not args.smoke:
        wait_for_quiet()
    round_tag = f"r{number}{secrets.token_hex(2)}"
    with start(configuration, workdir, SDK_APP_ID) as deployment:

        def load(mode: str, duration_s: int) -> Load:
            """A run of this round in `mode` (warmup: a closed loop not measured)."""
            return Load(
                webhook=configuration.webhook,
                sdk_app_id=SDK_APP_ID,
                token=deployment.token,
                tag=f"{round_tag}{mode[0]}",
                duration_s=duration_s,
                connections=CONNECTIONS,
                threads=WRK_THREADS,
                rate=args.rate if mode == "paced" else 0.0,
            )

        if args.warmup:
            run_wrk(deployment.url, load("warmup", args.warmup), workdir)
        for mode in MODES:
            values, problem = measure(deployment, load(mode, args.duration), workdir)
            result.modes[mode] = values
            if problem:
                result.problems.append(f"{mode}: {problem}")
        result.rss = deployment.peak_rss_mb()
    return result


# --- the whole run -------------------------------------------------------------------------


@dataclass
class MillionResult:
    """The policy service's memory on a store of `groups` tracked groups."""

    store: str
    groups: int
    fill_s: float
    calls_s: float
    hwm_started_mb: float
    hwm_mb: float
    rss_mb: float
    calls: dict[str, int]


@dataclass
class Run:
    """Everything the report needs."""

    argv: list[str]
    args: argparse.Namespace
    configs: list[Configuration]
    rounds: list[dict[str, RoundResult]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    million: dict[str, MillionResult] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    load_average: float = 0.0
    total_s: float = 0.0

    def values(self, config_id: str, mode: str, key: str) -> list[float]:
        """A metric of a configuration over the rounds it finished."""
        return [
            r[config_id].modes[mode][key]
            for r in self.rounds
            if config_id in r and mode in r[config_id].modes
        ]

    def rss(self, config_id: str, key: str) -> list[float]:
        """A peak RSS of a configuration over the rounds it finished."""
        return [r[config_id].rss[key] for r in self.rounds if key in r.get(config_id, _NONE).rss]

    def ratios(self, config_id: str, mode: str, key: str, baseline: str) -> list[float]:
        """A metric of a configuration over the baseline's in the same round."""
        found = []
        for r in self.rounds:
            if config_id in r and baseline in r and mode in r[config_id].modes:
                denominator = r[baseline].modes[mode][key]
                if denominator:
                    found.append(r[config_id].modes[mode][key] / denominator)
        return found


_NONE = RoundResult()


def run_rounds(run: Run, workdir: Path) -> None:
    """--rounds rounds, every configuration once per round, in order."""
    args = run.args
    for round_number in range(1, args.rounds + 1):
        results: dict[str, RoundResult] = {}
        run.rounds.append(results)
        for configuration in run.configs:
            progress(f"round {round_number} of {args.rounds}: {configuration.label}")
            directory = workdir / f"round{round_number}-{configuration.id}"
            try:
                results[configuration.id] = bench_configuration(
                    configuration, args, directory, round_number
                )
            except (StartError, WrkError, OSError, psycopg.Error, subprocess.SubprocessError) as e:
                traceback.print_exc()
                message = " ".join(str(e).split())[:500]
                run.failures.append(f"round {round_number}, {configuration.label}: {message}")
                continue
            for problem in results[configuration.id].problems:
                progress(f"  {configuration.label}: {problem}")


# --- the service with a million groups --------------------------------------------------


def bench_million(store: str, groups: int, workdir: Path) -> MillionResult:
    """Fill a new store with `groups` groups (bench_state's fill), start the policy service on
    it with examples/policy.toml, make reads and writes an operator's services would, and read
    the service's peak RSS."""
    workdir.mkdir(parents=True, exist_ok=True)
    with fresh_database(store, workdir) as db:
        progress(f"million: {store}: creating the tables")
        with running_service(db, workdir, 1):
            pass
        progress(f"million: {store}: filling {groups:,} groups")
        began = time.monotonic()
        db.fill(groups)
        fill_s = time.monotonic() - began
        config = Configuration(f"{store}-million", f"service on {store}", "e2e", "before", store)
        deployment = Deployment(config, workdir, 0, SDK_APP_ID, "unused", clean_env())
        grpc_port, deployment.metrics_port = free_ports(2)
        deployment.grpc_target = f"127.0.0.1:{grpc_port}"
        try:
            service = deployment.start(
                "grpc",
                "service",
                [str(Path(sys.executable).with_name("chat-policy")), "service"],
                e2e_environ(deployment, db.url),
            )
            deployment.wait_for_grpc(service)
            pid = service.popen.pid
            started = (status_kb(pid, "VmHWM") or 0) * 1000 / MB
            progress(f"million: {store}: reading and writing through gRPC")
            began = time.monotonic()
            calls = million_calls(deployment, groups)
            calls_s = time.monotonic() - began
            hwm = (status_kb(pid, "VmHWM") or 0) * 1000 / MB
            rss = (status_kb(pid, "VmRSS") or 0) * 1000 / MB
        finally:
            deployment.stop()
    return MillionResult(store, groups, fill_s, calls_s, started, hwm, rss, calls)


def million_calls(deployment: Deployment, groups: int) -> dict[str, int]:
    """GetGroupState of random groups, every page of ListFullGroups, CountGroupStates and a
    /metrics scrape (both count the table), CheckGroupCreation (each writes a rate-limit slot),
    RecordGroupFull of existing groups."""
    rng = random.Random(1)
    calls: dict[str, int] = {}
    with grpc.insecure_channel(deployment.grpc_target) as channel:
        groups_stub = state_rpc.GroupStateServiceStub(channel)
        creation = creation_rpc.CreationPolicyServiceStub(channel)
        for _ in range(MILLION_GETS):
            key = fill_key(rng.randrange(groups))
            groups_stub.GetGroupState(
                state_pb.GetGroupStateRequest(sdk_app_id=key.sdk_app_id, group_id=key.group_id),
                timeout=CALL_TIMEOUT_S,
            )
        calls["GetGroupState"] = MILLION_GETS
        token, pages, listed = "", 0, 0
        while True:
            page = groups_stub.ListFullGroups(
                state_pb.ListFullGroupsRequest(page_size=MILLION_PAGE_SIZE, page_token=token),
                timeout=CALL_TIMEOUT_S,
            )
            pages += 1
            listed += len(page.group_states)
            token = page.next_page_token
            if not token:
                break
        calls[f"ListFullGroups pages of {MILLION_PAGE_SIZE:,}"] = pages
        calls["full groups listed"] = listed
        groups_stub.CountGroupStates(state_pb.CountGroupStatesRequest(), timeout=CALL_TIMEOUT_S)
        calls["CountGroupStates"] = 1
        http_get(deployment.metrics_port, "/metrics")
        calls["/metrics scrapes"] = 1
        for n in range(MILLION_CHECKS):
            operator = f"million-{n}"
            answer = creation.CheckGroupCreation(
                creation_pb.CheckGroupCreationRequest(
                    sdk_app_id=FIRST_APP,
                    operator_account=operator,
                    owner_account=operator,
                    group_type="Work",
                    name=f"Book club {n}",
                    member_accounts=["bob", "peter"],
                    opt_platform="iOS",
                ),
                timeout=CALL_TIMEOUT_S,
            )
            if answer.decision != creation_pb.DECISION_ALLOW:
                raise StartError(f"CheckGroupCreation refused {operator}: {answer.rule_id}")
        calls["CheckGroupCreation"] = MILLION_CHECKS
        for _ in range(MILLION_RECORDS):
            key = fill_key(rng.randrange(groups))
            request = state_pb.RecordGroupFullRequest(
                sdk_app_id=key.sdk_app_id, group_id=key.group_id
            )
            request.event_time.GetCurrentTime()
            groups_stub.RecordGroupFull(request, timeout=CALL_TIMEOUT_S)
        calls["RecordGroupFull"] = MILLION_RECORDS
    return calls


def run_million(run: Run, workdir: Path) -> None:
    """The million-group measurement on each store asked for."""
    for store in run.args.million_stores:
        try:
            run.million[store] = bench_million(store, run.args.groups, workdir / f"million-{store}")
        except Exception as error:  # reported; the other store still runs
            traceback.print_exc()
            run.failures.append(f"million, {store}: {' '.join(str(error).split())[:500]}")


# --- the report ----------------------------------------------------------------------------


def errors_cell(run: Run, config_id: str, mode: str) -> str:
    """Errors summed over the rounds; bold when any."""
    total = int(sum(run.values(config_id, mode, "errors")))
    return f"**{total:,}**" if total else "0"


def closed_table(run: Run) -> list[str]:
    """The closed-loop table: throughput, latency, CPU per request, ratios, errors."""
    columns = [
        *("configuration", "req/s", "req/s ÷ B1", "req/s ÷ B1-async", "req/s ÷ B0"),
        *("p50, ms", "p99, ms", "server CPU, µs/req", "CPU ÷ B1", "CPU ÷ B1-async"),
        *("CPU ÷ B0", "errors"),
    ]
    rows = []
    for c in run.configs:
        cells = [
            cell(run.values(c.id, "closed", "rate")),
            cell(run.ratios(c.id, "closed", "rate", "b1")),
            cell(run.ratios(c.id, "closed", "rate", "b1async")),
            cell(run.ratios(c.id, "closed", "rate", "b0")),
            cell(run.values(c.id, "closed", "p50")),
            cell(run.values(c.id, "closed", "p99")),
            cell(run.values(c.id, "closed", "cpu_us")),
            cell(run.ratios(c.id, "closed", "cpu_us", "b1")),
            cell(run.ratios(c.id, "closed", "cpu_us", "b1async")),
            cell(run.ratios(c.id, "closed", "cpu_us", "b0")),
            errors_cell(run, c.id, "closed"),
        ]
        rows.append([c.label, *cells])
    return markdown_table(columns, rows)


def cpu_table(run: Run) -> list[str]:
    """Where the CPU went in the closed loop: per process kind, and the rest of the machine."""
    columns = [
        *("configuration", "gunicorn (HTTP side), µs/req", "gRPC server, µs/req"),
        "gRPC server busy, % of one core",
        *("PostgreSQL server, µs/req", "wrk, µs/req", "other work, % of the machine"),
        "stolen, % of the machine",
    ]
    rows = []
    for c in run.configs:
        cells = [
            cell(run.values(c.id, "closed", "cpu_http_us")),
            cell(run.values(c.id, "closed", "cpu_grpc_us")) if c.kind != "b0" else "-",
            cell(run.values(c.id, "closed", "grpc_core_pct")) if c.kind != "b0" else "-",
            cell(run.values(c.id, "closed", "cpu_postgresql_us"))
            if c.store == "postgresql"
            else "-",
            cell(run.values(c.id, "closed", "wrk_cpu_us")),
            cell([max(0.0, v) for v in run.values(c.id, "closed", "other_pct")]),
            cell(run.values(c.id, "closed", "steal_pct")),
        ]
        rows.append([c.label, *cells])
    return markdown_table(columns, rows)


def paced_table(run: Run) -> list[str]:
    """The paced table: achieved rate, latency, CPU per request, errors."""
    columns = [
        *("configuration", f"req/s (asked {run.args.rate:g})", "p50, ms", "p90, ms", "p99, ms"),
        *("max, ms", "server CPU, µs/req", "CPU ÷ B1", "CPU ÷ B1-async", "HTTP side, µs/req"),
        *("gRPC side, µs/req", "errors"),
    ]
    rows = []
    for c in run.configs:
        cells = [
            cell(run.values(c.id, "paced", "rate")),
            *(cell(run.values(c.id, "paced", key)) for key in ("p50", "p90", "p99", "max")),
            cell(run.values(c.id, "paced", "cpu_us")),
            cell(run.ratios(c.id, "paced", "cpu_us", "b1")),
            cell(run.ratios(c.id, "paced", "cpu_us", "b1async")),
            cell(run.values(c.id, "paced", "cpu_http_us")),
            cell(run.values(c.id, "paced", "cpu_grpc_us")) if c.kind != "b0" else "-",
            errors_cell(run, c.id, "paced"),
        ]
        rows.append([c.label, *cells])
    return markdown_table(columns, rows)


def rss_table(run: Run) -> list[str]:
    """Peak RSS (VmHWM) of each configuration's processes over the rounds."""
    columns = [
        *("configuration", "gunicorn master, MB", "largest gunicorn worker, MB"),
        "gRPC server, MB",
    ]
    rows = [
        [
            c.label,
            cell(run.rss(c.id, "http_master")),
            cell(run.rss(c.id, "http_worker")),
            cell(run.rss(c.id, "grpc")) if c.kind != "b0" else "-",
        ]
        for c in run.configs
    ]
    return markdown_table(columns, rows)


def million_table(run: Run) -> list[str]:
    """The policy service's memory on the filled stores."""
    columns = [
        *("store", "groups", "fill, s", "full groups listed", "VmHWM once serving, MB"),
        *("VmHWM after the calls, MB", "VmRSS at the end, MB", "calls, s"),
    ]
    rows = [
        [
            m.store,
            f"{m.groups:,}",
            f"{m.fill_s:.1f}",
            f"{m.calls.get('full groups listed', 0):,}",
            f"{m.hwm_started_mb:.1f}",
            f"{m.hwm_mb:.1f}",
            f"{m.rss_mb:.1f}",
            f"{m.calls_s:.1f}",
        ]
        for m in run.million.values()
    ]
    return markdown_table(columns, rows)


@dataclass(frozen=True)
class Goal:
    """One goal of issue 7 for one configuration (or store), measured."""

    name: str
    subject: str
    value: float | None
    limit: float
    at_least: bool  # value >= limit, else value <= limit
    unit: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the value meets the limit; None when not measured."""
        if self.value is None:
            return None
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def text(self) -> str:
        """E.g. `E2E SQLite AfterGroupFull 0.93 ≥ 0.9: met`."""
        if self.value is None:
            return f"{self.subject}: not measured"
        sign = "≥" if self.at_least else "≤"
        limit = f"{self.limit:g}{self.unit}"
        value = f"{number(self.value)}{self.unit}"
        return f"{self.subject} {value} {sign} {limit}: {verdict(bool(self.met))}"


def median(values: list[float]) -> float | None:
    """The median, None without values."""
    return statistics.median(values) if values else None


def goals(run: Run) -> dict[str, list[Goal]]:
    """Every goal, by name, for every E2E configuration (or store) measured."""
    e2e = [c for c in run.configs if c.kind == "e2e"]
    found: dict[str, list[Goal]] = {
        "E2E throughput ≥ 0.9 x B1's (closed loop, median of the rounds' ratios)": [
            Goal(
                "throughput",
                c.label,
                median(run.ratios(c.id, "closed", "rate", "b1")),
                GOAL_THROUGHPUT_RATIO,
                at_least=True,
            )
            for c in e2e
        ],
        "E2E throughput ≥ 0.6 x B1-async's (closed loop, median of the rounds' ratios)": [
            Goal(
                "throughput_async",
                c.label,
                median(run.ratios(c.id, "closed", "rate", "b1async")),
                GOAL_ASYNC_THROUGHPUT_RATIO,
                at_least=True,
            )
            for c in e2e
        ],
        "paced p99 ≤ 15 ms (median of the rounds)": [
            Goal(
                "paced_p99",
                c.label,
                median(run.values(c.id, "paced", "p99")),
                GOAL_PACED_P99_MS,
                at_least=False,
                unit=" ms",
            )
            for c in e2e
        ],
        "server CPU per request ≤ 1.15 x B1's (closed loop, median of the rounds' ratios)": [
            Goal(
                "cpu",
                c.label,
                median(run.ratios(c.id, "closed", "cpu_us", "b1")),
                GOAL_CPU_RATIO,
                at_least=False,
            )
            for c in e2e
        ],
        "adapter worker peak RSS ≤ 80 MB (largest worker, largest of the rounds)": [
            Goal(
                "worker_rss",
                c.label,
                max(run.rss(c.id, "http_worker"), default=None),
                GOAL_WORKER_RSS_MB,
                at_least=False,
                unit=" MB",
            )
            for c in e2e
        ],
    }
    million_goals = [
        Goal(
            "service_rss",
            f"service on {m.store}"
            + ("" if m.groups >= MILLION else f" (only {m.groups:,} groups filled)"),
            m.hwm_mb if m.groups >= MILLION else None,
            GOAL_SERVICE_RSS_MB,
            at_least=False,
            unit=" MB",
        )
        for m in run.million.values()
    ]
    if not million_goals:
        million_goals = [
            Goal(
                "service_rss",
                "--million was off",
                None,
                GOAL_SERVICE_RSS_MB,
                at_least=False,
            )
        ]
    found["service peak RSS ≤ 150 MB with 1,000,000 tracked groups"] = million_goals
    return found


def goal_lines(run: Run) -> list[str]:
    """A bullet per goal, every subject with its value and verdict."""
    lines = []
    for name, measured in goals(run).items():
        if measured:
            lines.append(f"- {name}: " + "; ".join(goal.text() for goal in measured) + ".")
    return lines


def problem_lines(run: Run) -> list[str]:
    """The runs flagged for errors, and the configurations that failed."""
    lines = []
    for number_, results in enumerate(run.rounds, start=1):
        for c in run.configs:
            for problem in results[c.id].problems if c.id in results else []:
                lines.append(f"- **flagged** round {number_}, {c.label}, {problem}")
    lines += [f"- **failed** {failure}" for failure in run.failures]
    return lines


def report(run: Run) -> str:
    """The Markdown report: command, machine, what was measured, tables, goals, problems."""
    versions = (f"{name} {version}" for name, version in run.versions.items())
    lines = heading(["scripts/bench", *run.argv], versions)
    if run.configs:
        lines += load_section(run)
    if run.million:
        lines += million_section(run)
    lines += ["Goals:", "", *goal_lines(run), ""]
    problems = problem_lines(run)
    if problems:
        lines += ["Problems:", "", *problems, ""]
    lines.append(
        f"Whole run: {run.total_s:.0f} s ({run.total_s / 60:.1f} min). 1-minute load average"
        f" before it: {run.load_average:.1f} (other work on the machine skews the results)."
    )
    return "\n".join(lines)


def load_section(run: Run) -> list[str]:
    """What the load runs measured, and their tables."""
    args = run.args
    return [
        f"{args.rounds} round{'s' if args.rounds > 1 else ''}; in each, every configuration"
        " is started fresh on free ports,"
        f" warmed up for {args.warmup} s, then loaded for {args.duration} s in a closed loop"
        f" (`wrk -t{WRK_THREADS} -c{CONNECTIONS} --latency`: each connection sends its next"
        f" request when the answer arrives) and {args.duration} s paced (the same connections,"
        f" sends spread to {args.rate:g} req/s by wrk's delay() hook). **wrk runs on the same"
        f" {os.cpu_count()} cores as the servers** (its own CPU is a column). Each cell is the"
        " median of the rounds (min..max); ratios are taken within a round. Server CPU:"
        " utime + stime of every server process (gunicorn master and workers, the gRPC"
        " server) across the run, over the requests completed; HTTP side = gunicorn,"
        " gRPC side = the policy service or echo server. Errors: socket errors, timeouts"
        " (2 s, Chat's), answers other than HTTP 200 with ErrorCode 0, adapter outcomes"
        " other than allowed/recorded (fail-open, spooled, ...), summed over the rounds.",
        "",
        "- B0: bare Falcon under gunicorn's gthread workers (the adapter's workers, 4 threads"
        " each, as the adapter ran before issue 18), body parsed, constant answer.",
        "- B1: B0 plus one unary grpcio call per request to a do-nothing grpcio server"
        " (108 pool threads, as the threaded service had; its options), channel per worker"
        " after fork.",
        "- B1-async: B1 on asyncio: the same resource as a falcon.asgi.App under gunicorn's"
        " uvicorn worker (uvloop, httptools; the same workers and SO_REUSEPORT), one grpc.aio"
        " call per request on a channel opened in each worker's loop, to a do-nothing grpc.aio"
        " server.",
        "- E2E: `chat-policy service` + `chat-policy adapter`, shipped defaults except ports"
        " and data dir; auth on; SQLite (default file) or PostgreSQL (a new schema)."
        " BeforeCreateGroup: examples/policy.toml, a new operator per request, every one"
        " allowed (its rate limit writes a slot to the store); AfterGroupFull: the default"
        " policy, a new group per request (a durable write). B0, B1 and B1-async get the"
        " BeforeCreateGroup requests.",
        "",
        f"Closed loop, {CONNECTIONS} connections:",
        "",
        *closed_table(run),
        "",
        "Where the CPU went in the closed loop, per request completed (server CPU = gunicorn"
        " + gRPC server). gRPC server busy: its CPU over the run's wall time; it is one"
        " Python process, so near 100% of one core it bounds the closed loop whatever the"
        " other core does. PostgreSQL server: every process named postgres on the machine"
        " (not in server CPU). Other work: the machine's busy time that none of these"
        " processes nor wrk used, e.g. other jobs (near 0 on a quiet machine):",
        "",
        *cpu_table(run),
        "",
        f"Paced, about {args.rate:g} req/s over {CONNECTIONS} connections (latency from each"
        " request's send):",
        "",
        *paced_table(run),
        "",
        "Peak RSS (VmHWM) over the configuration's life (warm-up and both runs):",
        "",
        *rss_table(run),
        "",
    ]


def million_section(run: Run) -> list[str]:
    """What --million measured, and its table."""
    return [
        "",
        f"The policy service on a store filled with tracked groups (bench_state's fill,"
        f" 10 SdkAppids, 20% full), examples/policy.toml: {MILLION_GETS:,} GetGroupState,"
        f" every page of ListFullGroups ({MILLION_PAGE_SIZE:,} per page),"
        f" CountGroupStates, a /metrics scrape, {MILLION_CHECKS:,} CheckGroupCreation and"
        f" {MILLION_RECORDS:,} RecordGroupFull:",
        "",
        *million_table(run),
        "",
    ]


def json_report(run: Run) -> dict[str, Any]:
    """The numbers of the report, for --json."""
    configs: dict[str, Any] = {}
    for c in run.configs:
        modes = {}
        for mode in MODES:
            keys = sorted({k for r in run.rounds if c.id in r for k in r[c.id].modes.get(mode, {})})
            rounds = {key: run.values(c.id, mode, key) for key in keys}
            ratios = {
                f"{key}_{baseline}": run.ratios(c.id, mode, key, baseline)
                for key in ("rate", "cpu_us")
                for baseline in BASELINES
            }
            modes[mode] = {
                "rounds": rounds,
                "median": {key: statistics.median(v) for key, v in rounds.items() if v},
                "ratios": ratios,
                "ratio_medians": {key: statistics.median(v) for key, v in ratios.items() if v},
            }
        rss_keys = ("http_master", "http_worker", "grpc")
        configs[c.id] = {
            "label": c.label,
            "kind": c.kind,
            "webhook": c.webhook,
            "store": c.store,
            **modes,
            "rss_mb": {key: run.rss(c.id, key) for key in rss_keys},
            "problems": [p for r in run.rounds if c.id in r for p in r[c.id].problems],
        }
    return {
        "command": ["scripts/bench", *run.argv],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), **run.versions},
        "settings": {
            **{k: v for k, v in vars(run.args).items() if k not in ("json", "configs")},
            "connections": CONNECTIONS,
            "wrk_threads": WRK_THREADS,
        },
        "configurations": configs,
        "million": {store: vars(m) for store, m in run.million.items()},
        "goals": {
            name: [
                {"subject": g.subject, "value": g.value, "limit": g.limit, "met": g.met}
                for g in measured
            ]
            for name, measured in goals(run).items()
        },
        "failures": run.failures,
        "total_s": run.total_s,
        "load_average": run.load_average,
    }


def versions(configs: Iterable[Configuration], million_stores: Iterable[str]) -> dict[str, str]:
    """The versions of what is measured: libraries, wrk, SQLite, PostgreSQL when used."""
    found = {name: importlib.metadata.version(name) for name in ("grpcio", "falcon", "gunicorn")}
    executable = wrk_path()
    if executable:
        first = subprocess.run(
            [executable, "-v"], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        found["wrk"] = first[0].split()[1] if first and len(first[0].split()) > 1 else "?"
    stores = {c.store for c in configs} | set(million_stores)
    if "sqlite" in stores:
        found["SQLite"] = sqlite3.sqlite_version
    if "postgresql" in stores:
        url = os.environ.get("CHAT_POLICY_TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
        with contextlib.suppress(psycopg.Error), psycopg.connect(url, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            found["PostgreSQL"] = str(row[0]).split()[0] if row else "?"
    return found


# --- command line ------------------------------------------------------------------------


def non_negative_int(text: str) -> int:
    """An argparse type: an integer, zero or more."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of scripts/bench."""
    everything = configurations()
    words = sorted({w for c in everything for w in c.words} | {"million"})
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark the adapter and the policy service end to end through HTTP"
        " (wrk, on the same cores) against baselines measured in the same run: B0, bare"
        " Falcon under gunicorn; B1, the same plus one gRPC echo call per request; B1-async,"
        " B1 on ASGI with grpc.aio; print Markdown tables and the goals of issues 7 and 18."
        " (scripts/bench --faults and scripts/bench --abuse run other benchmarks: --help after"
        " them.) PostgreSQL: CHAT_POLICY_TEST_DATABASE_URL"
        f" (default {DEFAULT_TEST_DATABASE_URL}), in a schema made and dropped per"
        " configuration. Needs wrk: " + INSTALL_HINT + ".",
    )
    parser.add_argument("--rounds", type=positive(int), default=None, help="rounds (default 3)")
    parser.add_argument(
        "--duration",
        type=positive(int),
        default=None,
        help="seconds of each closed-loop and each paced run (default 10; wrk takes whole seconds)",
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        default=None,
        help="seconds of unmeasured closed loop before the runs (default 2)",
    )
    parser.add_argument(
        "--rate", type=positive(float), default=PACED_RATE, help="req/s of the paced runs"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CI's check that it runs: 1 round of 2 s runs, 1 s warm-up (unless given)",
    )
    parser.add_argument(
        "--only",
        default="",
        metavar="LIST",
        help="comma list of configurations to run, by id or word: "
        + ", ".join(words)
        + " (e.g. b1,b1async,sqlite-after; 'million' alone runs only the --million measurement;"
        " 'floor' runs the B1 variants that might move the floor, left out otherwise: over"
        " a Unix socket, a grpc.aio echo server, 2 or 8 threads per worker, 3 workers)",
    )
    parser.add_argument(
        "--million",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure the policy service's peak RSS on SQLite and PostgreSQL stores filled"
        " with --groups groups (about a minute; default: on, except with --smoke or an --only"
        " that does not name it)",
    )
    parser.add_argument(
        "--groups", type=positive(int), default=MILLION, help="groups of the --million fill"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.smoke else 3)
    args.duration = args.duration or (2 if args.smoke else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 2)
    tokens = {t.strip() for t in args.only.split(",") if t.strip()}
    unknown = tokens - set(words)
    if unknown:
        choices = ", ".join(words)
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from {choices}")
    selected = [c for c in everything if tokens & c.words or not (tokens or c.variant)]
    if tokens == {"million"}:
        selected = []
    if args.million is None:
        args.million = "million" in tokens if tokens else not args.smoke
    args.configs = selected
    stores = ("sqlite", "postgresql")
    named_stores = [s for s in stores if s in tokens]
    args.million_stores = (named_stores or list(stores)) if args.million else []
    return args


def main(argv: list[str]) -> int:
    """Run the rounds (and --million), print the report; exit 1 if anything failed, 2 on
    bad usage, 3 without wrk."""
    args = parse_args(argv)
    if args.configs and wrk_path() is None:
        print(f"scripts/bench: wrk is not installed; {INSTALL_HINT}", file=sys.stderr)
        return 3
    began, load_average = time.monotonic(), os.getloadavg()[0]
    run = Run(argv, args, args.configs, load_average=load_average)
    run.versions = versions(args.configs, args.million_stores)
    with tempfile.TemporaryDirectory(prefix="bench-http-") as directory:
        workdir = Path(directory)
        if args.configs:
            run_rounds(run, workdir)
        if args.million:
            run_million(run, workdir)
    run.total_s = time.monotonic() - began
    print(report(run))
    if args.json is not None:
        args.json.write_text(json.dumps(json_report(run), indent=2, default=str) + "\n")
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
