"""After-webhooks that move group state -> GroupStateService, spooled while it is away.

Group.CallbackAfterGroupFull, Group.CallbackAfterMemberExit and
Group.CallbackAfterGroupDestroyed each become one Record* call. Group.CallbackAfterNewMemberJoin
is validated and acknowledged but not recorded: a join may itself fill the group, so it
cannot say the group has room, and the full event it triggers carries the same EventTime.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import grpc

from adapter import payload
from adapter.answers import Answer, Failure, WebhookError, grpc_failure, ok
from adapter.metrics import REPLAYED, SET_ASIDE, SPOOLED
from adapter.policy_client import PolicyClient, RecordRequest, timestamp_from_ms
from adapter.spool import Rejected, RetryLater, Spool, SpooledEvent, SpoolFull, SpoolUnavailable
from adapter.webhook import Webhook
from chatpolicy.v1 import group_state_service_pb2 as pb

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

GROUP_FULL = "Group.CallbackAfterGroupFull"
MEMBER_EXIT = "Group.CallbackAfterMemberExit"
GROUP_DESTROYED = "Group.CallbackAfterGroupDestroyed"
NEW_MEMBER_JOIN = "Group.CallbackAfterNewMemberJoin"
COMMANDS = (GROUP_FULL, MEMBER_EXIT, GROUP_DESTROYED, NEW_MEMBER_JOIN)

# The text fields and member lists each command documents: checked for type, else unused.
_CHECKED_FIELDS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    GROUP_FULL: ((), ()),
    MEMBER_EXIT: (("Type", "ExitType", "Operator_Account"), ("ExitMemberList",)),
    GROUP_DESTROYED: (("Type", "Owner_Account", "Name"), ("MemberList",)),
    NEW_MEMBER_JOIN: (("Type", "JoinType", "Operator_Account"), ("NewMemberList",)),
}

# The spool stores each request under its method name; replay rebuilds it from there.
SPOOLED_REQUESTS: Mapping[str, type[RecordRequest]] = {
    "RecordGroupFull": pb.RecordGroupFullRequest,
    "RecordMemberExit": pb.RecordMemberExitRequest,
    "RecordGroupDestroyed": pb.RecordGroupDestroyedRequest,
}

log = logging.getLogger(__name__)


class GroupStateFamily:
    """Records group-state events; when the service cannot take one, it is spooled.

    An event is answered 200 only once the service applied it or the spool holds it on disk.
    An event without EventTime is recorded at the time the adapter received it, so that a
    replay of it is recognised as the same event. An EventTime more than `max_event_ahead_s`
    ahead of that time is refused: a bad clock must not pin a group's state. The spool's
    append (a SQLite commit and an fsync) runs in `blocking`, off the event loop.
    """

    def __init__(
        self,
        client: PolicyClient,
        spool: Spool,
        blocking: Executor,
        wake_replayer: Callable[[], None],
        max_event_ahead_s: int,
    ) -> None:
        self._client = client
        self._spool = spool
        self._blocking = blocking
        self._wake_replayer = wake_replayer
        self._max_event_ahead_s = max_event_ahead_s

    async def handle(self, webhook: Webhook) -> Answer:
        """Record one event, or spool it while the policy service is away."""
        request = record_request(webhook, self._max_event_ahead_s)
        if request is None:
            return ok("acknowledged")
        try:
            applied = await self._client.record(request, webhook.request_id, webhook.command)
        except grpc.RpcError as error:
            failure = grpc_failure(error)
            if failure.failure is Failure.POLICY_REJECTED:
                raise failure from None
            return await self._spool_request(request, webhook, failure)
        return ok("recorded" if applied else "duplicate")

    async def _spool_request(
        self, request: RecordRequest, webhook: Webhook, cause: WebhookError
    ) -> Answer:
        method = type(request).DESCRIPTOR.name.removesuffix("Request")
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._blocking,
                self._spool.append,
                method,
                request.SerializeToString(),
                webhook.request_id,
                webhook.received_ms,
            )
        except SpoolFull:
            log.error("event lost to Chat's retry: spool full")
            raise WebhookError(Failure.SPOOL_FULL) from None
        except SpoolUnavailable as error:
            log.error("cannot spool event: %s", error)
            raise WebhookError(Failure.SPOOL_UNAVAILABLE) from None
        SPOOLED.labels(method).inc()
        log.warning("spooled %s because %s", method, cause)
        self._wake_replayer()
        return ok("spooled")


def record_request(webhook: Webhook, max_event_ahead_s: int) -> RecordRequest | None:
    """The Record* request for a group-state webhook; None for one that records nothing.

    An EventTime more than `max_event_ahead_s` after the webhook was received is refused.
    """
    body = webhook.body
    group_id = payload.text(body, "GroupId")
    if not group_id:
        raise WebhookError(Failure.INVALID_FIELD, "GroupId is required")
    event_time_ms = payload.event_time_ms(body)
    if event_time_ms is None:
        event_time_ms = webhook.received_ms
    ahead_ms = event_time_ms - webhook.received_ms
    if ahead_ms > max_event_ahead_s * 1000:
        raise WebhookError(
            Failure.INVALID_FIELD,
            f"EventTime is {ahead_ms / 1000:g} s ahead of the adapter's clock; at most"
            f" {max_event_ahead_s} s is accepted (CHAT_POLICY_MAX_EVENT_AHEAD_S)",
        )
    event_time = timestamp_from_ms(event_time_ms)
    texts, member_lists = _CHECKED_FIELDS[webhook.command]
    for field in texts:
        payload.text(body, field)
    for field in member_lists:
        payload.member_accounts(body, field)
    request: RecordRequest
    if webhook.command == GROUP_FULL:
        request = pb.RecordGroupFullRequest(topic_id=payload.text(body, "TopicId"))
    elif webhook.command == MEMBER_EXIT:
        request = pb.RecordMemberExitRequest()
    elif webhook.command == GROUP_DESTROYED:
        request = pb.RecordGroupDestroyedRequest()
    else:
        return None
    request.sdk_app_id = webhook.sdk_app_id
    request.group_id = group_id
    request.event_time.CopyFrom(event_time)
    return request


def answers_health_checks(
    client: PolicyClient, timeout_s: float
) -> Callable[[], Coroutine[Any, Any, bool]]:
    """The replayer's outage test: whether the service answers SERVING to a health check."""

    async def answers() -> bool:
        try:
            return await client.check_health(timeout_s) == "SERVING"
        except grpc.RpcError:
            return False

    return answers


