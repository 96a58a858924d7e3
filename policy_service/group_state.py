"""Group-full state and how events change it: the rules, independent of any store."""

from __future__ import annotations

from dataclasses import dataclass, replace

from policy_service.errors import InvalidArgument


@dataclass(frozen=True, order=True)
class GroupKey:
    """One tracked group, or one topic of a Community group (topic_id empty otherwise)."""

    sdk_app_id: int
    group_id: str
    topic_id: str = ""

    def validate(self) -> None:
        """Raise InvalidArgument unless the key names a group."""
        if not 0 < self.sdk_app_id < 2**63:
            raise InvalidArgument("sdk_app_id", "is required and must be below 2**63")
        if not self.group_id:
            raise InvalidArgument("group_id", "is required")


@dataclass(frozen=True)
class GroupState:
    """What is known about one group; times are Unix milliseconds (Chat's EventTime unit)."""

    key: GroupKey
    full: bool
    full_since_ms: int | None
    last_event_time_ms: int
    full_event_count: int


def apply_full_event(current: GroupState | None, key: GroupKey, event_time_ms: int) -> GroupState:
    """Return the state after a Group.CallbackAfterGroupFull event at event_time_ms.

    The newest event decides: an event no newer than the last one applied (a repeated
    delivery, or an older event arriving late) returns `current` unchanged, so callers can
    tell "applied" by identity. A full event while already full counts one more refused join.
    """
    if current is None:
        return GroupState(key, True, event_time_ms, event_time_ms, 1)
    if event_time_ms <= current.last_event_time_ms:
        return current
    if current.full:
        return replace(
            current,
            last_event_time_ms=event_time_ms,
            full_event_count=current.full_event_count + 1,
        )
    return replace(
        current,
        full=True,
        full_since_ms=event_time_ms,
        last_event_time_ms=event_time_ms,
        full_event_count=1,
    )
