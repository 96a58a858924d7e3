"""gRPC health (grpc.health.v1): NOT_SERVING while the store does not answer or on shutdown."""

from __future__ import annotations

import logging
import threading

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chatpolicy.v1 import creation_policy_service_pb2, group_state_service_pb2
from policy_service.errors import StoreUnavailable
from policy_service.store import GroupStateStore

log = logging.getLogger(__name__)

CREATION_POLICY_SERVICE = creation_policy_service_pb2.DESCRIPTOR.services_by_name[
    "CreationPolicyService"
].full_name
GROUP_STATE_SERVICE = group_state_service_pb2.DESCRIPTOR.services_by_name[
    "GroupStateService"
].full_name
# The whole server ("") and GroupStateService need the store; creation decisions do not.
STORE_DEPENDENT = ("", GROUP_STATE_SERVICE)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class StoreHealth:
    """Serves grpc.health.v1 and follows the store with a ping every interval_s."""

    def __init__(self, store: GroupStateStore, interval_s: float = 1.0) -> None:
        self._store = store
        self._interval_s = interval_s
        self._servicer = health.HealthServicer(experimental_non_blocking=True)
        for service in (*STORE_DEPENDENT, CREATION_POLICY_SERVICE):
            self._servicer.set(service, SERVING)
        self._store_up = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-health", daemon=True)

    def add_to_server(self, server: grpc.Server) -> None:
        """Register the health service on `server`."""
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    def start(self) -> None:
        """Start pinging the store."""
        self._thread.start()

    def shut_down(self) -> None:
        """Report NOT_SERVING for everything from now on (draining), and stop pinging."""
        self._servicer.enter_graceful_shutdown()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def check_store(self) -> None:
        """Ping the store once and report the outcome."""
        try:
            self._store.ping()
            up = True
        except Exception as error:
            up = False
            if self._store_up:  # the first failure of an outage
                if isinstance(error, StoreUnavailable):
                    log.warning("store unavailable, health NOT_SERVING: %s", error)
                else:
                    log.exception("store check failed unexpectedly, health NOT_SERVING")
        if up and not self._store_up:
            log.info("store available again, health SERVING")
        self._store_up = up
        for service in STORE_DEPENDENT:
            self._servicer.set(service, SERVING if up else NOT_SERVING)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.check_store()
