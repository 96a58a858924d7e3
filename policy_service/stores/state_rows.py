"""Group states as database rows, the same columns in the same order in both stores.

A state row is (sdk_app_id, group_id, topic_id, full, full_since_ms, last_event_time_ms,
full_event_count, destroyed, last_event_kind, clear_reason); a change row is (sequence,
change_time_ms, *state row, forgotten). Booleans are read with bool(): SQLite returns 0/1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policy_service.groups.change_log import StateChange
from policy_service.groups.state import EventKind, GroupKey, GroupState

Row = Sequence[Any]
StateRow = tuple[int, str, str, bool, int | None, int, int, bool, int, str]


def key_tuple(key: GroupKey) -> tuple[int, str, str]:
    """The key's columns."""
    return (key.sdk_app_id, key.group_id, key.topic_id)


def row_from_state(state: GroupState) -> StateRow:
    """The state's columns."""
    return (
        *key_tuple(state.key),
        state.full,
        state.full_since_ms,
        state.last_event_time_ms,
        state.full_event_count,
        state.destroyed,
        int(state.last_event_kind),
        state.clear_reason,
    )


def state_from_row(row: Row) -> GroupState:
    """The state a state row holds."""
    app, group, topic, full, full_since_ms, last_event_time_ms, count, destroyed, kind, reason = row
    return GroupState(
        GroupKey(app, group, topic),
        bool(full),
        full_since_ms,
        last_event_time_ms,
        count,
        bool(destroyed),
        EventKind(kind),
        reason,
    )


def change_from_row(row: Row) -> StateChange:
    """The logged change a change row holds."""
    sequence, change_time_ms, *state, forgotten = row
    return StateChange(sequence, state_from_row(state), change_time_ms, bool(forgotten))
