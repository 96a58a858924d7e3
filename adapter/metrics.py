"""The adapter's Prometheus metrics, the middleware that counts webhooks, and GET /metrics.

The adapter runs as several gunicorn workers. `chat-policy adapter` (adapter/gunicorn_app.py)
gives them one private PROMETHEUS_MULTIPROC_DIR before any of them imports prometheus_client:
each worker then writes its counters to files there, and /metrics, whichever worker answers it,
adds up the files of every worker, dead ones included (a respawned worker loses nothing).
Without that variable (the tests' in-process app) this process's own metrics are served.
prometheus_client's process metrics do not work across processes: the scrape reads them from
/proc for the master and every live worker instead, a series per process
(adapter/process_metrics.py).

The spool's depth and its set-aside events are no per-worker gauges: the spool is one SQLite
file shared by the workers, so the worker answering the scrape reads it right then. (A gauge
set by each worker would show each worker's latest look at the file: `max`/`livemax` would
keep reporting a depth the leader has long drained.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import Executor

import falcon.asgi
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from adapter.answers import Answer, Failure, WebhookError
from adapter.process_metrics import AdapterProcesses
from adapter.settings import METRICS_PATH
from adapter.spool import Spool, SpoolUnavailable
from chat_policy_shared.build_info import BuildInfo

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger(__name__)

# Chat gives up after 2 s: milliseconds up to just past that.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    1.5,
    2.0,
    2.5,
)

WEBHOOKS = Counter(
    "chat_policy_adapter_webhook_requests_total",
    "Requests answered, by CallbackCommand (commands the adapter does not act on: 'other',"
    " none given: 'none') and outcome (allowed, refused, fail-open, recorded, spooled,"
    " ignored, ... or the failure, e.g. unauthenticated).",
    ["command", "outcome"],
)
LATENCY = Histogram(
    "chat_policy_adapter_webhook_duration_seconds",
    "Time from receiving a request to its answer, by CallbackCommand as in"
    " chat_policy_adapter_webhook_requests_total.",
    ["command"],
    buckets=LATENCY_BUCKETS,
)
AUTH_REFUSALS = Counter(
    "chat_policy_adapter_auth_refusals_total",
    "Webhooks refused before reading them, by reason: source_not_allowed, unknown_sdkappid,"
    " signature_missing, request_time_malformed, request_time_stale, signature_mismatch.",
    ["reason"],
)
CREATION_FALLBACKS = Counter(
    "chat_policy_adapter_creation_fallbacks_total",
    "Group creations the policy service could not decide, answered by"
    " CHAT_POLICY_ON_POLICY_ERROR: by outcome (fail-open, fail-closed) and cause"
    " (policy_unavailable, policy_failed, policy_rejected).",
    ["outcome", "cause"],
)
SPOOLED = Counter(
    "chat_policy_adapter_spooled_events_total",
    "After-events written to the spool because the policy service could not take them, by method.",
    ["method"],
)
REPLAYED = Counter(
    "chat_policy_adapter_replayed_events_total",
    "Spooled events delivered to the policy service, by method.",
    ["method"],
)
SET_ASIDE = Counter(
    "chat_policy_adapter_set_aside_events_total",
    "Spooled events the policy service refused for good, set aside for an operator, by method"
    " (chat_policy_adapter_spool_set_aside: how many are set aside now).",
    ["method"],
)

HTTP_LIMITS = Counter(
    "chat_policy_adapter_http_limit_refusals_total",
    "Requests refused by the adapter's HTTP limits before reaching the app, by limit:"
    " read_deadline (a request not received within CHAT_POLICY_HTTP_READ_TIMEOUT_S, 408),"
    " max_connections (a request on a connection beyond CHAT_POLICY_HTTP_MAX_CONNECTIONS, 503),"
    " header_size (a request line and headers past 32 KB, 431).",
    ["limit"],
)

# The reason label of each failure that refuses who sent a webhook; a signature failure has a
# finer one of its own (SignatureError.reason, carried by the WebhookError).
_AUTH_FAILURES = {
    Failure.SOURCE_NOT_ALLOWED: "source_not_allowed",
    Failure.UNKNOWN_SDKAPPID: "unknown_sdkappid",
    Failure.UNAUTHENTICATED: "unauthenticated",
}


def add_metrics(
    app: falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response],
    commands: Iterable[str],
    spool: Spool,
    blocking: Executor,
) -> None:
    """Count and time the webhooks of `app` (`commands`: those it acts on) and serve GET
    /metrics (AdapterSettings keeps the webhook off it), with the gauges of `spool`, read in
    `blocking` (off the event loop)."""
    app.add_middleware(RequestMetrics(commands))
    app.add_route(METRICS_PATH, MetricsResource(spool, blocking))


def refusal_reason(error: WebhookError) -> str | None:
    """The auth_refusals reason of a failed webhook; None if it was not refused for who sent it."""
    if error.failure not in _AUTH_FAILURES:
        return None
    return error.reason or _AUTH_FAILURES[error.failure]


def count_failure(error: WebhookError) -> None:
    """Count a failed webhook that was refused for who sent it (nothing for other failures)."""
    reason = refusal_reason(error)
    if reason is not None:
        AUTH_REFUSALS.labels(reason).inc()


def count_fallback(outcome: str, cause: WebhookError) -> None:
    """Count a group creation answered `outcome` (fail-open/fail-closed) because of `cause`."""
    CREATION_FALLBACKS.labels(outcome, cause.failure.name.lower()).inc()


class RequestMetrics:
    """Falcon middleware: counts and times every request answered in Chat's JSON shape (the
    webhooks, and requests to no route), not the scrapes of /metrics nor health probes."""

    def __init__(self, commands: Iterable[str]) -> None:
        self._commands = frozenset(commands)
        # (command label, outcome) -> its counter and histogram children: labels() takes a
        # lock and builds its key on every call. Both labels take a few dozen values at most.
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Start the clock."""
        req.context.metrics_started = time.perf_counter()

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        """Count the answered request under bounded labels and observe its latency."""
        started: float | None = req.context.get("metrics_started")
        answer: Answer | None = resp.context.get("answer")
        if started is None or answer is None:  # not answered in Chat's shape: a probe, a scrape
            return
        command = self.command_label(
            req.context.get("command") or req.get_param("CallbackCommand") or ""
        )
        key = (command, answer.outcome)
        children = self._children.get(key)
        if children is None:
            children = (WEBHOOKS.labels(*key), LATENCY.labels(command))
            self._children[key] = children
        requests, latency = children
        requests.inc()
        latency.observe(time.perf_counter() - started)

    def command_label(self, command: str) -> str:
        """The command as a label: itself if handled, else 'other' ('none' if there is none)."""
        if command in self._commands:
            return command
        return "other" if command else "none"


