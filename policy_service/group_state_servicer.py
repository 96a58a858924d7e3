"""GroupStateService: translates protobuf to the group-state store and back."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from chatpolicy.v1 import group_state_pb2, group_state_service_pb2, group_state_service_pb2_grpc
from policy_service.errors import GroupNotFound, InvalidArgument
from policy_service.group_state import EventKind, GroupEvent, GroupKey, GroupState, RecordOutcome
from policy_service.pagination import (
    FullGroupsCursor,
    decode_page_token,
    encode_page_token,
    page_size_from_request,
)
from policy_service.status import maps_errors
from policy_service.store import GroupStateStore

pb = group_state_service_pb2


class GroupStateServicer(group_state_service_pb2_grpc.GroupStateServiceServicer):
    """Serves group-full state from a GroupStateStore."""

    def __init__(self, store: GroupStateStore) -> None:
        self._store = store

    @maps_errors
    def RecordGroupFull(
        self, request: pb.RecordGroupFullRequest, context: grpc.ServicerContext
    ) -> pb.RecordGroupFullResponse:
        """Apply one group-full event."""
        outcome = self._record(request, EventKind.FULL)
        return pb.RecordGroupFullResponse(
            group_state=_group_state_pb(outcome.state), applied=outcome.applied
        )

    @maps_errors
    def RecordMemberExit(
        self, request: pb.RecordMemberExitRequest, context: grpc.ServicerContext
    ) -> pb.RecordMemberExitResponse:
        """Apply one member-exit event to the group and its topics."""
        outcome = self._record(request, EventKind.MEMBER_EXIT)
        return pb.RecordMemberExitResponse(
            group_state=_group_state_pb(outcome.state), applied=outcome.applied
        )

    @maps_errors
    def RecordGroupDestroyed(
        self, request: pb.RecordGroupDestroyedRequest, context: grpc.ServicerContext
    ) -> pb.RecordGroupDestroyedResponse:
        """Apply one group-destroyed event to the group and its topics."""
        outcome = self._record(request, EventKind.DESTROYED)
        return pb.RecordGroupDestroyedResponse(
            group_state=_group_state_pb(outcome.state), applied=outcome.applied
        )

    def _record(self, request: _EventRequest, kind: EventKind) -> RecordOutcome:
        key = _key(request)
        if not request.HasField("event_time"):
            raise InvalidArgument("event_time", "is required")
        return self._store.record(GroupEvent(key, kind, request.event_time.ToMilliseconds()))

    @maps_errors
    def GetGroupState(
        self, request: pb.GetGroupStateRequest, context: grpc.ServicerContext
    ) -> pb.GetGroupStateResponse:
        """Return one group's state or NOT_FOUND."""
        key = _key(request)
        state = self._store.get(key)
        if state is None:
            raise GroupNotFound(key.sdk_app_id, key.group_id, key.topic_id)
        return pb.GetGroupStateResponse(group_state=_group_state_pb(state))

    @maps_errors
    def ListFullGroups(
        self, request: pb.ListFullGroupsRequest, context: grpc.ServicerContext
    ) -> pb.ListFullGroupsResponse:
        """Return one keyset page of full groups."""
        limit = page_size_from_request(request.page_size)
        after = decode_page_token(request.page_token, request.sdk_app_id)
        # One extra row tells whether a next page exists without a second query.
        states = self._store.list_full(request.sdk_app_id, limit + 1, after)
        page, more = states[:limit], len(states) > limit
        token = (
            encode_page_token(request.sdk_app_id, FullGroupsCursor.after(page[-1])) if more else ""
        )
        return pb.ListFullGroupsResponse(
            group_states=[_group_state_pb(state) for state in page], next_page_token=token
        )


_EventRequest = (
    pb.RecordGroupFullRequest | pb.RecordMemberExitRequest | pb.RecordGroupDestroyedRequest
)


def _key(request: _EventRequest | pb.GetGroupStateRequest) -> GroupKey:
    topic_id = getattr(request, "topic_id", "")
    key = GroupKey(request.sdk_app_id, request.group_id, topic_id)
    key.validate()
    return key


def _group_state_pb(state: GroupState) -> group_state_pb2.GroupState:
    message = group_state_pb2.GroupState(
        sdk_app_id=state.key.sdk_app_id,
        group_id=state.key.group_id,
        topic_id=state.key.topic_id,
        full=state.full,
        last_event_time=_timestamp(state.last_event_time_ms),
        full_event_count=state.full_event_count,
        destroyed=state.destroyed,
    )
    if state.full_since_ms is not None:
        message.full_since.CopyFrom(_timestamp(state.full_since_ms))
    return message


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp
