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

class RuleResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RULE_RESULT_UNSPECIFIED: _ClassVar[RuleResult]
    RULE_RESULT_NOT_APPLICABLE: _ClassVar[RuleResult]
    RULE_RESULT_PASSED: _ClassVar[RuleResult]
    RULE_RESULT_DECIDED: _ClassVar[RuleResult]
    RULE_RESULT_SHADOW: _ClassVar[RuleResult]
    RULE_RESULT_ERROR: _ClassVar[RuleResult]
DECISION_UNSPECIFIED: Decision
DECISION_ALLOW: Decision
DECISION_DENY: Decision
RULE_RESULT_UNSPECIFIED: RuleResult
RULE_RESULT_NOT_APPLICABLE: RuleResult
RULE_RESULT_PASSED: RuleResult
RULE_RESULT_DECIDED: RuleResult
RULE_RESULT_SHADOW: RuleResult
RULE_RESULT_ERROR: RuleResult

class CheckGroupCreationRequest(_message.Message):
    __slots__ = ("sdk_app_id", "operator_account", "owner_account", "group_type", "name", "create_group_num", "member_accounts", "event_time", "client_ip", "opt_platform", "explain", "dry_run")
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
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
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
    explain: bool
    dry_run: bool
    def __init__(self, sdk_app_id: _Optional[int] = ..., operator_account: _Optional[str] = ..., owner_account: _Optional[str] = ..., group_type: _Optional[str] = ..., name: _Optional[str] = ..., create_group_num: _Optional[int] = ..., member_accounts: _Optional[_Iterable[str]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., client_ip: _Optional[str] = ..., opt_platform: _Optional[str] = ..., explain: _Optional[bool] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class RuleEvaluation(_message.Message):
    __slots__ = ("rule_id", "kind", "result", "effect", "reason")
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    kind: str
    result: RuleResult
    effect: Decision
    reason: str
    def __init__(self, rule_id: _Optional[str] = ..., kind: _Optional[str] = ..., result: _Optional[_Union[RuleResult, str]] = ..., effect: _Optional[_Union[Decision, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class CheckGroupCreationResponse(_message.Message):
    __slots__ = ("decision", "error_code", "error_info", "rule_id", "policy_revision", "decision_id", "reason", "shadow_rule_ids", "error_rule_ids", "evaluations", "dry_run")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_INFO_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SHADOW_RULE_IDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RULE_IDS_FIELD_NUMBER: _ClassVar[int]
    EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    error_code: int
    error_info: str
    rule_id: str
    policy_revision: str
    decision_id: str
    reason: str
    shadow_rule_ids: _containers.RepeatedScalarFieldContainer[str]
    error_rule_ids: _containers.RepeatedScalarFieldContainer[str]
    evaluations: _containers.RepeatedCompositeFieldContainer[RuleEvaluation]
    dry_run: bool
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., error_code: _Optional[int] = ..., error_info: _Optional[str] = ..., rule_id: _Optional[str] = ..., policy_revision: _Optional[str] = ..., decision_id: _Optional[str] = ..., reason: _Optional[str] = ..., shadow_rule_ids: _Optional[_Iterable[str]] = ..., error_rule_ids: _Optional[_Iterable[str]] = ..., evaluations: _Optional[_Iterable[_Union[RuleEvaluation, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("policy_revision", "source", "loaded_at", "rule_ids", "last_reload_error", "last_reload_at", "rule_stats")
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    RULE_IDS_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_AT_FIELD_NUMBER: _ClassVar[int]
    RULE_STATS_FIELD_NUMBER: _ClassVar[int]
    policy_revision: str
    source: str
    loaded_at: _timestamp_pb2.Timestamp
    rule_ids: _containers.RepeatedScalarFieldContainer[str]
    last_reload_error: str
    last_reload_at: _timestamp_pb2.Timestamp
    rule_stats: _containers.RepeatedCompositeFieldContainer[RuleStats]
    def __init__(self, policy_revision: _Optional[str] = ..., source: _Optional[str] = ..., loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rule_ids: _Optional[_Iterable[str]] = ..., last_reload_error: _Optional[str] = ..., last_reload_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rule_stats: _Optional[_Iterable[_Union[RuleStats, _Mapping]]] = ...) -> None: ...

class RuleStats(_message.Message):
    __slots__ = ("rule_id", "decided", "shadow_hits", "errors")
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    DECIDED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_HITS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    decided: int
    shadow_hits: int
    errors: int
    def __init__(self, rule_id: _Optional[str] = ..., decided: _Optional[int] = ..., shadow_hits: _Optional[int] = ..., errors: _Optional[int] = ...) -> None: ...

class DecisionRecord(_message.Message):
    __slots__ = ("decision_id", "decided_at", "request", "decision", "error_code", "error_info", "rule_id", "reason", "policy_revision", "shadow_rule_ids", "latency_us", "caller")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_INFO_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_RULE_IDS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    decided_at: _timestamp_pb2.Timestamp
    request: CheckGroupCreationRequest
    decision: Decision
    error_code: int
    error_info: str
    rule_id: str
    reason: str
    policy_revision: str
    shadow_rule_ids: _containers.RepeatedScalarFieldContainer[str]
    latency_us: int
    caller: str
    def __init__(self, decision_id: _Optional[str] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request: _Optional[_Union[CheckGroupCreationRequest, _Mapping]] = ..., decision: _Optional[_Union[Decision, str]] = ..., error_code: _Optional[int] = ..., error_info: _Optional[str] = ..., rule_id: _Optional[str] = ..., reason: _Optional[str] = ..., policy_revision: _Optional[str] = ..., shadow_rule_ids: _Optional[_Iterable[str]] = ..., latency_us: _Optional[int] = ..., caller: _Optional[str] = ...) -> None: ...

class ListDecisionsRequest(_message.Message):
    __slots__ = ("sdk_app_id", "operator_account", "decision", "rule_id", "decision_id", "decided_at_or_after", "decided_at_or_before", "page_size", "page_token", "caller")
    SDK_APP_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_OR_AFTER_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_OR_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    sdk_app_id: int
    operator_account: str
    decision: Decision
    rule_id: str
    decision_id: str
    decided_at_or_after: _timestamp_pb2.Timestamp
    decided_at_or_before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    caller: str
    def __init__(self, sdk_app_id: _Optional[int] = ..., operator_account: _Optional[str] = ..., decision: _Optional[_Union[Decision, str]] = ..., rule_id: _Optional[str] = ..., decision_id: _Optional[str] = ..., decided_at_or_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decided_at_or_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., caller: _Optional[str] = ...) -> None: ...

class ListDecisionsResponse(_message.Message):
    __slots__ = ("decisions", "next_page_token")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[DecisionRecord]
    next_page_token: str
    def __init__(self, decisions: _Optional[_Iterable[_Union[DecisionRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
