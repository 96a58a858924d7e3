"""The change log: every group-state change with its sequence, kept for a retention."""

from __future__ import annotations

from dataclasses import dataclass

from policy_service.groups.state import GroupState


@dataclass(frozen=True)
class StateChange:
    """One logged change: the state after it, or the last state of a forgotten group."""

    sequence: int
    state: GroupState
    change_time_ms: int
    forgotten: bool = False


@dataclass(frozen=True)
class ChangeLogBounds:
    """What the log can replay: every change after `pruned_through`, up to `head`.

    `head` is the newest sequence committed (`pruned_through` when the log is empty, 0 for a
    new store); `pruned_through` is the newest sequence retention removed (0 if none).
    """

    pruned_through: int
    head: int


@dataclass(frozen=True)
class PruneOutcome:
    """What one pruning pass removed."""

    forgotten: int
    changes_deleted: int
