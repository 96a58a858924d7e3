import datetime

from chatpolicy.v1 import group_state_pb2 as _group_state_pb2
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

class ListFullGroupsRequest(_message.Message):
    __slots__ = ("sdk_app_id", "page_size", "page_token")
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sdk_app_id: int
    page_size: int
    page_token: str
    def __init__(self, sdk_app_id: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFullGroupsResponse(_message.Message):
    __slots__ = ("group_states", "next_page_token")
    GROUP_STATES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    group_states: _containers.RepeatedCompositeFieldContainer[_group_state_pb2.GroupState]
    next_page_token: str
    def __init__(self, group_states: _Optional[_Iterable[_Union[_group_state_pb2.GroupState, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
