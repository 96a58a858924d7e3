"""The adapter's seam to the policy service: one unary call per webhook, with a deadline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import grpc.aio
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chat_policy_shared.channel import ChannelSecurity, open_aio_channel
from chat_policy_shared.logs import REQUEST_ID_METADATA, WEBHOOK_METADATA
from chatpolicy.v1 import (
    creation_policy_service_pb2,
    creation_policy_service_pb2_grpc,
    group_state_service_pb2,
    group_state_service_pb2_grpc,
)

if TYPE_CHECKING:
    from chat_policy_shared.trace_context import Metadata

RecordRequest = (
    group_state_service_pb2.RecordGroupFullRequest
    | group_state_service_pb2.RecordMemberExitRequest
    | group_state_service_pb2.RecordGroupDestroyedRequest
)


class PolicyClient(Protocol):
    """The calls the adapter makes; tests put a fake here. Failures raise grpc.RpcError.

    `webhook` is the CallbackCommand of the webhook a call relays (None: it relays none, as
    a replay from the spool).
    """

    async def check_group_creation(
        self,
        request: creation_policy_service_pb2.CheckGroupCreationRequest,
        request_id: str,
        webhook: str | None = None,
    ) -> creation_policy_service_pb2.CheckGroupCreationResponse:
        """Ask CreationPolicyService.CheckGroupCreation."""
        ...

    async def record(
        self, request: RecordRequest, request_id: str, webhook: str | None = None
    ) -> bool:
        """Call the GroupStateService method named by the request's type; True if applied."""
        ...

    async def check_health(self, timeout_s: float) -> str:
        """grpc.health.v1 Check of the whole service (""): the status's name, e.g. SERVING."""
        ...


class GrpcPolicyClient:
    """PolicyClient over one grpc.aio channel, opened at the first call: inside the worker's
    event loop, after fork. Make one per process (per worker) and close it at shutdown.

    Every call but the health check carries the request ID as `x-request-id` metadata, the
    webhook it relays (if any) as `x-chat-policy-webhook`, and what `add_trace_context` adds
    to that (tracing on: the current span's `traceparent`,
    chat_policy_shared.trace_context.with_trace_context).
    """

    def __init__(
        self,
        target: str,
        security: ChannelSecurity,
        deadline_ms: int,
        add_trace_context: Callable[[Metadata], Metadata] | None = None,
    ) -> None:
        self._add_trace_context = add_trace_context
        self._target = target
        self._security = security
        self._timeout_s = deadline_ms / 1000
        self._stubs: _Stubs | None = None

    async def check_group_creation(
        self,
        request: creation_policy_service_pb2.CheckGroupCreationRequest,
        request_id: str,
        webhook: str | None = None,
    ) -> creation_policy_service_pb2.CheckGroupCreationResponse:
        """Ask CreationPolicyService.CheckGroupCreation."""
        response: creation_policy_service_pb2.CheckGroupCreationResponse
        response = await self._open().creation.CheckGroupCreation(
            request, timeout=self._timeout_s, metadata=self._metadata(request_id, webhook)
        )
        return response

    async def record(
        self, request: RecordRequest, request_id: str, webhook: str | None = None
    ) -> bool:
        """Call the GroupStateService method named by the request's type; True if applied."""
        response = await self._open().record_methods[type(request)](
            request, timeout=self._timeout_s, metadata=self._metadata(request_id, webhook)
        )
        return bool(getattr(response, "applied"))  # noqa: B009 (untyped generated stub)

    async def check_health(self, timeout_s: float) -> str:
        """grpc.health.v1 Check of the whole service (""): the status's name, e.g. SERVING."""
        response = await self._open().health.Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    async def close(self) -> None:
        """Close the channel, if one was opened; calls still running are cancelled."""
        if self._stubs is not None:
            await self._stubs.channel.close()
            self._stubs = None

    def _metadata(self, request_id: str, webhook: str | None) -> Metadata:
        """A call's metadata: its request ID, the webhook it relays, and its trace context
        when tracing is on."""
        metadata: Metadata
        if webhook is None:
            metadata = ((REQUEST_ID_METADATA, request_id),)
        else:
            metadata = ((REQUEST_ID_METADATA, request_id), (WEBHOOK_METADATA, webhook))
        if self._add_trace_context is None:
            return metadata
        return self._add_trace_context(metadata)

    def _open(self) -> _Stubs:
        """The stubs on this client's channel; the first call opens it, in the running loop."""
        if self._stubs is None:
            self._stubs = _Stubs(open_aio_channel(self._target, self._security))
        return self._stubs


class _Stubs:
    """The stubs the adapter calls, on one channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.creation = creation_policy_service_pb2_grpc.CreationPolicyServiceStub(channel)
        group_state = group_state_service_pb2_grpc.GroupStateServiceStub(channel)
        self.record_methods: dict[type[RecordRequest], Callable[..., Awaitable[object]]] = {
            group_state_service_pb2.RecordGroupFullRequest: group_state.RecordGroupFull,
            group_state_service_pb2.RecordMemberExitRequest: group_state.RecordMemberExit,
            group_state_service_pb2.RecordGroupDestroyedRequest: group_state.RecordGroupDestroyed,
        }
        self.health = health_pb2_grpc.HealthStub(channel)


def timestamp_from_ms(ms: int) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp for Unix milliseconds."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp
