"""Group.CallbackAfterGroupFull -> GroupStateService.RecordGroupFull."""

from __future__ import annotations

import grpc

from adapter import payload
from adapter.answers import Answer, Failure, WebhookError, grpc_failure, ok
from adapter.policy_client import PolicyClient, timestamp_from_ms
from adapter.webhook import Webhook
from chatpolicy.v1 import group_state_service_pb2 as pb

GROUP_FULL = "Group.CallbackAfterGroupFull"


class GroupStateFamily:
    """Records group-full events; a failed call is answered as a failure, never acknowledged.

    An event without EventTime is recorded at the time the adapter received it.
    """

    def __init__(self, client: PolicyClient) -> None:
        self._client = client

    def handle(self, webhook: Webhook) -> Answer:
        """Record one group-full event."""
        body = webhook.body
        group_id = payload.text(body, "GroupId")
        if not group_id:
            raise WebhookError(Failure.INVALID_FIELD, "GroupId is required")
        event_time_ms = payload.event_time_ms(body)
        request = pb.RecordGroupFullRequest(
            sdk_app_id=webhook.sdk_app_id,
            group_id=group_id,
            topic_id=payload.text(body, "TopicId"),
            event_time=timestamp_from_ms(
                webhook.received_ms if event_time_ms is None else event_time_ms
            ),
        )
        try:
            response = self._client.record_group_full(request, webhook.request_id)
        except grpc.RpcError as error:
            raise grpc_failure(error) from None
        return ok("recorded" if response.applied else "duplicate")
