"""The adapter's ASGI app in process against B1's, per webhook: `scripts/bench-app` (--help).

What the HTTP side of scripts/bench costs beyond the floor, without a server, sockets or a
policy service in the way: each app is called directly on one thread, its gRPC answer given
at once, and timed in CPU (time.process_time_ns) and wall time. The adapter's ASGI app is
awaited (`await app(scope, receive, send)`) one request after another on a uvloop event loop,
as in a worker; B1's WSGI app is called (`app(environ, start_response)`).

- B1 app: bench/baseline_apps' ParseCallAndAnswer (read, parse, one call, answer), its call
  an echo that returns at once;
- the adapter: adapter.app.create_app as a worker builds it, authentication on, the request
  log line formatted as the service's logs.configure() formats it (written to /dev/null) and
  metrics in prometheus-client's multi-process mode as under gunicorn; its PolicyClient
  (the named seam of adapter.policy_client) answers at once: allow, or applied;
- the adapter once more without its canonical request line, to show what that line costs.

Requests are signed as Chat signs them, with wrk's bodies (bench/wrk.py), built before the
timing. Each round calls every app --calls times, the apps taking turns; each cell is the
median of the rounds with min..max, ratios are taken within a round. Every answer is checked:
200 with ErrorCode 0, or the run fails. The Markdown report goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import falcon
import falcon.testing
import uvloop

from adapter.policy_client import RecordRequest
from adapter.settings import AdapterSettings
from bench.report import cell, markdown_table, progress
from bench.wrk import Webhook, body, compute_sign, query_string
from chat_policy_shared import logs
from chatpolicy.v1 import creation_policy_service_pb2 as cpb

SDK_APP_ID = 1400000000
TOKEN = "bench-app-token"
WEBHOOK_PATH = "/webhook"
REQUEST_LOGGER = "adapter.request"  # adapter/request_log.py's canonical line

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
AsgiApp = Callable[[dict[str, Any], Callable[..., Any], Callable[..., Any]], Awaitable[None]]
# Send an app `count` webhooks built beforehand (webhook, tag, count); CPU and wall µs per call.
Measure = Callable[[Webhook, str, int], tuple[float, float]]


class InstantClient:
    """A PolicyClient that answers at once: every creation allowed (by the default rule, as
    the service answers it), every event applied."""

    async def check_group_creation(
        self,
        request: cpb.CheckGroupCreationRequest,
        request_id: str,
        webhook: str | None = None,
    ) -> cpb.CheckGroupCreationResponse:
        """Allow."""
        return cpb.CheckGroupCreationResponse(
            decision=cpb.DECISION_ALLOW,
            rule_id="default",
            policy_revision="sha256:8c1d0e6b2f4a9d37",
            decision_id="18a2b3c4d5e6f7081f2e3d4c5b6a7980",
        )

    async def record(
        self, request: RecordRequest, request_id: str, webhook: str | None = None
    ) -> bool:
        """Applied."""
        return True

    async def check_health(self, timeout_s: float) -> str:
        """Serving."""
        return "SERVING"


@dataclass(frozen=True)
class Subject:
    """One row of the report: an app, as measure calls it, and the webhook it is sent."""

    name: str
    measure: Measure
    webhook: Webhook
    request_line: bool = True  # False: the adapter's canonical request line is not written


def adapter_app(spool_dir: Path) -> AsgiApp:
    """The adapter's app as a worker builds it, with authentication on and InstantClient."""
    from adapter.app import create_app  # imports prometheus_client: see main
    from adapter.spool import Spool

    settings = AdapterSettings.from_env(
        {
            "CHAT_POLICY_SDKAPPIDS": str(SDK_APP_ID),
            "CHAT_POLICY_CALLBACK_TOKENS": TOKEN,
            "CHAT_POLICY_WEBHOOK_PATH": WEBHOOK_PATH,
            "CHAT_POLICY_DATA_DIR": str(spool_dir),
        }
    )
    spool = Spool(settings.spool_path, settings.spool_max_events)
    return create_app(settings, InstantClient(), spool, lambda: None)


def b1_app() -> WsgiApp:
    """B1's app on the same path, its echo call returning at once."""
    from bench.baseline_apps import ParseCallAndAnswer  # imports prometheus_client: see main

    def echo(raw: bytes, timeout: float) -> bytes:
        return raw

    app = falcon.App()
    app.add_route(WEBHOOK_PATH, ParseCallAndAnswer(echo, 2.0))
    return app


def signed_posts(webhook: Webhook, tag: str, count: int) -> list[tuple[str, bytes]]:
    """count signed POSTs of `webhook`, query string and body, each its own body."""
    now_s = int(time.time())
    query = f"{query_string(SDK_APP_ID, webhook)}&RequestTime={now_s}"
    query += f"&Sign={compute_sign(TOKEN, now_s)}"
    return [(query, body(webhook, tag, 0, n, now_s).encode()) for n in range(count)]


def environs(webhook: Webhook, tag: str, count: int) -> list[dict[str, Any]]:
    """count signed POSTs of `webhook` as a WSGI server hands them to the app."""
    return [
        falcon.testing.create_environ(
            path=WEBHOOK_PATH,
            query_string=query,
            method="POST",
            body=content,
            headers={"Content-Type": "application/json"},
            host="127.0.0.1",
            port=8080,
            remote_addr="127.0.0.1",
        )
        for query, content in signed_posts(webhook, tag, count)
    ]


def asgi_requests(webhook: Webhook, tag: str, count: int) -> list[tuple[dict[str, Any], bytes]]:
    """count signed POSTs of `webhook` as uvicorn hands them to an ASGI app: scope and body."""
    return [
        (
            falcon.testing.create_scope(
                path=WEBHOOK_PATH,
                query_string=query,
                method="POST",
                headers={"Content-Type": "application/json"},
                host="127.0.0.1",
                port=8080,
                remote_addr="127.0.0.1",
                content_length=len(content),
            ),
            content,
        )
        for query, content in signed_posts(webhook, tag, count)
    ]


