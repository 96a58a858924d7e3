"""Chat's group types and their old names."""

from __future__ import annotations

# Chat renamed two group types; rules and requests may use either name.
GROUP_TYPE_ALIASES = {"Private": "Work", "ChatRoom": "Meeting"}


def canonical_group_type(group_type: str) -> str:
    """The current name of a group type ("Private" -> "Work"); unknown names pass through."""
    return GROUP_TYPE_ALIASES.get(group_type, group_type)
