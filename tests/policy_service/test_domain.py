"""Domain rules alone: group state and pagination tokens (no grpc, no Falcon).

The policy's tests are in test_policy.py, test_policy_rules.py and test_policy_file.py.
"""

from __future__ import annotations

import pytest

from policy_service.api.page_tokens import (
    FullGroupsCursor,
    FullGroupsFilter,
    decode_page_token,
    encode_page_token,
    page_size_from_request,
)
from policy_service.errors import InvalidArgument, InvalidPageToken
from policy_service.groups.state import (
    EventKind,
    GroupEvent,
    GroupKey,
    GroupState,
    apply_event,
    apply_to_group,
)

KEY = GroupKey(1400000000, "@TGS#g")
FULL, EXIT, DESTROYED = EventKind.FULL, EventKind.MEMBER_EXIT, EventKind.DESTROYED


def apply_full_event(current: GroupState | None, key: GroupKey, event_time_ms: int) -> GroupState:
    """The state after a full event for `key`."""
    return apply_event(current, key, GroupEvent(key, FULL, event_time_ms))


def test_first_full_event_makes_the_group_full() -> None:
    """The first event sets full, full_since and last_event_time to its time, count 1."""
    assert apply_full_event(None, KEY, 1000) == GroupState(KEY, True, 1000, 1000, 1)


def test_later_full_event_counts_a_refused_join() -> None:
    """A newer event while full adds one to the count and keeps full_since."""
    state = apply_full_event(apply_full_event(None, KEY, 1000), KEY, 2000)
    assert state == GroupState(KEY, True, 1000, 2000, 2)


@pytest.mark.parametrize("event_time_ms", [2000, 1500])
def test_repeated_or_older_event_changes_nothing(event_time_ms: int) -> None:
    """An event not newer than the last applied returns the very same state."""
    current = GroupState(KEY, True, 1000, 2000, 2)
    assert apply_full_event(current, KEY, event_time_ms) is current


def test_group_that_was_not_full_starts_a_new_full_period() -> None:
    """A full event on a not-full group resets full_since and the count."""
    current = GroupState(KEY, False, None, 2000, 0)
    assert apply_full_event(current, KEY, 3000) == GroupState(KEY, True, 3000, 3000, 1)


def test_member_exit_ends_fullness() -> None:
    """A newer member exit makes a full group not full, with no full_since and count 0."""
    full = apply_full_event(None, KEY, 1000)
    state = apply_event(full, KEY, GroupEvent(KEY, EXIT, 2000))
    assert state == GroupState(KEY, False, None, 2000, 0, False, EXIT)


def test_late_full_event_does_not_override_a_newer_exit() -> None:
    """An exit seen first, then an older full event arriving late: the group stays not full."""
    exited = apply_event(None, KEY, GroupEvent(KEY, EXIT, 2000))
    assert apply_full_event(exited, KEY, 1500) is exited


def test_destroyed_group_is_kept_as_destroyed_until_a_newer_full_event() -> None:
    """Destruction marks the state destroyed; a later full event (reused GroupId) revives it."""
    destroyed = apply_event(
        apply_full_event(None, KEY, 1000), KEY, GroupEvent(KEY, DESTROYED, 2000)
    )
    assert (destroyed.full, destroyed.destroyed) == (False, True)
    revived = apply_full_event(destroyed, KEY, 3000)
    assert (revived.full, revived.destroyed, revived.full_since_ms) == (True, False, 3000)


@pytest.mark.parametrize(
    ("first", "second", "applied"),
    [
        (FULL, EXIT, True),
        (EXIT, FULL, False),
        (EXIT, DESTROYED, True),
        (DESTROYED, EXIT, False),
        (EXIT, EXIT, False),
    ],
)
def test_events_at_the_same_time_are_ordered_by_kind(
    first: EventKind, second: EventKind, applied: bool
) -> None:
    """At one EventTime, destruction beats exit beats full; the same kind again is a repeat."""
    state = apply_event(None, KEY, GroupEvent(KEY, first, 1000))
    after = apply_event(state, KEY, GroupEvent(KEY, second, 1000))
    assert (after is not state) == applied


