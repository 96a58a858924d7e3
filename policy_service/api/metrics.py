"""The policy service's Prometheus metrics, and the registry its /metrics endpoint serves.

Counters and histograms live in prometheus_client's default registry, updated where things
happen (the RPC interceptor, the creation servicer). Group counts and the policy's reload
status are read when Prometheus scrapes, by a collector of each PolicyService: what the store
and the policy holder say right then, never a copy that could go stale.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import prometheus_client
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from chat_policy_shared.build_info import BuildInfo
from chat_policy_shared.listen_address import parse_bind
from policy_service.access.access_reload import AccessHolder
from policy_service.engine.policy import Decision
from policy_service.engine.policy_reload import PolicyHolder
from policy_service.groups.store import GroupStateStore

log = logging.getLogger(__name__)

# One `_created` series per labelled counter would double what Prometheus stores, for a
# timestamp that process_start_time_seconds already gives.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

# From a decision served from memory (tens of µs) to a slow store write (seconds).
RPC_LATENCY_BUCKETS = (
    0.000025,
    0.00005,
    0.0001,
    0.00025,
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
    2.5,
    5.0,
)

RPCS = Counter(
    "chat_policy_service_rpcs_total",
    "RPCs served, by full method name and gRPC status code (method 'unknown': an RPC to a"
    " method the server does not have, answered UNIMPLEMENTED).",
    ["method", "code"],
)
RPC_LATENCY = Histogram(
    "chat_policy_service_rpc_duration_seconds",
    "Time from the start of an RPC's handler to its answer (a stream: to its end), by full"
    " method name.",
    ["method"],
    buckets=RPC_LATENCY_BUCKETS,
)
DECISIONS = Counter(
    "chat_policy_service_decisions_total",
    "Group-creation decisions, by the rule that decided ('default' when none did) and effect.",
    ["rule", "effect"],
)
SHADOW_HITS = Counter(
    "chat_policy_service_shadow_hits_total",
    "Decisions a shadow rule would have made, by rule.",
    ["rule"],
)
RULE_ERRORS = Counter(
    "chat_policy_service_rule_errors_total",
    "Rules skipped because they could not be evaluated, by rule.",
    ["rule"],
)
STORE_ERRORS = Counter(
    "chat_policy_service_store_errors_total",
    "Store failures (StoreUnavailable) that failed an RPC, by RPC method name, or that left a"
    " scrape without group counts (operation 'count_groups').",
    ["operation"],
)

COUNT_GROUPS_OPERATION = "count_groups"


def count_decision(decision: Decision) -> None:
    """Count one group-creation decision, its shadow hits and its rule errors."""
    DECISIONS.labels(decision.rule_id, decision.outcome.effect.value).inc()
    for hit in decision.shadow_hits:
        SHADOW_HITS.labels(hit.rule_id).inc()
    for error in decision.errors:
        RULE_ERRORS.labels(error.rule_id).inc()


# The longest a scrape waits for the store's group counts.
SCRAPE_STORE_TIMEOUT_S = 5.0


class ServiceCollector:
    """Reads the group counts from the store and the policy's status at scrape time.

    A store that fails leaves the group gauges out of that scrape and counts a store error:
    the scrape itself still succeeds, with every other metric.
    """

    def __init__(
        self,
        store: GroupStateStore,
        policy: PolicyHolder,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """`loop` is the event loop the store belongs to (the service's): the scrape runs in
        prometheus_client's thread and asks the store on that loop. None: a loop of the
        scrape's own (for a store bound to none)."""
        self._store = store
        self._policy = policy
        self._loop = loop

    def collect(self) -> Iterable[Metric]:
        """The gauges of this scrape."""
        yield from self._group_counts()
        holder = self._policy
        info = GaugeMetricFamily(
            "chat_policy_service_policy_info",
            "The running group-creation policy: always 1, its revision as a label.",
            labels=["revision", "source"],
        )
        info.add_metric([holder.policy.revision, holder.source], 1)
        yield info
        yield GaugeMetricFamily(
            "chat_policy_service_policy_loaded_timestamp_seconds",
            "When the running policy was loaded (Unix time).",
            value=holder.loaded_at_ms / 1000,
        )
        yield GaugeMetricFamily(
            "chat_policy_service_policy_last_reload_success",
            "1 if the latest reload of the policy file succeeded (or none was tried), 0 if it"
            " was refused and the previous policy still runs.",
            value=0 if holder.status.error else 1,
        )

    def _group_counts(self) -> Iterable[Metric]:
        try:
            if self._loop is None:
                counts = asyncio.run(self._store.count(0))
            else:
                counts = asyncio.run_coroutine_threadsafe(self._store.count(0), self._loop).result(
                    SCRAPE_STORE_TIMEOUT_S
                )
        except Exception as error:
            STORE_ERRORS.labels(COUNT_GROUPS_OPERATION).inc()
            log.warning("metrics scrape without group counts: %s", error)
            return
        yield GaugeMetricFamily(
            "chat_policy_service_groups_tracked",
            "Groups (and topics) with a recorded state, of every SdkAppid.",
            value=counts.tracked,
        )
        yield GaugeMetricFamily(
            "chat_policy_service_groups_full",
            "Groups (and topics) full right now, of every SdkAppid.",
            value=counts.full,
        )
        yield GaugeMetricFamily(
            "chat_policy_service_groups_destroyed",
            "Destroyed groups still remembered (until CHAT_POLICY_DESTROYED_RETENTION_S).",
            value=counts.destroyed,
        )


class AccessCollector:
    """Reads the access file's revision and refused reloads at scrape time."""

    def __init__(self, access: AccessHolder) -> None:
        self._access = access

    def collect(self) -> Iterable[Metric]:
        """The access file's metrics of this scrape."""
        info = GaugeMetricFamily(
            "chat_policy_service_access_info",
            "The access file in force: always 1, its revision and path as labels.",
            labels=["revision", "source"],
        )
        info.add_metric([self._access.rules.revision, str(self._access.path)], 1)
        yield info
        yield GaugeMetricFamily(
            "chat_policy_service_access_last_reload_success",
            "1 if the latest reload of the access file succeeded (or none was tried), 0 if it"
            " was refused and the previous rules still apply.",
            value=0 if self._access.last_reload_error else 1,
        )


def service_registry(
    store: GroupStateStore,
    policy: PolicyHolder,
    loop: asyncio.AbstractEventLoop | None = None,
    access: AccessHolder | None = None,
) -> CollectorRegistry:
    """What one service's /metrics serves: its scrape-time gauges (the access file's too,
    when there is one), its build info, then every process metric: the counters, histograms
    and prometheus_client's default process_* and python_* (`loop`: the store's, see
    ServiceCollector).

    The gauges come first, so that a store error they count shows in the same scrape.
    """
    registry = CollectorRegistry()
    registry.register(ServiceCollector(store, policy, loop))
    if access is not None:
        registry.register(AccessCollector(access))
    registry.register(BuildInfo("service"))
    registry.register(REGISTRY)
    return registry


class MetricsEndpoint:
    """prometheus_client's HTTP server for a registry, listening on `bind` (port 0: any free
    one, then in .port); OSError if it cannot listen, ValueError if `bind` is no address."""

    def __init__(self, bind: str, registry: CollectorRegistry) -> None:
        host, port = parse_bind(bind)
        self._server, self._thread = prometheus_client.start_http_server(port, host, registry)
        self.port: int = self._server.server_port

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
