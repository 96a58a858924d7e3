"""GroupStateService: translates protobuf to the group-state store and back.

Every ClearGroupFull, and every Record* call from a caller that does not relay Chat's
webhooks, is audited (policy_service.audit.trail): a change is stored with its audit event,
in one transaction; a call that fails after reaching its method appends an event with the
status it was answered with.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2

from chatpolicy.v1 import group_state_pb2, group_state_service_pb2, group_state_service_pb2_grpc
from policy_service.access.caller import current_caller
from policy_service.api.page_tokens import (
    FullGroupsFilter,
    decode_page_token,
    encode_page_token,
    page_size_from_request,
)
from policy_service.api.status import maps_errors, maps_stream_errors, status_for
from policy_service.api.timestamps import milliseconds, timestamp
from policy_service.audit.audit_log import AuditEvent, with_outcome
from policy_service.audit.trail import AuditTrail
from policy_service.clock import now_ms
from policy_service.errors import GroupNotFound, InvalidArgument, TooManyWatchers
from policy_service.groups.change_feed import ChangeFeed
from policy_service.groups.change_log import StateChange
from policy_service.groups.state import EventKind, GroupEvent, GroupKey, GroupState, RecordOutcome
from policy_service.groups.store import FullGroupsCursor, GroupStateStore

if TYPE_CHECKING:
    from policy_service.api.rpc_spans import OperationSpans

pb = group_state_service_pb2

# The most groups one BatchGetGroupStates may name.
MAX_BATCH_GET = 1000
# The full method names audit events carry as their action.
_SERVICE_NAME = group_state_service_pb2.DESCRIPTOR.services_by_name["GroupStateService"].full_name
CLEAR_GROUP_FULL = f"/{_SERVICE_NAME}/ClearGroupFull"

_EVENT_KINDS = {
    EventKind.FULL: group_state_pb2.GROUP_EVENT_KIND_FULL,
    EventKind.MEMBER_EXIT: group_state_pb2.GROUP_EVENT_KIND_MEMBER_EXIT,
    EventKind.DESTROYED: group_state_pb2.GROUP_EVENT_KIND_DESTROYED,
    EventKind.CLEARED: group_state_pb2.GROUP_EVENT_KIND_CLEARED,
}


class GroupStateServicer(group_state_service_pb2_grpc.GroupStateServiceServicer):
    """Serves group-full state from a GroupStateStore, and its changes from a ChangeFeed;
    with `spans` (tracing on), each store write is a span."""

    def __init__(
        self,
        store: GroupStateStore,
        feed: ChangeFeed,
        trail: AuditTrail,
        *,
        watch_heartbeat_s: float,
        watch_max_streams: int,
        max_event_ahead_s: float,
        spans: OperationSpans | None = None,
    ) -> None:
        self._spans = spans
        self._store = store
        self._feed = feed
        self._trail = trail
        self._max_event_ahead_s = max_event_ahead_s
        self._heartbeat_s = watch_heartbeat_s
        # Watch streams open now, and the most this replica serves (the servicer runs on one
        # event loop: a plain count).
        self._watching = 0
        self._max_watching = watch_max_streams

    @maps_errors
    async def RecordGroupFull(
        self, request: pb.RecordGroupFullRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordGroupFullResponse:
        """Apply one group-full event."""
        outcome = await self._record("RecordGroupFull", request, EventKind.FULL)
        return pb.RecordGroupFullResponse(
            group_state=_group_state_pb(outcome.state), applied=outcome.applied
        )

    @maps_errors
    async def RecordMemberExit(
        self, request: pb.RecordMemberExitRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordMemberExitResponse:
        """Apply one member-exit event to the group and its topics."""
        outcome = await self._record("RecordMemberExit", request, EventKind.MEMBER_EXIT)
        return pb.RecordMemberExitResponse(
            group_state=_group_state_pb(outcome.state), applied=outcome.applied
        )

    @maps_errors
    async def RecordGroupDestroyed(
        self, request: pb.RecordGroupDestroyedRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordGroupDestroyedResponse:
        """Apply one group-destroyed event to the group and its topics."""
        outcome = await self._record("RecordGroupDestroyed", request, EventKind.DESTROYED)
        return pb.RecordGroupDestroyedResponse(
            group_state=_group_state_pb(outcome.state), applied=outcome.applied
        )

    @maps_errors
    async def ClearGroupFull(
        self, request: pb.ClearGroupFullRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClearGroupFullResponse:
        """Apply one clear, stamped now unless the request says when; always audited."""

        def cleared() -> GroupEvent:
            key = _key(request)
            clear_ms = (
                self._event_time_ms("clear_time", request.clear_time)
                if request.HasField("clear_time")
                else now_ms()
            )
            return GroupEvent.cleared(key, clear_ms, request.reason)

        outcome = await self._audited(CLEAR_GROUP_FULL, request, cleared, request.reason)
        return pb.ClearGroupFullResponse(
            group_state=_group_state_pb(outcome.state), applied=outcome.applied
        )

    async def _record(self, method: str, request: _EventRequest, kind: EventKind) -> RecordOutcome:
        """Apply a webhook's event; audited unless the caller relays Chat."""

        def event() -> GroupEvent:
            key = _key(request)
            if not request.HasField("event_time"):
                raise InvalidArgument("event_time", "is required")
            return GroupEvent(key, kind, self._event_time_ms("event_time", request.event_time))

        if current_caller().relays_chat:
            return await self._stored(event())
        return await self._audited(f"/{_SERVICE_NAME}/{method}", request, event, "")

    async def _audited(
        self,
        action: str,
        request: _EventRequest | pb.ClearGroupFullRequest,
        event_of: Callable[[], GroupEvent],
        reason: str,
    ) -> RecordOutcome:
        """Build the request's event (validating it) and apply it with its audit event; if
        either fails, append an audit event with the status the call is answered with."""
        about = GroupKey(request.sdk_app_id, request.group_id, getattr(request, "topic_id", ""))
        try:
            event = event_of()
            audit = self._trail.event(action, about, reason=reason)
            outcome = await self._stored(event, audit)
        except Exception as error:
            status = status_for(error)
            await self._trail.failed(
                action,
                about,
                reason=reason,
                result=code_pb2.Code.Name(status.code),
                detail=status.message,
            )
            raise
        self._trail.stored(with_outcome(audit, event, outcome))
        return outcome

    async def _stored(self, event: GroupEvent, audit: AuditEvent | None = None) -> RecordOutcome:
        """Apply `event` in the store (with its audit event, if any)."""
        recording = self._store.record(event, audit)
        if self._spans is None:
            return await recording
        return await self._spans.record(recording, event, audited=audit is not None)

    def _event_time_ms(self, field: str, stamp: Timestamp) -> int:
        """The event's time; InvalidArgument naming `field` if it is further ahead of this
        service's clock than max_event_ahead_s: the newest event decides, so an event dated
        in the future would keep the group's state until then."""
        event_time_ms = milliseconds(field, stamp)
        ahead_s = (event_time_ms - now_ms()) / 1000
        if ahead_s > self._max_event_ahead_s:
            raise InvalidArgument(
                field,
                f"is {ahead_s:.0f} s ahead of this service's clock"
                f" (limit CHAT_POLICY_MAX_EVENT_AHEAD_S={self._max_event_ahead_s:g})",
            )
        return event_time_ms

    @maps_errors
    async def GetGroupState(
        self, request: pb.GetGroupStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetGroupStateResponse:
        """Return one group's state or NOT_FOUND."""
        key = _key(request)
        state = await self._store.get(key)
        if state is None:
            raise GroupNotFound(key.sdk_app_id, key.group_id, key.topic_id)
        return pb.GetGroupStateResponse(group_state=_group_state_pb(state))

    @maps_errors
    async def BatchGetGroupStates(
        self, request: pb.BatchGetGroupStatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchGetGroupStatesResponse:
        """Return the known states of many groups, and which are unknown."""
        if not 0 < len(request.groups) <= MAX_BATCH_GET:
            raise InvalidArgument("groups", f"must name 1 to {MAX_BATCH_GET} groups")
        keys = list(
            dict.fromkeys(_batch_key(index, ref) for index, ref in enumerate(request.groups))
        )
        found = await self._store.get_many(keys)
        return pb.BatchGetGroupStatesResponse(
            group_states=[_group_state_pb(found[key]) for key in keys if key in found],
            missing=[_group_ref_pb(key) for key in keys if key not in found],
        )

    @maps_errors
    async def CountGroupStates(
        self, request: pb.CountGroupStatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountGroupStatesResponse:
        """Count tracked, full and destroyed groups."""
        counts = await self._store.count(request.sdk_app_id)
        return pb.CountGroupStatesResponse(
            tracked_count=counts.tracked,
            full_count=counts.full,
            destroyed_count=counts.destroyed,
        )

    @maps_errors
    async def ListFullGroups(
        self, request: pb.ListFullGroupsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListFullGroupsResponse:
        """Return one keyset page of full groups."""
        limit = page_size_from_request(request.page_size)
        if request.min_full_duration.ToNanoseconds() < 0:
            raise InvalidArgument("min_full_duration", "must not be negative")
        min_full_ms = request.min_full_duration.ToMilliseconds()
        list_filter = FullGroupsFilter(request.sdk_app_id, min_full_ms)
        after = decode_page_token(request.page_token, list_filter)
        full_since_at_most = now_ms() - min_full_ms if min_full_ms else None
        # One extra row tells whether a next page exists without a second query.
        states = await self._store.list_full(
            request.sdk_app_id, limit + 1, after, full_since_at_most
        )
        page, more = states[:limit], len(states) > limit
        token = encode_page_token(list_filter, FullGroupsCursor.after(page[-1])) if more else ""
        return pb.ListFullGroupsResponse(
            group_states=[_group_state_pb(state) for state in page], next_page_token=token
        )

    @maps_stream_errors
    async def WatchGroupStates(
        self, request: pb.WatchGroupStatesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchGroupStatesResponse]:
        """Stream changes after request.after_sequence (unset: from now) until cancelled.

        An async generator: while it waits for changes it holds no thread, only its task.
        When the client goes away grpc cancels the task, which ends the wait at once.
        """
        if self._watching >= self._max_watching:
            raise TooManyWatchers(
                "this replica serves as many watch streams as CHAT_POLICY_WATCH_MAX_STREAMS allows"
            )
        self._watching += 1
        try:
            batches = self._feed.watch(
                request.after_sequence if request.HasField("after_sequence") else None,
                request.sdk_app_id,
                self._heartbeat_s,
            )
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    yield pb.WatchGroupStatesResponse(
                        changes=[_change_pb(change) for change in batch.changes],
                        sequence=batch.sequence,
                    )
        finally:
            self._watching -= 1


_EventRequest = (
    pb.RecordGroupFullRequest | pb.RecordMemberExitRequest | pb.RecordGroupDestroyedRequest
)
_KeyedRequest = (
    _EventRequest | pb.ClearGroupFullRequest | pb.GetGroupStateRequest | group_state_pb2.GroupRef
)


def _key(request: _KeyedRequest) -> GroupKey:
    topic_id = getattr(request, "topic_id", "")
    key = GroupKey(request.sdk_app_id, request.group_id, topic_id)
    key.validate()
    return key


def _batch_key(index: int, ref: group_state_pb2.GroupRef) -> GroupKey:
    """The key of request.groups[index]; an invalid one names its place in the request."""
    try:
        return _key(ref)
    except InvalidArgument as error:
        raise InvalidArgument(f"groups[{index}].{error.field}", error.detail) from None


def _group_state_pb(state: GroupState) -> group_state_pb2.GroupState:
    message = group_state_pb2.GroupState(
        sdk_app_id=state.key.sdk_app_id,
        group_id=state.key.group_id,
        topic_id=state.key.topic_id,
        full=state.full,
        last_event_time=timestamp(state.last_event_time_ms),
        full_event_count=state.full_event_count,
        destroyed=state.destroyed,
        last_event_kind=_EVENT_KINDS[state.last_event_kind],
        clear_reason=state.clear_reason,
    )
    if state.full_since_ms is not None:
        message.full_since.CopyFrom(timestamp(state.full_since_ms))
    return message


def _group_ref_pb(key: GroupKey) -> group_state_pb2.GroupRef:
    return group_state_pb2.GroupRef(
        sdk_app_id=key.sdk_app_id, group_id=key.group_id, topic_id=key.topic_id
    )


def _change_pb(change: StateChange) -> group_state_service_pb2.GroupStateChange:
    return group_state_service_pb2.GroupStateChange(
        sequence=change.sequence,
        group_state=_group_state_pb(change.state),
        change_time=timestamp(change.change_time_ms),
        forgotten=change.forgotten,
    )
