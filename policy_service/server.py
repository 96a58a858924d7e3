"""The policy service process: builds the grpc.aio server and runs it on one event loop until
SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from typing import TYPE_CHECKING

import uvloop
from grpc_reflection.v1alpha import reflection

from chat_policy_shared import tracing
from chat_policy_shared.data_directory import directory_problem
from chat_policy_shared.listen_address import listen_problem
from chat_policy_shared.version import version
from chatpolicy.v1 import (
    audit_service_pb2_grpc,
    creation_policy_service_pb2_grpc,
    group_state_service_pb2_grpc,
)
from policy_service.access.access_file import AccessError, load_access
from policy_service.access.access_reload import AccessFileWatcher, AccessHolder
from policy_service.api.audit_servicer import AuditServicer
from policy_service.api.caller_check import CallerCheck
from policy_service.api.creation_policy_servicer import CreationPolicyServicer
from policy_service.api.group_state_servicer import GroupStateServicer
from policy_service.api.health import (
    AUDIT_SERVICE,
    CREATION_POLICY_SERVICE,
    GROUP_STATE_SERVICE,
    HEALTH_SERVICE,
    StoreHealth,
)
from policy_service.api.metrics import MetricsEndpoint, service_registry
from policy_service.api.rpc_interceptor import Budget, InterceptedServer, RpcInterceptor
from policy_service.api.tls import server_credentials
from policy_service.audit.trail import AuditTrail
from policy_service.engine.decision_recorder import DecisionRecorder
from policy_service.engine.policy_file import PolicyError, load_policy
from policy_service.engine.policy_reload import PolicyFileWatcher, PolicyHolder
from policy_service.errors import PolicyServiceError, StoreUnavailable
from policy_service.groups.change_feed import ChangeFeed
from policy_service.settings import ServiceSettings, SettingsError, is_loopback
from policy_service.stores.retention import RetentionPruner
from policy_service.stores.store import Store, open_store, redacted_url, sqlite_path

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)


SERVER_OPTIONS = (
    # grpc sets SO_REUSEPORT by default: a second service on the same port would silently share
    # its traffic. Refuse to start instead.
    ("grpc.so_reuseport", 0),
    # Clients ping idle connections every 20 s (chat_policy_shared/channel.py); allow it rather than
    # answering GOAWAY "too many pings".
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    # Connections are renewed every 5 minutes (streams already open are left to finish), so
    # clients that round-robin over a DNS name re-resolve it and spread onto replicas added
    # since they connected.
    ("grpc.max_connection_age_ms", 300_000),
)


class BindError(RuntimeError):
    """The gRPC server or the metrics endpoint could not listen on the configured address."""

    def __init__(self, variable: str, bind: str, problem: str) -> None:
        super().__init__(f"cannot listen on {variable}={bind!r}: {problem}")


class PolicyService:
    """The gRPC server (grpc.aio) and its background tasks: the change feed, retention,
    health, policy and access reloads and the decision record, all on one event loop.

    Built, started and stopped on the running loop the store was opened on.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        store: Store,
        policy: PolicyHolder,
        *,
        access: AccessHolder | None = None,
        policy_poll_s: float = 1.0,
        serve_metrics: bool = False,
        tracer: Tracer | None = None,
    ) -> None:
        """Build both services and bind settings.grpc_bind (BindError if it is taken).

        With `access` (the access file's rules), every call's caller is checked; without it,
        every caller may call everything. The policy and access files are checked for
        changes every policy_poll_s, and each reload, loaded or refused, is an event of the
        audit trail ("policy.reload", "access.reload"). With serve_metrics,
        Prometheus metrics are served at once on settings.metrics_bind (BindError if taken),
        port in .metrics_port. With `tracer` (tracing on), every unary call but health's is a
        span, and so are its decision and its store write (policy_service.api.rpc_spans).
        """
        self._store = store
        self.policy = policy
        self.trail = AuditTrail(store)
        self.policy_watcher = PolicyFileWatcher(
            policy, policy_poll_s, functools.partial(self.trail.reloaded, "policy.reload")
        )
        self.access = access
        self.access_watcher = (
            None
            if access is None
            else AccessFileWatcher(
                access, policy_poll_s, functools.partial(self.trail.reloaded, "access.reload")
            )
        )
        self.recorder = DecisionRecorder(store)
        self.feed = ChangeFeed(store)
        self.health = StoreHealth(store)
        self.pruner = RetentionPruner(
            store,
            destroyed_retention_s=settings.destroyed_retention_s,
            change_log_retention_s=settings.change_log_retention_s,
            decision_retention_s=settings.decision_retention_s,
            audit_retention_s=settings.audit_retention_s,
            rate_slot_retention_ms=lambda: policy.policy.longest_window_ms,
            interval_s=settings.prune_interval_s,
        )
        # The concurrency budget: streams never take the room of unary calls, and health is
        # outside both (docs/operating.md).
        self.budget = Budget(
            max_streams=settings.max_streams, max_unary=settings.max_concurrent_rpcs
        )
        callers = (
            None
            if access is None
            else CallerCheck(access, mutual_tls=settings.tls_client_ca_file is not None)
        )
        # Callers, admission, request IDs in the log, RPC metrics and one line per call.
        self.server = InterceptedServer(
            RpcInterceptor(self.budget, callers, tracer), options=SERVER_OPTIONS
        )
        spans = None
        if tracer is not None:
            from policy_service.api.rpc_spans import OperationSpans

            spans = OperationSpans(tracer)
        creation_policy_service_pb2_grpc.add_CreationPolicyServiceServicer_to_server(
            CreationPolicyServicer(policy, store, store, self.recorder, spans), self.server
        )
        group_state_service_pb2_grpc.add_GroupStateServiceServicer_to_server(
            GroupStateServicer(
                store,
                self.feed,
                self.trail,
                watch_heartbeat_s=settings.watch_heartbeat_s,
                watch_max_streams=settings.watch_max_streams,
                max_event_ahead_s=settings.max_event_ahead_s,
                spans=spans,
            ),
            self.server,
        )
        audit_service_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(store), self.server)
        self.health.add_to_server(self.server)
        # Server reflection, so that grpcurl, grpc_cli or Postman can list and call us.
        reflection.enable_server_reflection(
            (
                CREATION_POLICY_SERVICE,
                GROUP_STATE_SERVICE,
                AUDIT_SERVICE,
                HEALTH_SERVICE,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        credentials = server_credentials(settings)
        # grpc listens on whichever of the host's addresses it can bind, and says nothing of
        # one in use: look first.
        problem = listen_problem(settings.grpc_bind)
        if problem is not None:
            raise BindError("CHAT_POLICY_GRPC_BIND", settings.grpc_bind, problem)
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(settings.grpc_bind)
            else:
                self.port = self.server.add_secure_port(settings.grpc_bind, credentials)
        except RuntimeError:
            self.port = 0
        if self.port == 0:  # taken since we looked
            raise BindError("CHAT_POLICY_GRPC_BIND", settings.grpc_bind, "grpc could not bind it")
        self.metrics_port: int | None = None
        self._metrics: MetricsEndpoint | None = None
        if serve_metrics:
            self._metrics = metrics_endpoint(settings, store, policy, access)
            self.metrics_port = self._metrics.port

    async def start(self) -> None:
        """Start serving, following the change log, pruning, health checks and reloads."""
        self.feed.start()
        self.recorder.start()
        await self.server.start()
        self.policy_watcher.start()
        if self.access_watcher is not None:
            self.access_watcher.start()
        self.pruner.start()
        self.health.start()

    async def stop(self, grace_s: float | None) -> None:
        """Report NOT_SERVING, end watch streams, refuse new calls and drain in-flight RPCs
        for up to grace_s, store the queued decision records; the store stays open."""
        await self.health.shut_down()
        self.feed.close()
        await self.server.stop(grace_s)
        await self.pruner.stop()
        await self.policy_watcher.stop()
        if self.access_watcher is not None:
            await self.access_watcher.stop()
        await self.recorder.stop()
        if self._metrics is not None:
            self._metrics.close()

    def reload_files(self) -> None:
        """Reload the policy and access files now (SIGHUP)."""
        self.policy_watcher.request_reload()
        if self.access_watcher is not None:
            self.access_watcher.request_reload()


def metrics_endpoint(
    settings: ServiceSettings,
    store: Store,
    policy: PolicyHolder,
    access: AccessHolder | None = None,
) -> MetricsEndpoint:
    """The /metrics endpoint on CHAT_POLICY_METRICS_BIND; BindError if it cannot listen there."""
    problem = listen_problem(settings.metrics_bind)
    if problem is None:
        try:
            registry = service_registry(store, policy, asyncio.get_running_loop(), access)
            return MetricsEndpoint(settings.metrics_bind, registry)
        except OSError as error:
            problem = error.strerror or str(error)
    raise BindError("CHAT_POLICY_METRICS_BIND", settings.metrics_bind, problem)


def serve(settings: ServiceSettings) -> None:
    """Run the service until SIGTERM or SIGINT, then drain in-flight RPCs and close the store.

    One event loop serves every call and runs every background task: uvloop's, as in the
    adapter's workers (grpc.aio runs on any asyncio loop; uvloop's costs each call less CPU).
    """
    uvloop.run(_serve(settings))


async def _serve(settings: ServiceSettings) -> None:
    policy = PolicyHolder(settings.policy_file, load_policy(settings.policy_file))
    access = (
        None
        if settings.access_file is None
        else AccessHolder(settings.access_file, load_access(settings.access_file))
    )
    tracer = tracing.start("chat-policy-service")
    store = await open_configured_store(settings)
    try:
        service = PolicyService(
            settings, store, policy, access=access, serve_metrics=True, tracer=tracer
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, service.reload_files)
        await service.start()
        log.info(
            "policy service %s listening on %s (port %d), store %s, policy %s, access %s",
            version(),
            settings.grpc_bind,
            service.port,
            redacted_url(settings.resolved_database_url),
            policy.policy.revision,
            "open to every caller" if access is None else access.rules.revision,
        )
        if (
            settings.open_access
            and access is None
            and settings.tls_client_ca_file is None
            and not is_loopback(settings.grpc_bind)
        ):
            log.warning(
                "the gRPC port %s is open: any caller that reaches it may call every method,"
                " group-state writes included (CHAT_POLICY_GRPC_OPEN_ACCESS=true); set"
                " CHAT_POLICY_ACCESS_FILE or mutual TLS to say who may call what",
                settings.grpc_bind,
            )
        log.info(
            "serving metrics at http://%s:%d/metrics",
            settings.metrics_bind.rpartition(":")[0],
            service.metrics_port,
        )
        await stop.wait()
        log.info("stopping: draining in-flight RPCs for up to %.1fs", settings.grace_s)
        await service.stop(settings.grace_s)
    finally:
        await store.close()
        await asyncio.to_thread(tracing.shut_down)  # the spans still queued are exported
    log.info("policy service stopped")


async def open_configured_store(settings: ServiceSettings) -> Store:
    """Open the store the settings name, on the running loop; for an SQLite file,
    SettingsError naming the variable that placed it, the path and why it cannot be used."""
    url = settings.resolved_database_url
    path = sqlite_path(url)
    if path is None:
        return await open_store(url)
    if settings.database_url:
        variable, value = "CHAT_POLICY_DATABASE_URL", settings.database_url
    else:
        variable, value = "CHAT_POLICY_DATA_DIR", str(settings.data_dir)
    problem = directory_problem(path.parent)
    if problem is None:
        try:
            return await open_store(url)
        except StoreUnavailable as error:
            problem = f"cannot open {path.absolute()}: {error}"
    raise SettingsError(f"{variable}={value!r}: {problem}")


def main() -> int:
    """Entry point of `chat-policy service`: exit 0 on a clean stop, 2 on bad configuration."""
    try:
        serve(ServiceSettings.from_env())
    except (
        SettingsError,
        PolicyError,
        AccessError,
        PolicyServiceError,
        BindError,
        tracing.TracingSettingsError,
    ) as error:
        log.error("policy service cannot start: %s", error)
        return 2
    return 0