# The span of a spooled event's delivery (tracing on): the root of a trace of its own, whose
# Record* call the policy service continues.
REPLAY_SPAN = "spool replay"


def replay_to(
    client: PolicyClient, tracer: Tracer | None = None
) -> Callable[[SpooledEvent], Coroutine[Any, Any, None]]:
    """The replayer's delivery: rebuild the spooled request and record it; with a tracer,
    inside a span of its own (REPLAY_SPAN) carrying the method and the webhook's request ID."""

    async def deliver(event: SpooledEvent) -> None:
        request_type = SPOOLED_REQUESTS.get(event.method)
        if request_type is None:
            SET_ASIDE.labels("other").inc()
            raise Rejected(f"unknown method {event.method!r}")
        request = request_type.FromString(event.request)
        try:
            await client.record(request, event.request_id)
        except grpc.RpcError as error:
            failure = grpc_failure(error)
            if failure.failure is Failure.POLICY_REJECTED:
                SET_ASIDE.labels(event.method).inc()
                raise Rejected(str(failure)) from None
            raise RetryLater(str(failure)) from None
        REPLAYED.labels(event.method).inc()

    if tracer is None:
        return deliver

    async def traced(event: SpooledEvent) -> None:
        attributes = {"rpc.method": event.method, "chat_policy.request_id": event.request_id}
        with tracer.start_as_current_span(REPLAY_SPAN, attributes=attributes):
            await deliver(event)

    return traced
