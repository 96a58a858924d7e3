"""Group-full state and how events change it: the rules, independent of any store."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace

from chat_policy_shared.field_limits import MAX_ID_BYTES, text_problem
from policy_service.errors import GroupNotFound, InvalidArgument

# ClearGroupFull's reason is for people: a sentence, not a document.
MAX_CLEAR_REASON_CHARS = 256


@dataclass(frozen=True, order=True)
class GroupKey:
    """One tracked group, or one topic of a Community group (topic_id empty otherwise)."""

    sdk_app_id: int
    group_id: str
    topic_id: str = ""

    def validate(self) -> None:
        """Raise InvalidArgument unless the key names a group with IDs every store can keep
        (field_limits: at most MAX_ID_BYTES of UTF-8, no NUL)."""
        if not 0 < self.sdk_app_id < 2**63:
            raise InvalidArgument("sdk_app_id", "is required and must be below 2**63")
        if not self.group_id:
            raise InvalidArgument("group_id", "is required")
        for field, value in (("group_id", self.group_id), ("topic_id", self.topic_id)):
            if problem := text_problem(value, MAX_ID_BYTES):
                raise InvalidArgument(field, problem)

    @property
    def group(self) -> GroupKey:
        """The key of the whole group this key belongs to (itself when it has no topic)."""
        return replace(self, topic_id="")


class EventKind(enum.IntEnum):
    """What happened to a group. At the same EventTime the larger value wins.

    Values are stored: never renumber. A full event loses a tie because Chat sends one for
    every refused join, so a new one always follows while the group is still full.
    """

    FULL = 1
    MEMBER_EXIT = 2
    DESTROYED = 3
    CLEARED = 4

    @property
    def whole_group(self) -> bool:
        """True when the event applies to the group and every topic of it."""
        return self in (EventKind.MEMBER_EXIT, EventKind.DESTROYED)


@dataclass(frozen=True, order=True)
class EventOrder:
    """Where an event stands in a group's history: EventTime first, then the kind."""

    event_time_ms: int
    kind: EventKind


@dataclass(frozen=True)
class GroupEvent:
    """One event for a group: a topic's key for a full topic, the group's key otherwise.

    `reason` is ClearGroupFull's, and empty for every other kind.
    """

    key: GroupKey
    kind: EventKind
    event_time_ms: int
    reason: str = ""

    @classmethod
    def cleared(cls, key: GroupKey, event_time_ms: int, reason: str) -> GroupEvent:
        """A ClearGroupFull event; InvalidArgument unless the reason is given and short."""
        if not reason.strip():
            raise InvalidArgument("reason", "is required")
        if len(reason) > MAX_CLEAR_REASON_CHARS:
            raise InvalidArgument("reason", f"must be at most {MAX_CLEAR_REASON_CHARS} characters")
        # Within that many characters only NUL can be refused (4 bytes of UTF-8 at most each).
        if problem := text_problem(reason, 4 * MAX_CLEAR_REASON_CHARS):
            raise InvalidArgument("reason", problem)
        return cls(key, EventKind.CLEARED, event_time_ms, reason)

    @property
    def order(self) -> EventOrder:
        """This event's place in the group's history."""
        return EventOrder(self.event_time_ms, self.kind)


@dataclass(frozen=True)
class GroupState:
    """What is known about one group; times are Unix milliseconds (Chat's EventTime unit)."""

    key: GroupKey
    full: bool
    full_since_ms: int | None
    last_event_time_ms: int
    full_event_count: int
    destroyed: bool = False
    last_event_kind: EventKind = EventKind.FULL
    clear_reason: str = ""

    @property
    def last_event(self) -> EventOrder:
        """The place of the newest event applied to this state."""
        return EventOrder(self.last_event_time_ms, self.last_event_kind)


def apply_event(current: GroupState | None, key: GroupKey, event: GroupEvent) -> GroupState | None:
    """Return the state of `key` after `event` (for a whole-group event, any topic of it).

    The newest event decides: an event that is not after the last one applied (a repeated
    delivery, or an older event arriving late) returns `current` unchanged, so callers can
    tell "applied" by identity. A full event while already full counts one more refused join.
    A member exit or destruction ends fullness; a destroyed group is kept, marked destroyed.
    A clear ends fullness too, and changes nothing when the group is not full.
    """
    if current is not None and event.order <= current.last_event:
        return current
    time_ms, kind = event.event_time_ms, event.kind
    if kind is EventKind.CLEARED:
        if current is None or not current.full:
            return current
        return replace(
            current,
            full=False,
            full_since_ms=None,
            last_event_time_ms=time_ms,
            last_event_kind=kind,
            full_event_count=0,
            clear_reason=event.reason,
        )
    if kind is EventKind.FULL:
        if current is not None and current.full:
            return replace(
                current,
                last_event_time_ms=time_ms,
                last_event_kind=kind,
                full_event_count=current.full_event_count + 1,
            )
        return GroupState(key, True, time_ms, time_ms, 1, False, kind)
    return GroupState(key, False, None, time_ms, 0, kind is EventKind.DESTROYED, kind)


def topic_baseline(group: GroupState | None, key: GroupKey) -> GroupState | None:
    """The state a topic without one of its own starts from, given its group's state.

    A member exit or destruction reaches every topic, including those not yet tracked, so a
    late full event for a topic cannot override a newer whole-group event.
    """
    if not key.topic_id or group is None or not group.last_event_kind.whole_group:
        return None
    return replace(group, key=key)


@dataclass(frozen=True)
class RecordOutcome:
    """What an event did: the state of its own key afterwards, and every state it changed."""

    state: GroupState
    changed: tuple[GroupState, ...]

    @property
    def applied(self) -> bool:
        """False when the event changed nothing: a repeated delivery or a late, older event."""
        return bool(self.changed)


def apply_to_group(stored: Iterable[GroupState], event: GroupEvent) -> RecordOutcome:
    """Apply `event` given the stored states of its group (the group and each topic of it).

    A whole-group event (member exit, destruction) changes the group and every topic; a full
    event changes only its own key, which starts from `topic_baseline` when it has no state.
    A clear changes only its own key, which must have a state: GroupNotFound otherwise.
    """
    by_key = {state.key: state for state in stored}
    if event.kind is EventKind.CLEARED and event.key not in by_key:
        key = event.key
        raise GroupNotFound(key.sdk_app_id, key.group_id, key.topic_id)
    if event.kind.whole_group:
        targets: dict[GroupKey, GroupState | None] = {event.key: None, **by_key}
    else:
        own = by_key.get(event.key) or topic_baseline(by_key.get(event.key.group), event.key)
        targets = {event.key: own}
    after = {key: apply_event(state, key, event) for key, state in targets.items()}
    changed = tuple(new for key, new in after.items() if new is not targets[key] and new)
    own = after[event.key]
    assert own is not None, "every event but a clear creates a state; a clear needs one"
    return RecordOutcome(own, changed)


@dataclass(frozen=True)
class GroupCounts:
    """How many group states there are, and how many of them are full or destroyed."""

    tracked: int
    full: int
    destroyed: int