def test_whole_group_event_reaches_every_topic() -> None:
    """A member exit changes the group and each tracked topic, and creates the group's state."""
    topics = [apply_full_event(None, GroupKey(KEY.sdk_app_id, KEY.group_id, t), 1000) for t in "ab"]
    outcome = apply_to_group(topics, GroupEvent(KEY, EXIT, 2000))
    assert outcome.applied
    assert sorted(state.key.topic_id for state in outcome.changed) == ["", "a", "b"]
    assert not any(state.full for state in outcome.changed)
    assert outcome.state.key == KEY


def test_full_event_changes_only_its_own_topic() -> None:
    """A topic's full event leaves the group and other topics as they were."""
    topic = GroupKey(KEY.sdk_app_id, KEY.group_id, "a")
    outcome = apply_to_group([apply_full_event(None, KEY, 1000)], GroupEvent(topic, FULL, 2000))
    assert [state.key for state in outcome.changed] == [topic]


def test_untracked_topic_starts_from_the_groups_last_exit() -> None:
    """A late full event for a topic never seen loses to a newer exit of its group."""
    exited = apply_event(None, KEY, GroupEvent(KEY, EXIT, 2000))
    topic = GroupKey(KEY.sdk_app_id, KEY.group_id, "a")
    late = apply_to_group([exited], GroupEvent(topic, FULL, 1500))
    assert not late.applied
    assert (late.state.key, late.state.full) == (topic, False)
    assert apply_to_group([exited], GroupEvent(topic, FULL, 2500)).state.full


def test_repeated_whole_group_event_changes_nothing() -> None:
    """The same exit delivered twice is applied once."""
    first = apply_to_group([], GroupEvent(KEY, EXIT, 2000))
    again = apply_to_group(first.changed, GroupEvent(KEY, EXIT, 2000))
    assert (first.applied, again.applied) == (True, False)
    assert again.state == first.state


@pytest.mark.parametrize(
    ("key", "field"),
    [
        (GroupKey(0, "g"), "sdk_app_id"),
        (GroupKey(2**63, "g"), "sdk_app_id"),
        (GroupKey(1, ""), "group_id"),
        (GroupKey(1, "g\x00"), "group_id"),
        (GroupKey(1, "g", "t\x00"), "topic_id"),
    ],
)
def test_group_key_must_name_a_group(key: GroupKey, field: str) -> None:
    """A key without an app or a group id is an invalid argument naming the field."""
    with pytest.raises(InvalidArgument) as raised:
        key.validate()
    assert raised.value.field == field


@pytest.mark.parametrize(("asked", "used"), [(0, 100), (1, 1), (1000, 1000), (5000, 1000)])
def test_page_size_defaults_and_cap(asked: int, used: int) -> None:
    """Page size 0 means 100 and anything above 1000 is capped (AIP-158)."""
    assert page_size_from_request(asked) == used


def test_negative_page_size_is_refused() -> None:
    """A negative page size is an invalid argument."""
    with pytest.raises(InvalidArgument) as raised:
        page_size_from_request(-1)
    assert raised.value.field == "page_size"


def test_page_token_round_trips_and_is_bound_to_the_filter() -> None:
    """A token decodes to its cursor for the same filter and is refused for another."""
    cursor = FullGroupsCursor(1670574414123, GroupKey(7, "@TGS#é", "topic"))
    list_filter = FullGroupsFilter(7, 60_000)
    token = encode_page_token(list_filter, cursor)
    assert decode_page_token(token, list_filter) == cursor
    assert decode_page_token("", list_filter) is None
    for other in (FullGroupsFilter(8, 60_000), FullGroupsFilter(7, 0)):
        with pytest.raises(InvalidPageToken):
            decode_page_token(token, other)


@pytest.mark.parametrize(
    "token",
    [
        "!!!",
        "bm90IGpzb24",  # "not json"
        encode_page_token(FullGroupsFilter(), FullGroupsCursor(1, KEY)).replace("W", "X", 1),
        "WzJd",  # [2]
        "WzIsMCwwLHRydWUsMSwiZyIsIiJd",  # [2,0,0,true,1,"g",""]: a bool is not a time
        "WzEsMCwxLDEsImciLCIiXQ",  # version 1, without the duration filter
        "WzMsMCwwLDEsMSwiZyIsIiJd",  # version 3
    ],
)
def test_foreign_page_tokens_are_refused(token: str) -> None:
    """Anything not issued by encode_page_token is InvalidPageToken, never a crash."""
    with pytest.raises(InvalidPageToken):
        decode_page_token(token, FullGroupsFilter())
