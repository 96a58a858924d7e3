"""Creation decisions as database rows, and the list query, the same in both stores.

A decision row has DecisionRecord's fields as columns, in its order (DECISION_COLUMNS);
shadow_rule_ids is a JSON array of strings in a text column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson

from policy_service.engine.decision_log import DecisionCursor, DecisionQuery, DecisionRecord
from policy_service.stores.newest_first import newest_first_page

DECISION_COLUMNS = (
    "decision_id, decided_at_ms, sdk_app_id, operator_account, effect, error_code, error_info,"
    " rule_id, reason, policy_revision, shadow_rule_ids, latency_us, request_json, caller"
)

DecisionRow = tuple[str, int, int, str, str, int, str, str, str, str, str, int, str, str]


def row_from_decision(record: DecisionRecord) -> DecisionRow:
    """The record's columns."""
    return (
        record.decision_id,
        record.decided_at_ms,
        record.sdk_app_id,
        record.operator_account,
        record.effect,
        record.error_code,
        record.error_info,
        record.rule_id,
        record.reason,
        record.policy_revision,
        orjson.dumps(record.shadow_rule_ids).decode(),
        record.latency_us,
        record.request_json,
        record.caller,
    )


def decision_from_row(row: Sequence[Any]) -> DecisionRecord:
    """The record a decision row holds."""
    (
        decision_id,
        decided_at_ms,
        sdk_app_id,
        operator_account,
        effect,
        error_code,
        error_info,
        rule_id,
        reason,
        policy_revision,
        shadow_rule_ids,
        latency_us,
        request_json,
        caller,
    ) = row
    return DecisionRecord(
        decision_id=decision_id,
        decided_at_ms=decided_at_ms,
        sdk_app_id=sdk_app_id,
        operator_account=operator_account,
        effect=effect,
        error_code=error_code,
        error_info=error_info,
        rule_id=rule_id,
        reason=reason,
        policy_revision=policy_revision,
        shadow_rule_ids=tuple(json.loads(shadow_rule_ids)),
        latency_us=latency_us,
        request_json=request_json,
        caller=caller,
    )


def insert_decisions(placeholder: str) -> str:
    """The statement inserting one decision row, skipping a decision_id already stored."""
    values = ", ".join([placeholder] * 14)
    return (
        f"INSERT INTO creation_decision ({DECISION_COLUMNS}) VALUES ({values})"
        " ON CONFLICT (decision_id) DO NOTHING"
    )


def list_decisions_query(
    query: DecisionQuery, limit: int, after: DecisionCursor | None, placeholder: str
) -> tuple[str, list[object]]:
    """The SQL and parameters of one page of list_decisions, newest first.

    The order (decided_at_ms, decision_id) descending is the index creation_decision_time,
    read backwards; with sdk_app_id, operator_account or caller set, that column is an
    equality followed by the same order: creation_decision_app_time,
    creation_decision_operator_time or creation_decision_caller_time.
    """
    return newest_first_page(
        "creation_decision",
        DECISION_COLUMNS,
        ("decided_at_ms", "decision_id"),
        (
            ("sdk_app_id", query.sdk_app_id),
            ("operator_account", query.operator_account),
            ("effect", query.effect),
            ("rule_id", query.rule_id),
            ("decision_id", query.decision_id),
            ("caller", query.caller),
        ),
        query.decided_at_least_ms,
        query.decided_at_most_ms,
        None if after is None else (after.decided_at_ms, after.decision_id),
        limit,
        placeholder,
    )
