"""A policy service on port 0 for the service tests, its stubs, and what the tests send and read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_status import rpc_status

from chatpolicy.v1 import (
    creation_policy_service_pb2_grpc,
    group_state_service_pb2,
    group_state_service_pb2_grpc,
)
from policy_service.engine.policy_reload import PolicyHolder
from policy_service.server import PolicyService
from policy_service.settings import ServiceSettings
from policy_service.stores.store import Store

pb = group_state_service_pb2


APP = 1400000000


class BrokenStore:
    """A Store whose every call but close fails with the given exception."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def fail(*args: object, **kwargs: object) -> Any:
            raise self.error

        return fail

    def close(self) -> None:
        pass


class Server:
    """A running policy service on port 0 with a channel to it."""

    def __init__(
        self, store: Store, policy: PolicyHolder, settings: ServiceSettings, policy_poll_s: float
    ) -> None:
        self.store = store
        self.service = PolicyService(settings, store, policy, policy_poll_s=policy_poll_s)
        self.service.start()
        self.target = f"127.0.0.1:{self.service.port}"
        self.channel = grpc.insecure_channel(self.target)
        self.groups = group_state_service_pb2_grpc.GroupStateServiceStub(self.channel)
        self.creation = creation_policy_service_pb2_grpc.CreationPolicyServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def stop(self) -> None:
        """Close the channel, stop the service and close its store."""
        self.channel.close()
        self.service.stop(None)
        self.store.close()


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
