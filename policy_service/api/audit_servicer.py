"""AuditService: lists the audit trail, translating protobuf to the store's AuditLog and back."""

from __future__ import annotations

import grpc

from chatpolicy.v1 import audit_service_pb2, audit_service_pb2_grpc
from policy_service.api.page_tokens import (
    decode_audit_token,
    encode_audit_token,
    page_size_from_request,
)
from policy_service.api.status import maps_errors
from policy_service.api.timestamps import milliseconds, timestamp
from policy_service.audit.audit_log import AuditCursor, AuditEvent, AuditLog, AuditQuery

pb = audit_service_pb2


class AuditServicer(audit_service_pb2_grpc.AuditServiceServicer):
    """Answers ListAuditEvents from the store's audit trail."""

    def __init__(self, audit_log: AuditLog) -> None:
        self._log = audit_log

    @maps_errors
    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAuditEventsResponse:
        """One page of audit events, newest first."""
        query = AuditQuery(
            caller=request.caller,
            action=request.action,
            sdk_app_id=request.sdk_app_id,
            group_id=request.group_id,
            occurred_at_least_ms=(
                milliseconds("occurred_at_or_after", request.occurred_at_or_after)
                if request.HasField("occurred_at_or_after")
                else None
            ),
            occurred_at_most_ms=(
                milliseconds("occurred_at_or_before", request.occurred_at_or_before)
                if request.HasField("occurred_at_or_before")
                else None
            ),
        )
        size = page_size_from_request(request.page_size)
        after = decode_audit_token(request.page_token, query)
        # One extra event tells whether a next page exists without a second query.
        events = await self._log.list_audit_events(query, size + 1, after)
        page = events[:size]
        next_token = ""
        if len(events) > size:
            last = page[-1]
            next_token = encode_audit_token(query, AuditCursor(last.occurred_at_ms, last.audit_id))
        return pb.ListAuditEventsResponse(
            events=[_event_pb(event) for event in page], next_page_token=next_token
        )


def _event_pb(event: AuditEvent) -> pb.AuditEvent:
    return pb.AuditEvent(
        audit_id=event.audit_id,
        occurred_at=timestamp(event.occurred_at_ms),
        caller=event.caller,
        action=event.action,
        sdk_app_id=event.sdk_app_id,
        group_id=event.group_id,
        topic_id=event.topic_id,
        reason=event.reason,
        result=event.result,
        detail=event.detail,
        request_id=event.request_id,
        replica=event.replica,
    )