class SpoolGauges:
    """Collector of chat_policy_adapter_spool_depth and _spool_set_aside, read from the spool
    at scrape time."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool

    def collect(self) -> Iterable[Metric]:
        """Both counts now; nothing (and a warning) if the spool cannot be read."""
        try:
            depth = self._spool.depth()
            set_aside = self._spool.set_aside_count()
        except SpoolUnavailable as error:
            log.warning("metrics scrape without the spool's gauges: %s", error)
            return
        yield GaugeMetricFamily(
            "chat_policy_adapter_spool_depth",
            "After-events waiting in the spool for the policy service (all workers share it).",
            value=depth,
        )
        yield GaugeMetricFamily(
            "chat_policy_adapter_spool_set_aside",
            "Spooled events the policy service refused for good, kept set aside until an"
            " operator replays or drops them (chat-policy spool).",
            value=set_aside,
        )


class MetricsResource:
    """GET /metrics: Prometheus' text format, every worker's metrics added up, and the process
    metrics of the master and each worker; read (the workers' files, the spool, /proc) in
    `blocking`, off the event loop."""

    def __init__(self, spool: Spool, blocking: Executor) -> None:
        self._blocking = blocking
        registry = CollectorRegistry()
        registry.register(SpoolGauges(spool))
        registry.register(BuildInfo("adapter"))
        if os.environ.get(MULTIPROC_DIR_ENV):
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(AdapterProcesses(master=os.getppid()))  # a worker's parent
        else:
            registry.register(REGISTRY)
        self._registry = registry

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Answer a scrape."""
        resp.content_type = CONTENT_TYPE_PLAIN_0_0_4
        resp.data = await asyncio.get_running_loop().run_in_executor(
            self._blocking, generate_latest, self._registry
        )
