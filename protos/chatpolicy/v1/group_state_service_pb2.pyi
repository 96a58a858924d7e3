import datetime

from chatpolicy.v1 import group_state_pb2 as _group_state_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecordGroupFullRequest(_message.Message):
    __slots__ = ("sdk_app_id", "group_id", "topic_id", "event_time")
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    sdk_app_id: int
    group_id: str
    topic_id: str
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, sdk_app_id: _Optional[int] = ..., group_id: _Optional[str] = ..., topic_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordGroupFullResponse(_message.Message):
    __slots__ = ("group_state", "applied")
    GROUP_STATE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    group_state: _group_state_pb2.GroupState
    applied: bool
    def __init__(self, group_state: _Optional[_Union[_group_state_pb2.GroupState, _Mapping]] = ..., applied: _Optional[bool] = ...) -> None: ...

class RecordMemberExitRequest(_message.Message):
    __slots__ = ("sdk_app_id", "group_id", "event_time")
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    sdk_app_id: int
    group_id: str
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, sdk_app_id: _Optional[int] = ..., group_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordMemberExitResponse(_message.Message):
    __slots__ = ("group_state", "applied")
    GROUP_STATE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    group_state: _group_state_pb2.GroupState
    applied: bool
    def __init__(self, group_state: _Optional[_Union[_group_state_pb2.GroupState, _Mapping]] = ..., applied: _Optional[bool] = ...) -> None: ...

class RecordGroupDestroyedRequest(_message.Message):
    __slots__ = ("sdk_app_id", "group_id", "event_time")
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    sdk_app_id: int
    group_id: str
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, sdk_app_id: _Optional[int] = ..., group_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordGroupDestroyedResponse(_message.Message):
    __slots__ = ("group_state", "applied")
    GROUP_STATE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    group_state: _group_state_pb2.GroupState
    applied: bool
    def __init__(self, group_state: _Optional[_Union[_group_state_pb2.GroupState, _Mapping]] = ..., applied: _Optional[bool] = ...) -> None: ...

class ClearGroupFullRequest(_message.Message):
    __slots__ = ("sdk_app_id", "group_id", "topic_id", "reason", "clear_time")
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CLEAR_TIME_FIELD_NUMBER: _ClassVar[int]
    sdk_app_id: int
    group_id: str
    topic_id: str
    reason: str
    clear_time: _timestamp_pb2.Timestamp
    def __init__(self, sdk_app_id: _Optional[int] = ..., group_id: _Optional[str] = ..., topic_id: _Optional[str] = ..., reason: _Optional[str] = ..., clear_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ClearGroupFullResponse(_message.Message):
    __slots__ = ("group_state", "applied")
    GROUP_STATE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    group_state: _group_state_pb2.GroupState
    applied: bool
    def __init__(self, group_state: _Optional[_Union[_group_state_pb2.GroupState, _Mapping]] = ..., applied: _Optional[bool] = ...) -> None: ...

class GetGroupStateRequest(_message.Message):
    __slots__ = ("sdk_app_id", "group_id", "topic_id")
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    sdk_app_id: int
    group_id: str
    topic_id: str
    def __init__(self, sdk_app_id: _Optional[int] = ..., group_id: _Optional[str] = ..., topic_id: _Optional[str] = ...) -> None: ...

class GetGroupStateResponse(_message.Message):
    __slots__ = ("group_state",)
    GROUP_STATE_FIELD_NUMBER: _ClassVar[int]
    group_state: _group_state_pb2.GroupState
    def __init__(self, group_state: _Optional[_Union[_group_state_pb2.GroupState, _Mapping]] = ...) -> None: ...

class BatchGetGroupStatesRequest(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[_group_state_pb2.GroupRef]
    def __init__(self, groups: _Optional[_Iterable[_Union[_group_state_pb2.GroupRef, _Mapping]]] = ...) -> None: ...

class BatchGetGroupStatesResponse(_message.Message):
    __slots__ = ("group_states", "missing")
    GROUP_STATES_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    group_states: _containers.RepeatedCompositeFieldContainer[_group_state_pb2.GroupState]
    missing: _containers.RepeatedCompositeFieldContainer[_group_state_pb2.GroupRef]
    def __init__(self, group_states: _Optional[_Iterable[_Union[_group_state_pb2.GroupState, _Mapping]]] = ..., missing: _Optional[_Iterable[_Union[_group_state_pb2.GroupRef, _Mapping]]] = ...) -> None: ...

class CountGroupStatesRequest(_message.Message):
    __slots__ = ("sdk_app_id",)
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    sdk_app_id: int
    def __init__(self, sdk_app_id: _Optional[int] = ...) -> None: ...

class CountGroupStatesResponse(_message.Message):
    __slots__ = ("tracked_count", "full_count", "destroyed_count")
    TRACKED_COUNT_FIELD_NUMBER: _ClassVar[int]
    FULL_COUNT_FIELD_NUMBER: _ClassVar[int]
    DESTROYED_COUNT_FIELD_NUMBER: _ClassVar[int]
    tracked_count: int
    full_count: int
    destroyed_count: int
    def __init__(self, tracked_count: _Optional[int] = ..., full_count: _Optional[int] = ..., destroyed_count: _Optional[int] = ...) -> None: ...

class ListFullGroupsRequest(_message.Message):
    __slots__ = ("sdk_app_id", "page_size", "page_token", "min_full_duration")
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MIN_FULL_DURATION_FIELD_NUMBER: _ClassVar[int]
    sdk_app_id: int
    page_size: int
    page_token: str
    min_full_duration: _duration_pb2.Duration
    def __init__(self, sdk_app_id: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., min_full_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ListFullGroupsResponse(_message.Message):
    __slots__ = ("group_states", "next_page_token")
    GROUP_STATES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    group_states: _containers.RepeatedCompositeFieldContainer[_group_state_pb2.GroupState]
    next_page_token: str
    def __init__(self, group_states: _Optional[_Iterable[_Union[_group_state_pb2.GroupState, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchGroupStatesRequest(_message.Message):
    __slots__ = ("sdk_app_id", "after_sequence")
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    sdk_app_id: int
    after_sequence: int
    def __init__(self, sdk_app_id: _Optional[int] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchGroupStatesResponse(_message.Message):
    __slots__ = ("changes", "sequence")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[GroupStateChange]
    sequence: int
    def __init__(self, changes: _Optional[_Iterable[_Union[GroupStateChange, _Mapping]]] = ..., sequence: _Optional[int] = ...) -> None: ...

class GroupStateChange(_message.Message):
    __slots__ = ("sequence", "group_state", "change_time", "forgotten")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    GROUP_STATE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    group_state: _group_state_pb2.GroupState
    change_time: _timestamp_pb2.Timestamp
    forgotten: bool
    def __init__(self, sequence: _Optional[int] = ..., group_state: _Optional[_Union[_group_state_pb2.GroupState, _Mapping]] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., forgotten: _Optional[bool] = ...) -> None: ...
