"""The adapter's seam to the policy service: one unary call per webhook, with a deadline."""

from __future__ import annotations

from typing import Protocol

import grpc
from google.protobuf import timestamp_pb2

from chatpolicy.v1 import (
    creation_policy_service_pb2,
    creation_policy_service_pb2_grpc,
    group_state_service_pb2,
    group_state_service_pb2_grpc,
)

REQUEST_ID_METADATA = "x-request-id"


class PolicyClient(Protocol):
    """The calls the adapter makes; tests put a fake here. Failures raise grpc.RpcError."""

    def check_group_creation(
        self, request: creation_policy_service_pb2.CheckGroupCreationRequest, request_id: str
    ) -> creation_policy_service_pb2.CheckGroupCreationResponse:
        """Ask CreationPolicyService.CheckGroupCreation."""
        ...

    def record_group_full(
        self, request: group_state_service_pb2.RecordGroupFullRequest, request_id: str
    ) -> group_state_service_pb2.RecordGroupFullResponse:
        """Call GroupStateService.RecordGroupFull."""
        ...


class GrpcPolicyClient:
    """PolicyClient over one gRPC channel; make it in the process that uses it (after fork)."""

    def __init__(self, channel: grpc.Channel, deadline_ms: int) -> None:
        self._creation = creation_policy_service_pb2_grpc.CreationPolicyServiceStub(channel)
        self._group_state = group_state_service_pb2_grpc.GroupStateServiceStub(channel)
        self._timeout_s = deadline_ms / 1000

    def check_group_creation(
        self, request: creation_policy_service_pb2.CheckGroupCreationRequest, request_id: str
    ) -> creation_policy_service_pb2.CheckGroupCreationResponse:
        """Ask CreationPolicyService.CheckGroupCreation."""
        response: creation_policy_service_pb2.CheckGroupCreationResponse
        response = self._creation.CheckGroupCreation(
            request, timeout=self._timeout_s, metadata=((REQUEST_ID_METADATA, request_id),)
        )
        return response

    def record_group_full(
        self, request: group_state_service_pb2.RecordGroupFullRequest, request_id: str
    ) -> group_state_service_pb2.RecordGroupFullResponse:
        """Call GroupStateService.RecordGroupFull."""
        response: group_state_service_pb2.RecordGroupFullResponse
        response = self._group_state.RecordGroupFull(
            request, timeout=self._timeout_s, metadata=((REQUEST_ID_METADATA, request_id),)
        )
        return response


def timestamp_from_ms(ms: int) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp for Unix milliseconds."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp
