"""The policy service process: builds the gRPC server and runs it until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from types import FrameType

import grpc

from chatpolicy.v1 import creation_policy_service_pb2_grpc, group_state_service_pb2_grpc
from policy_service.creation_policy_servicer import CreationPolicyServicer
from policy_service.errors import PolicyServiceError
from policy_service.group_state_servicer import GroupStateServicer
from policy_service.policy import Policy, PolicyError, load_policy
from policy_service.settings import ServiceSettings, SettingsError
from policy_service.store import GroupStateStore, open_store, redacted_url

log = logging.getLogger(__name__)


class BindError(RuntimeError):
    """The gRPC server could not listen on the configured address."""


def create_server(
    settings: ServiceSettings, store: GroupStateStore, policy: Policy
) -> tuple[grpc.Server, int]:
    """Build the server with both services, bound to settings.grpc_bind; return it and its port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers),
        # grpc sets SO_REUSEPORT by default: a second service on the same port would silently
        # share its traffic. Refuse to start instead.
        options=[("grpc.so_reuseport", 0)],
    )
    creation_policy_service_pb2_grpc.add_CreationPolicyServiceServicer_to_server(
        CreationPolicyServicer(policy), server
    )
    group_state_service_pb2_grpc.add_GroupStateServiceServicer_to_server(
        GroupStateServicer(store), server
    )
    try:
        port = server.add_insecure_port(settings.grpc_bind)
    except RuntimeError:
        port = 0
    if port == 0:
        raise BindError(f"cannot listen on CHAT_POLICY_GRPC_BIND={settings.grpc_bind!r}")
    return server, port


def serve(settings: ServiceSettings) -> None:
    """Run the service until SIGTERM or SIGINT, then drain in-flight RPCs and close the store."""
    policy = load_policy(settings.policy_file)
    store = open_store(settings.resolved_database_url)
    try:
        server, port = create_server(settings, store, policy)
        stop = threading.Event()

        def request_stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        server.start()
        log.info(
            "policy service listening on %s (port %d), store %s, policy %s",
            settings.grpc_bind,
            port,
            redacted_url(settings.resolved_database_url),
            policy.revision,
        )
        stop.wait()
        log.info("stopping: draining in-flight RPCs for up to %.1fs", settings.grace_s)
        server.stop(settings.grace_s).wait()
    finally:
        store.close()
    log.info("policy service stopped")


def main() -> int:
    """Entry point of `chat-policy service`: exit 0 on a clean stop, 2 on bad configuration."""
    try:
        serve(ServiceSettings.from_env())
    except (SettingsError, PolicyError, PolicyServiceError, BindError) as error:
        log.error("policy service cannot start: %s", error)
        return 2
    return 0
