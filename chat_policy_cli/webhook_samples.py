"""Realistic bodies of the webhooks the adapter handles, after Chat's documented samples, for
`chat-policy simulate`: EventTime is now (quoted milliseconds, as in Chat's samples) and each
group-state webhook names a new group, unless the caller sets its own fields.
"""

from __future__ import annotations

import copy
import secrets
import string
from collections.abc import Mapping

BEFORE_CREATE_GROUP = "Group.CallbackBeforeCreateGroup"
AFTER_GROUP_FULL = "Group.CallbackAfterGroupFull"
AFTER_MEMBER_EXIT = "Group.CallbackAfterMemberExit"
AFTER_GROUP_DESTROYED = "Group.CallbackAfterGroupDestroyed"
AFTER_NEW_MEMBER_JOIN = "Group.CallbackAfterNewMemberJoin"

# Every command the adapter acts on (adapter/group_creation.py, adapter/group_state.py); a
# test checks that this list and the adapter's agree.
HANDLED_COMMANDS = (
    BEFORE_CREATE_GROUP,
    AFTER_GROUP_FULL,
    AFTER_MEMBER_EXIT,
    AFTER_GROUP_DESTROYED,
    AFTER_NEW_MEMBER_JOIN,
)
# The commands whose body names a group (GroupId).
GROUP_STATE_COMMANDS = (
    AFTER_GROUP_FULL,
    AFTER_MEMBER_EXIT,
    AFTER_GROUP_DESTROYED,
    AFTER_NEW_MEMBER_JOIN,
)
# `BeforeCreateGroup` for `Group.CallbackBeforeCreateGroup`, ...
SHORT_NAMES = {command.removeprefix("Group.Callback"): command for command in HANDLED_COMMANDS}

# Chat's samples, EventTime and GroupId filled in by sample_body. Chat's sample members and
# names (leckie, bob, peter, MyFirstGroup, ...) are kept.
_SAMPLES: Mapping[str, Mapping[str, object]] = {
    BEFORE_CREATE_GROUP: {
        "CallbackCommand": BEFORE_CREATE_GROUP,
        "Operator_Account": "leckie",
        "Owner_Account": "leckie",
        "Type": "Public",
        "Name": "MyFirstGroup",
        "CreateGroupNum": 123,
        "MemberList": [{"Member_Account": "bob"}, {"Member_Account": "peter"}],
    },
    AFTER_GROUP_FULL: {"CallbackCommand": AFTER_GROUP_FULL},
    AFTER_MEMBER_EXIT: {
        "CallbackCommand": AFTER_MEMBER_EXIT,
        "Type": "Public",
        "ExitType": "Kicked",
        "Operator_Account": "leckie",
        "ExitMemberList": [{"Member_Account": "peter"}, {"Member_Account": "bob"}],
    },
    AFTER_GROUP_DESTROYED: {
        "CallbackCommand": AFTER_GROUP_DESTROYED,
        "Type": "Public",
        "Owner_Account": "leckie",
        "Name": "MyFirstGroup",
        "MemberList": [{"Member_Account": "bob"}, {"Member_Account": "peter"}],
    },
    AFTER_NEW_MEMBER_JOIN: {
        "CallbackCommand": AFTER_NEW_MEMBER_JOIN,
        "Type": "Public",
        "JoinType": "Apply",
        "Operator_Account": "leckie",
        "NewMemberList": [{"Member_Account": "jared"}, {"Member_Account": "tommy"}],
    },
}

_GROUP_ID_PREFIX = "@TGS#SIM"  # Chat's own group ids start with @TGS#; SIM marks ours
_GROUP_ID_ALPHABET = string.ascii_uppercase + string.digits


def resolve_command(name: str) -> str:
    """The full command for a short or full name of a handled command, in any case and with or
    without `Group.` and `Callback` (`AfterGroupFull`, `callbackaftergroupfull`, ...); any
    other name is returned as it is."""
    key = name.strip().lower().removeprefix("group.").removeprefix("callback")
    for short, command in SHORT_NAMES.items():
        if key == short.lower():
            return command
    return name


def is_handled(command: str) -> bool:
    """True for a command the adapter acts on (the others are acknowledged and ignored)."""
    return command in HANDLED_COMMANDS


def new_group_id() -> str:
    """A GroupId like Chat's (`@TGS#` and upper-case letters and digits), new each call."""
    suffix = "".join(secrets.choice(_GROUP_ID_ALPHABET) for _ in range(7))
    return _GROUP_ID_PREFIX + suffix


def sample_body(command: str, now_ms: int, group_id: str) -> dict[str, object]:
    """Chat's sample body for `command` at `now_ms`; group-state webhooks name `group_id`. Any
    other command gets a minimal body: its CallbackCommand and EventTime."""
    body = copy.deepcopy(dict(_SAMPLES.get(command, {"CallbackCommand": command})))
    if command in GROUP_STATE_COMMANDS:
        # Chat puts GroupId right after CallbackCommand.
        body = {"CallbackCommand": command, "GroupId": group_id, **body}
    body["EventTime"] = str(now_ms)
    return body
