import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_ALLOW: _ClassVar[Decision]
    DECISION_DENY: _ClassVar[Decision]
DECISION_UNSPECIFIED: Decision
DECISION_ALLOW: Decision
DECISION_DENY: Decision

class CheckGroupCreationRequest(_message.Message):
    __slots__ = ("sdk_app_id", "operator_account", "owner_account", "group_type", "name", "create_group_num", "member_accounts", "event_time", "client_ip", "opt_platform")
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    OWNER_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    GROUP_TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_GROUP_NUM_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    OPT_PLATFORM_FIELD_NUMBER: _ClassVar[int]
    sdk_app_id: int
    operator_account: str
    owner_account: str
    group_type: str
    name: str
    create_group_num: int
    member_accounts: _containers.RepeatedScalarFieldContainer[str]
    event_time: _timestamp_pb2.Timestamp
    client_ip: str
    opt_platform: str
    def __init__(self, sdk_app_id: _Optional[int] = ..., operator_account: _Optional[str] = ..., owner_account: _Optional[str] = ..., group_type: _Optional[str] = ..., name: _Optional[str] = ..., create_group_num: _Optional[int] = ..., member_accounts: _Optional[_Iterable[str]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., client_ip: _Optional[str] = ..., opt_platform: _Optional[str] = ...) -> None: ...

class CheckGroupCreationResponse(_message.Message):
    __slots__ = ("decision", "error_code", "error_info", "rule_id", "policy_revision", "decision_id")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_INFO_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    error_code: int
    error_info: str
    rule_id: str
    policy_revision: str
    decision_id: str
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., error_code: _Optional[int] = ..., error_info: _Optional[str] = ..., rule_id: _Optional[str] = ..., policy_revision: _Optional[str] = ..., decision_id: _Optional[str] = ...) -> None: ...
