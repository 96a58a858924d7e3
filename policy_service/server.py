"""The policy service process: builds the gRPC server and runs it until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from types import FrameType

import grpc
from grpc_reflection.v1alpha import reflection

from chat_policy_shared.data_directory import directory_problem
from chat_policy_shared.listen_address import listen_problem
from chatpolicy.v1 import creation_policy_service_pb2_grpc, group_state_service_pb2_grpc
from policy_service.api.creation_policy_servicer import CreationPolicyServicer
from policy_service.api.group_state_servicer import GroupStateServicer
from policy_service.api.health import (
    CREATION_POLICY_SERVICE,
    GROUP_STATE_SERVICE,
    HEALTH_SERVICE,
    StoreHealth,
)
from policy_service.api.metrics import MetricsEndpoint, service_registry
from policy_service.api.rpc_interceptor import RpcInterceptor
from policy_service.api.tls import server_credentials
from policy_service.engine.decision_recorder import DecisionRecorder
from policy_service.engine.policy_file import PolicyError, load_policy
from policy_service.engine.policy_reload import PolicyFileWatcher, PolicyHolder
from policy_service.errors import PolicyServiceError, StoreUnavailable
from policy_service.groups.change_feed import ChangeFeed
from policy_service.settings import ServiceSettings, SettingsError
from policy_service.stores.retention import RetentionPruner
from policy_service.stores.store import Store, open_store, redacted_url, sqlite_path

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
    """The gRPC server and its background work: the change feed, retention, health, policy
    reloads and the decision record."""

    def __init__(
        self,
        settings: ServiceSettings,
        store: Store,
        policy: PolicyHolder,
        *,
        policy_poll_s: float = 1.0,
        serve_metrics: bool = False,
    ) -> None:
        """Build both services and bind settings.grpc_bind (BindError if it is taken).

        The policy file is checked for changes every policy_poll_s. With serve_metrics,
        Prometheus metrics are served at once on settings.metrics_bind (BindError if taken),
        port in .metrics_port.
        """
        self._store = store
        self.policy = policy
        self.policy_watcher = PolicyFileWatcher(policy, policy_poll_s)
        self.recorder = DecisionRecorder(store)
        self.feed = ChangeFeed(store)
        self.health = StoreHealth(store)
        self.pruner = RetentionPruner(
            store,
            destroyed_retention_s=settings.destroyed_retention_s,
            change_log_retention_s=settings.change_log_retention_s,
            decision_retention_s=settings.decision_retention_s,
            rate_slot_retention_ms=lambda: policy.policy.longest_window_ms,
            interval_s=settings.prune_interval_s,
        )
        self.server = grpc.server(
            # A watch stream holds its thread: the streams get threads of their own, so that
            # unary calls never wait behind them.
            futures.ThreadPoolExecutor(
                max_workers=settings.max_workers + settings.watch_max_streams
            ),
            options=SERVER_OPTIONS,
            # Request IDs in the log, RPC metrics and one log line per call.
            interceptors=(RpcInterceptor(),),
        )
        creation_policy_service_pb2_grpc.add_CreationPolicyServiceServicer_to_server(
            CreationPolicyServicer(policy, store, store, self.recorder), self.server
        )
        group_state_service_pb2_grpc.add_GroupStateServiceServicer_to_server(
            GroupStateServicer(
                store,
                self.feed,
                watch_heartbeat_s=settings.watch_heartbeat_s,
                watch_max_streams=settings.watch_max_streams,
                max_event_ahead_s=settings.max_event_ahead_s,
            ),
            self.server,
        )
        self.health.add_to_server(self.server)
        # Server reflection, so that grpcurl, grpc_cli or Postman can list and call us.
        reflection.enable_server_reflection(
            (CREATION_POLICY_SERVICE, GROUP_STATE_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME),
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
            try:
                self._metrics = metrics_endpoint(settings, store, policy)
            except BindError:
                self.server.stop(None)
                raise
            self.metrics_port = self._metrics.port

    def start(self) -> None:
        """Start serving, following the change log, pruning, health checks and reloads."""
        self.feed.start()
        self.recorder.start()
        self.server.start()
        self.policy_watcher.start()
        self.pruner.start()
        self.health.start()

    def stop(self, grace_s: float | None) -> None:
        """Report NOT_SERVING, end watch streams, refuse new calls and drain in-flight RPCs
        for up to grace_s, store the queued decision records; the store stays open.

        Nothing waits before server.stop: until it runs, new calls are still taken, and a
        background thread may be stuck behind a slow store write.
        """
        self.health.shut_down()
        self.feed.close()
        stopped = self.server.stop(grace_s)
        self.pruner.stop()
        self.policy_watcher.stop()
        stopped.wait()
        self.health.join()
        self.recorder.stop()
        if self._metrics is not None:
            self._metrics.close()


def metrics_endpoint(
    settings: ServiceSettings, store: Store, policy: PolicyHolder
) -> MetricsEndpoint:
    """The /metrics endpoint on CHAT_POLICY_METRICS_BIND; BindError if it cannot listen there."""
    problem = listen_problem(settings.metrics_bind)
    if problem is None:
        try:
            return MetricsEndpoint(settings.metrics_bind, service_registry(store, policy))
        except OSError as error:
            problem = error.strerror or str(error)
    raise BindError("CHAT_POLICY_METRICS_BIND", settings.metrics_bind, problem)


def serve(settings: ServiceSettings) -> None:
    """Run the service until SIGTERM or SIGINT, then drain in-flight RPCs and close the store."""
    policy = PolicyHolder(settings.policy_file, load_policy(settings.policy_file))
    store = open_configured_store(settings)
    try:
        service = PolicyService(settings, store, policy, serve_metrics=True)
        stop = threading.Event()

        def request_stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        def request_reload(signum: int, frame: FrameType | None) -> None:
            service.policy_watcher.request_reload()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGHUP, request_reload)
        service.start()
        log.info(
            "policy service listening on %s (port %d), store %s, policy %s",
            settings.grpc_bind,
            service.port,
            redacted_url(settings.resolved_database_url),
            policy.policy.revision,
        )
        log.info(
            "serving metrics at http://%s:%d/metrics",
            settings.metrics_bind.rpartition(":")[0],
            service.metrics_port,
        )
        # In slices: a signal the kernel delivers to one of grpc's threads runs its handler
        # only when this (main) thread next runs Python code; an endless wait could miss it.
        while not stop.wait(0.1):
            pass
        log.info("stopping: draining in-flight RPCs for up to %.1fs", settings.grace_s)
        service.stop(settings.grace_s)
    finally:
        store.close()
    log.info("policy service stopped")


def open_configured_store(settings: ServiceSettings) -> Store:
    """Open the store the settings name; for an SQLite file, SettingsError naming the variable
    that placed it, the path and why it cannot be used."""
    url = settings.resolved_database_url
    path = sqlite_path(url)
    if path is None:
        return open_store(url)
    if settings.database_url:
        variable, value = "CHAT_POLICY_DATABASE_URL", settings.database_url
    else:
        variable, value = "CHAT_POLICY_DATA_DIR", str(settings.data_dir)
    problem = directory_problem(path.parent)
    if problem is None:
        try:
            return open_store(url)
        except StoreUnavailable as error:
            problem = f"cannot open {path.absolute()}: {error}"
    raise SettingsError(f"{variable}={value!r}: {problem}")


def main() -> int:
    """Entry point of `chat-policy service`: exit 0 on a clean stop, 2 on bad configuration."""
    try:
        serve(ServiceSettings.from_env())
    except (SettingsError, PolicyError, PolicyServiceError, BindError) as error:
        log.error("policy service cannot start: %s", error)
        return 2
    return 0