def call_wsgi(app: WsgiApp, requests: list[dict[str, Any]]) -> tuple[float, float]:
    """Call app once per request; CPU and wall µs per call. Raises unless every answer is 200
    with ErrorCode 0."""
    statuses: list[int] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        statuses.append(int(status.split()[0]))

    answers = []
    cpu, wall = time.process_time_ns(), time.perf_counter_ns()
    for environ in requests:
        answers.append(b"".join(app(environ, start_response)))
    cpu, wall = time.process_time_ns() - cpu, time.perf_counter_ns() - wall
    check_answers(statuses, answers)
    return cpu / 1e3 / len(requests), wall / 1e3 / len(requests)


def call_asgi(
    app: AsgiApp, requests: list[tuple[dict[str, Any], bytes]], loop: asyncio.AbstractEventLoop
) -> tuple[float, float]:
    """Await app once per request, one after another on `loop`; CPU and wall µs per call.
    Raises unless every answer is 200 with ErrorCode 0."""
    statuses: list[int] = []
    answers: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        else:
            answers.append(message.get("body", b""))

    async def call_each() -> None:
        for scope, content in requests:

            async def receive(content: bytes = content) -> dict[str, Any]:
                return {"type": "http.request", "body": content, "more_body": False}

            await app(scope, receive, send)

    cpu, wall = time.process_time_ns(), time.perf_counter_ns()
    loop.run_until_complete(call_each())
    cpu, wall = time.process_time_ns() - cpu, time.perf_counter_ns() - wall
    check_answers(statuses, answers)
    return cpu / 1e3 / len(requests), wall / 1e3 / len(requests)


def check_answers(statuses: list[int], answers: list[bytes]) -> None:
    """Raise unless every answer is 200 with ErrorCode 0."""
    for status, answer in zip(statuses, answers, strict=True):
        if status != 200 or json.loads(answer).get("ErrorCode") != 0:
            raise RuntimeError(f"answered {status} {answer[:200]!r}")


def wsgi_measure(app: WsgiApp) -> Measure:
    """How a WSGI app is measured: call_wsgi."""
    return lambda webhook, tag, count: call_wsgi(app, environs(webhook, tag, count))


def asgi_measure(app: AsgiApp, loop: asyncio.AbstractEventLoop) -> Measure:
    """How an ASGI app is measured: call_asgi on `loop`."""
    return lambda webhook, tag, count: call_asgi(app, asgi_requests(webhook, tag, count), loop)


def run(subjects: list[Subject], rounds: int, calls: int) -> dict[str, list[tuple[float, float]]]:
    """Every subject's (CPU, wall) µs per call in each round, the subjects taking turns."""
    results: dict[str, list[tuple[float, float]]] = {s.name: [] for s in subjects}
    for subject in subjects:  # warm up: imports, caches, the first metric children
        subject.measure(subject.webhook, f"w{subject.webhook}", 200)
    for number in range(rounds):
        order = subjects[number % len(subjects) :] + subjects[: number % len(subjects)]
        for subject in order:
            logging.getLogger(REQUEST_LOGGER).disabled = not subject.request_line
            results[subject.name].append(subject.measure(subject.webhook, f"r{number}", calls))
        progress("bench-app", f"round {number + 1} of {rounds} done")
    return results


def tenths(values: list[float]) -> str:
    """Median (min..max), to a tenth: the rounds' spread is shown even when there is none."""
    return cell(values, lambda value: f"{value:,.1f}", always_range=True)


def report(results: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> str:
    """The Markdown table: CPU and wall µs per webhook, and CPU ÷ the B1 app's."""
    baseline = results["B1 app"]
    rows = []
    for name, times in results.items():
        cpu, wall = [c for c, _ in times], [w for _, w in times]
        ratios = [c / base for c, (base, _) in zip(cpu, baseline, strict=True)]
        rows.append([name, tenths(cpu), tenths(wall), tenths(ratios)])
    columns = ["app, webhook", "CPU, µs/webhook", "wall, µs/webhook", "CPU ÷ B1 app"]
    heading = (
        f"`scripts/bench-app --rounds {args.rounds} --calls {args.calls}`, one thread,"
        f" Python {sys.version.split()[0]}, falcon {falcon.__version__}:"
    )
    return "\n".join([heading, "", *markdown_table(columns, rows)])


def parse_args(argv: list[str]) -> argparse.Namespace:
    """--rounds and --calls."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench-app", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--calls", type=int, default=5000, help="calls per app per round")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be positive")
    return args


def main(argv: list[str]) -> int:
    """Build the apps, run the rounds, print the table."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-app-") as workdir:
        metrics_dir = Path(workdir, "metrics")
        metrics_dir.mkdir()
        # prometheus-client picks multi-process mode when first imported: adapter_app and
        # b1_app import it, after this.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        logs.configure()
        with open(os.devnull, "w") as devnull:
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler):
                    handler.setStream(devnull)
            loop = uvloop.new_event_loop()
            adapter = asgi_measure(adapter_app(Path(workdir)), loop)
            subjects = [
                Subject("B1 app", wsgi_measure(b1_app()), "before"),
                Subject("adapter, BeforeCreateGroup", adapter, "before"),
                Subject("adapter, AfterGroupFull", adapter, "after"),
                Subject("adapter, BeforeCreateGroup, no request line", adapter, "before", False),
            ]
            results = run(subjects, args.rounds, args.calls)
            loop.close()
    print(report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
