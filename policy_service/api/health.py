"""gRPC health (grpc.health.v1): NOT_SERVING while the store does not answer or on shutdown."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chatpolicy.v1 import creation_policy_service_pb2, group_state_service_pb2
from policy_service.errors import StoreUnavailable
from policy_service.groups.store import GroupStateStore

log = logging.getLogger(__name__)

CREATION_POLICY_SERVICE = creation_policy_service_pb2.DESCRIPTOR.services_by_name[
    "CreationPolicyService"
].full_name
GROUP_STATE_SERVICE = group_state_service_pb2.DESCRIPTOR.services_by_name[
    "GroupStateService"
].full_name
HEALTH_SERVICE: str = health.SERVICE_NAME
# The whole server ("") and GroupStateService need the store; creation decisions do not.
STORE_DEPENDENT = ("", GROUP_STATE_SERVICE)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

SHUTTING_DOWN = "the policy service is shutting down"


class StoreHealth:
    """Serves grpc.health.v1 and follows the store with a ping every interval_s."""

    def __init__(self, store: GroupStateStore, interval_s: float = 1.0) -> None:
        self._store = store
        self._interval_s = interval_s
        self._servicer = _HealthServicer()
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
        """Report NOT_SERVING for everything from now on (draining), end every Watch stream
        after that message, and stop pinging; returns without waiting for a ping under way
        (join waits)."""
        self._servicer.enter_graceful_shutdown()
        self._servicer.end_watches()
        self._stop.set()

    def join(self) -> None:
        """Wait for the ping thread to end (after shut_down)."""
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
        if up == self._store_up:
            return  # unchanged: Watch streams hear only of changes
        if up:
            log.info("store available again, health SERVING")
        self._store_up = up
        for service in STORE_DEPENDENT:
            self._servicer.set(service, SERVING if up else NOT_SERVING)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.check_store()


class _HealthServicer(health.HealthServicer):  # type: ignore[misc]
    """grpc's HealthServicer whose Watch streams can be ended from the server side.

    grpc's own never ends a Watch stream: an open one holds server.stop(grace) for the whole
    grace period. end_watches ends each with UNAVAILABLE, and any opened later right after
    its first message.
    """

    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True)
        self._streams_lock = threading.Lock()
        self._streams: set[_WatchStream] = set()
        self._ended = False

    def Watch(
        self,
        request: Any,
        context: grpc.ServicerContext,
        send_response_callback: Callable[[Any], None] | None = None,
    ) -> Any:
        """Stream the service's status: now, then on every change, until the stream ends."""
        if send_response_callback is None:  # a server that only takes blocking streams
            return super().Watch(request, context)
        stream = _WatchStream(context, send_response_callback)
        with self._streams_lock:
            ended = self._ended
            if not ended:
                self._streams.add(stream)
        context.add_callback(lambda: self._forget(stream))
        super().Watch(request, context, stream.send)
        if ended:
            stream.end()
        return None

    def end_watches(self) -> None:
        """End every open Watch stream, and any opened from now on, with UNAVAILABLE."""
        with self._streams_lock:
            self._ended = True
            streams, self._streams = self._streams, set()
        for stream in streams:
            stream.end()

    def _forget(self, stream: _WatchStream) -> None:
        with self._streams_lock:
            self._streams.discard(stream)


class _WatchStream:
    """One Watch stream's sender: passes statuses on until the stream ends, ends it once."""

    def __init__(self, context: grpc.ServicerContext, send: Callable[[Any], None]) -> None:
        self._context = context
        self._send = send
        self._lock = threading.Lock()
        self._done = False

    def send(self, response: Any) -> None:
        """Send a HealthCheckResponse; None ends the stream (grpc's non-blocking protocol)."""
        with self._lock:
            if self._done:
                return
            self._done = response is None
            self._send(response)

    def end(self) -> None:
        """End the stream with UNAVAILABLE, after the messages already sent."""
        self._context.set_code(grpc.StatusCode.UNAVAILABLE)
        self._context.set_details(SHUTTING_DOWN)
        self.send(None)
