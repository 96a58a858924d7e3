"""gRPC health (grpc.health.v1): NOT_SERVING while the store does not answer or on shutdown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chatpolicy.v1 import audit_service_pb2, creation_policy_service_pb2, group_state_service_pb2
from policy_service.background import cancel_task
from policy_service.errors import StoreUnavailable
from policy_service.groups.store import GroupStateStore

log = logging.getLogger(__name__)

CREATION_POLICY_SERVICE = creation_policy_service_pb2.DESCRIPTOR.services_by_name[
    "CreationPolicyService"
].full_name
GROUP_STATE_SERVICE = group_state_service_pb2.DESCRIPTOR.services_by_name[
    "GroupStateService"
].full_name
AUDIT_SERVICE = audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
HEALTH_SERVICE: str = health.SERVICE_NAME
# The whole server (""), GroupStateService and AuditService need the store; creation
# decisions do not.
STORE_DEPENDENT = ("", GROUP_STATE_SERVICE, AUDIT_SERVICE)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

SHUTTING_DOWN = "the policy service is shutting down"


class StoreHealth:
    """Serves grpc.health.v1 and follows the store with a ping every interval_s (a task on
    the service's loop)."""

    def __init__(self, store: GroupStateStore, interval_s: float = 1.0) -> None:
        self._store = store
        self._interval_s = interval_s
        self._servicer = _HealthServicer()
        for service in (*STORE_DEPENDENT, CREATION_POLICY_SERVICE):
            # Before any Watch exists, set() needs no loop: nothing to notify yet.
            self._servicer._server_status[service] = SERVING
        self._store_up = True
        self._task: asyncio.Task[None] | None = None

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register the health service on `server`."""
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    def start(self) -> None:
        """Start pinging the store, on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="store-health")

    async def shut_down(self) -> None:
        """Report NOT_SERVING for everything from now on (draining), end every Watch stream
        after that message, and stop pinging (a ping under way is cancelled)."""
        await self._servicer.enter_graceful_shutdown()
        await self._servicer.end_watches()
        await cancel_task(self._task)

    async def check_store(self) -> None:
        """Ping the store once and report the outcome."""
        try:
            await self._store.ping()
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
            await self._servicer.set(service, SERVING if up else NOT_SERVING)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.check_store()


class _HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """grpc's asyncio HealthServicer whose Watch streams can be ended from the server side.

    grpc's own never ends a Watch stream: an open one holds server.stop(grace) for the whole
    grace period. After end_watches each ends with UNAVAILABLE once it has sent the status
    it last saw (NOT_SERVING, after enter_graceful_shutdown), and any opened later right
    after its first message. Its Watch is grpc's, with that ending added.
    """

    def __init__(self) -> None:
        super().__init__()
        self._ended = False

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        """Stream the service's status: now, then on every change, until the stream ends."""
        service = request.service
        condition = self._server_watchers[service]
        self._watcher_count_by_service[service] += 1
        last_status = None
        try:
            async with condition:
                while True:
                    status = self._server_status.get(
                        service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                    )
                    if status != last_status:
                        await context.write(health_pb2.HealthCheckResponse(status=status))
                    last_status = status
                    if self._ended:
                        context.set_code(grpc.StatusCode.UNAVAILABLE)
                        context.set_details(SHUTTING_DOWN)
                        return
                    await condition.wait()
        finally:
            self._watcher_count_by_service[service] -= 1
            if self._watcher_count_by_service[service] == 0:
                del self._server_watchers[service]
                del self._watcher_count_by_service[service]

    async def end_watches(self) -> None:
        """End every open Watch stream, and any opened from now on, with UNAVAILABLE."""
        self._ended = True
        for condition in list(self._server_watchers.values()):
            async with condition:
                condition.notify_all()
