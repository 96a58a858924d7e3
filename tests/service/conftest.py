"""A real policy service on port 0 for servicer tests, with helpers to call it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_status import rpc_status

from chatpolicy.v1 import (
    creation_policy_service_pb2_grpc,
    group_state_service_pb2,
    group_state_service_pb2_grpc,
)
from policy_service.policy import Policy, load_policy
from policy_service.server import PolicyService
from policy_service.settings import ServiceSettings
from policy_service.store import GroupStateStore, open_store

pb = group_state_service_pb2
APP = 1400000000


class BrokenStore:
    """A GroupStateStore whose every call but close fails with the given exception."""

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

    def __init__(self, store: GroupStateStore, policy: Policy, settings: ServiceSettings) -> None:
        self.store = store
        self.service = PolicyService(settings, store, policy)
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


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start servers with a given store, policy and settings (default: SQLite, allow-all,
    ServiceSettings' defaults); stop them after the test."""
    started: list[Server] = []

    def start(
        store: GroupStateStore | None = None, policy: Policy | None = None, **settings: Any
    ) -> Server:
        server = Server(
            store or open_store(f"sqlite:///{tmp_path / 'db.sqlite'}"),
            policy or load_policy(None),
            ServiceSettings(grpc_bind="127.0.0.1:0", **settings),
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


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
