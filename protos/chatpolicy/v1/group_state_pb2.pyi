import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GroupEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GROUP_EVENT_KIND_UNSPECIFIED: _ClassVar[GroupEventKind]
    GROUP_EVENT_KIND_FULL: _ClassVar[GroupEventKind]
    GROUP_EVENT_KIND_MEMBER_EXIT: _ClassVar[GroupEventKind]
    GROUP_EVENT_KIND_DESTROYED: _ClassVar[GroupEventKind]
    GROUP_EVENT_KIND_CLEARED: _ClassVar[GroupEventKind]
GROUP_EVENT_KIND_UNSPECIFIED: GroupEventKind
GROUP_EVENT_KIND_FULL: GroupEventKind
GROUP_EVENT_KIND_MEMBER_EXIT: GroupEventKind
GROUP_EVENT_KIND_DESTROYED: GroupEventKind
GROUP_EVENT_KIND_CLEARED: GroupEventKind

class GroupState(_message.Message):
    __slots__ = ("sdk_app_id", "group_id", "topic_id", "full", "full_since", "last_event_time", "full_event_count", "destroyed", "last_event_kind", "clear_reason")
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    FULL_SINCE_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    FULL_EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    DESTROYED_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_KIND_FIELD_NUMBER: _ClassVar[int]
    CLEAR_REASON_FIELD_NUMBER: _ClassVar[int]
    sdk_app_id: int
    group_id: str
    topic_id: str
    full: bool
    full_since: _timestamp_pb2.Timestamp
    last_event_time: _timestamp_pb2.Timestamp
    full_event_count: int
    destroyed: bool
    last_event_kind: GroupEventKind
    clear_reason: str
    def __init__(self, sdk_app_id: _Optional[int] = ..., group_id: _Optional[str] = ..., topic_id: _Optional[str] = ..., full: _Optional[bool] = ..., full_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., full_event_count: _Optional[int] = ..., destroyed: _Optional[bool] = ..., last_event_kind: _Optional[_Union[GroupEventKind, str]] = ..., clear_reason: _Optional[str] = ...) -> None: ...

class GroupRef(_message.Message):
    __slots__ = ("sdk_app_id", "group_id", "topic_id")
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    sdk_app_id: int
    group_id: str
    topic_id: str
    def __init__(self, sdk_app_id: _Optional[int] = ..., group_id: _Optional[str] = ..., topic_id: _Optional[str] = ...) -> None: ...
