"""A policy service on port 0 for the service tests, its stubs, and what the tests send and read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry.trace import Tracer

from chatpolicy.v1 import (
    creation_policy_service_pb2_grpc,
    group_state_service_pb2,
    group_state_service_pb2_grpc,
)
from policy_service.access.access_reload import AccessHolder
from policy_service.engine.policy_reload import PolicyHolder
from policy_service.server import PolicyService
from policy_service.settings import ServiceSettings
from policy_service.stores.store import open_store
from tests.event_loops import Blocking, LoopThread

pb = group_state_service_pb2


APP = 1400000000


class BrokenStore:
    """A Store whose every call but close fails with the given exception (each a coroutine,
    as a store's methods are; it belongs to no loop, so it may be built anywhere)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Callable[..., Any]:
        async def fail(*args: object, **kwargs: object) -> Any:
            raise self.error

        return fail

    async def close(self) -> None:
        pass


# What a test names as the server's store: a database URL, an async opener given the default
# SQLite URL (to wrap the store it opens), or a store bound to no loop (BrokenStore).
StoreSpec = str | Callable[[str], Awaitable[Any]] | BrokenStore


class Server:
    """A running policy service on port 0, on an event loop of its own (a LoopThread, as
    `chat-policy service` runs it on its main thread), with a channel to it.

    .store is a Blocking view of the service's store, so test code calls it plainly.
    """

    def __init__(
        self,
        store: StoreSpec,
        default_url: str,
        policy: PolicyHolder,
        settings: ServiceSettings,
        policy_poll_s: float,
        serve_metrics: bool = False,
        access: AccessHolder | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.loop = LoopThread()

        async def start() -> tuple[Any, PolicyService]:
            if isinstance(store, str):
                opened = await open_store(store)
            elif isinstance(store, BrokenStore):
                opened = store
            else:
                opened = await store(default_url)
            try:
                service = PolicyService(
                    settings,
                    opened,
                    policy,
                    access=access,
                    policy_poll_s=policy_poll_s,
                    serve_metrics=serve_metrics,
                    tracer=tracer,
                )
                await service.start()
            except BaseException:
                await opened.close()
                raise
            return opened, service

        try:
            opened, self.service = self.loop.run(start())
        except BaseException:
            self.loop.stop()
            raise
        self.store = Blocking(opened, self.loop)
        self.target = f"127.0.0.1:{self.service.port}"
        self.channel = grpc.insecure_channel(self.target)
        self.groups = group_state_service_pb2_grpc.GroupStateServiceStub(self.channel)
        self.creation = creation_policy_service_pb2_grpc.CreationPolicyServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self._stopped = False

    def stop_service(self, grace_s: float | None) -> None:
        """Stop the service (PolicyService.stop on its loop), waiting until it has stopped."""
        if not self._stopped:
            self._stopped = True
            self.loop.run(self.service.stop(grace_s))

    def stop(self) -> None:
        """Close the channel, stop the service, close its store and end its loop."""
        self.channel.close()
        self.stop_service(None)
        self.loop.run(self.store.target.close())
        self.loop.stop()


Serve = Callable[..., Server]


def full_event(group_id: str, event_time_ms: int, app: int = APP) -> pb.RecordGroupFullRequest:
    """A RecordGroupFull request."""
    request = pb.RecordGroupFullRequest(sdk_app_id=app, group_id=group_id)
    request.event_time.FromMilliseconds(event_time_ms)
    return request


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail of a failed call."""
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info
