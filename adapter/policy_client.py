"""The adapter's seam to the policy service: one unary call per webhook, with a deadline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import grpc
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chat_policy_shared.channel import ChannelSecurity, open_channel
from chat_policy_shared.logs import REQUEST_ID_METADATA
from chatpolicy.v1 import (
    creation_policy_service_pb2,
    creation_policy_service_pb2_grpc,
    group_state_service_pb2,
    group_state_service_pb2_grpc,
)

RecordRequest = (
    group_state_service_pb2.RecordGroupFullRequest
    | group_state_service_pb2.RecordMemberExitRequest
    | group_state_service_pb2.RecordGroupDestroyedRequest
)


class PolicyClient(Protocol):
    """The calls the adapter makes; tests put a fake here. Failures raise grpc.RpcError."""

    def check_group_creation(
        self, request: creation_policy_service_pb2.CheckGroupCreationRequest, request_id: str
    ) -> creation_policy_service_pb2.CheckGroupCreationResponse:
        """Ask CreationPolicyService.CheckGroupCreation."""
        ...

    def record(self, request: RecordRequest, request_id: str) -> bool:
        """Call the GroupStateService method named by the request's type; True if applied."""
        ...

    def check_health(self, timeout_s: float) -> str:
        """grpc.health.v1 Check of the whole service (""): the status's name, e.g. SERVING."""
        ...


class GrpcPolicyClient:
    """PolicyClient over one gRPC channel; make it in the process that uses it (after fork)."""

    def __init__(self, channel: grpc.Channel, deadline_ms: int) -> None:
        self._creation = creation_policy_service_pb2_grpc.CreationPolicyServiceStub(channel)
        group_state = group_state_service_pb2_grpc.GroupStateServiceStub(channel)
        self._record_methods: dict[type[RecordRequest], Callable[..., object]] = {
            group_state_service_pb2.RecordGroupFullRequest: group_state.RecordGroupFull,
            group_state_service_pb2.RecordMemberExitRequest: group_state.RecordMemberExit,
            group_state_service_pb2.RecordGroupDestroyedRequest: group_state.RecordGroupDestroyed,
        }
        self._timeout_s = deadline_ms / 1000
        self._health = health_pb2_grpc.HealthStub(channel)

    @classmethod
    def connect(cls, target: str, security: ChannelSecurity, deadline_ms: int) -> GrpcPolicyClient:
        """A client on a new channel to `target`."""
        return cls(open_channel(target, security), deadline_ms)

    def check_group_creation(
        self, request: creation_policy_service_pb2.CheckGroupCreationRequest, request_id: str
    ) -> creation_policy_service_pb2.CheckGroupCreationResponse:
        """Ask CreationPolicyService.CheckGroupCreation."""
        response: creation_policy_service_pb2.CheckGroupCreationResponse
        response = self._creation.CheckGroupCreation(
            request, timeout=self._timeout_s, metadata=((REQUEST_ID_METADATA, request_id),)
        )
        return response

    def record(self, request: RecordRequest, request_id: str) -> bool:
        """Call the GroupStateService method named by the request's type; True if applied."""
        response = self._record_methods[type(request)](
            request, timeout=self._timeout_s, metadata=((REQUEST_ID_METADATA, request_id),)
        )
        return bool(getattr(response, "applied"))  # noqa: B009 (untyped generated stub)

    def check_health(self, timeout_s: float) -> str:
        """grpc.health.v1 Check of the whole service (""): the status's name, e.g. SERVING."""
        response = self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def timestamp_from_ms(ms: int) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp for Unix milliseconds."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp
