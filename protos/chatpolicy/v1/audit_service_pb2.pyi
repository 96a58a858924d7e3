import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditEvent(_message.Message):
    __slots__ = ("audit_id", "occurred_at", "caller", "action", "sdk_app_id", "group_id", "topic_id", "reason", "result", "detail", "request_id", "replica")
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    audit_id: str
    occurred_at: _timestamp_pb2.Timestamp
    caller: str
    action: str
    sdk_app_id: int
    group_id: str
    topic_id: str
    reason: str
    result: str
    detail: str
    request_id: str
    replica: str
    def __init__(self, audit_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., caller: _Optional[str] = ..., action: _Optional[str] = ..., sdk_app_id: _Optional[int] = ..., group_id: _Optional[str] = ..., topic_id: _Optional[str] = ..., reason: _Optional[str] = ..., result: _Optional[str] = ..., detail: _Optional[str] = ..., request_id: _Optional[str] = ..., replica: _Optional[str] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("caller", "action", "sdk_app_id", "group_id", "occurred_at_or_after", "occurred_at_or_before", "page_size", "page_token")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_OR_AFTER_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_OR_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    caller: str
    action: str
    sdk_app_id: int
    group_id: str
    occurred_at_or_after: _timestamp_pb2.Timestamp
    occurred_at_or_before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, caller: _Optional[str] = ..., action: _Optional[str] = ..., sdk_app_id: _Optional[int] = ..., group_id: _Optional[str] = ..., occurred_at_or_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., occurred_at_or_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
