"""The sizes of text fields that every store accepts, checked at each edge before anything is
kept: the adapter (400 naming the field) and the policy service (INVALID_ARGUMENT).

Limits are in bytes of UTF-8, so a store's own limits (a PostgreSQL index row, a column) hold
whatever the characters: 256 bytes is 256 ASCII characters, or 85 Chinese ones. Chat's own
limits are far lower (an account 32 bytes, a group ID 48, a group name 100), so no real event is
refused. NUL is refused everywhere: PostgreSQL text cannot hold it.
"""

from __future__ import annotations

# GroupId and TopicId (a topic ID embeds its group's ID).
MAX_ID_BYTES = 256
# Operator_Account, Owner_Account, and each Member_Account of a member list.
MAX_ACCOUNT_BYTES = 256
# A group's Name.
MAX_NAME_BYTES = 1024
# Any other short text that is kept: Type, ClientIP, OptPlatform, ...
MAX_SHORT_TEXT_BYTES = 256
# How much of a refused or unknown value an error message echoes back.
ECHO_CHARS = 64


def text_problem(value: str, max_bytes: int) -> str | None:
    """Why `value` cannot be kept (a phrase to follow the field's name), or None if it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return "must be valid Unicode text"
    if size > max_bytes:
        return f"must be at most {max_bytes} bytes of UTF-8 (it is {size})"
    return None


def echo(value: str) -> str:
    """`value` cut to a short prefix for an error message or a log line, marked when cut."""
    if len(value) <= ECHO_CHARS:
        return value
    return f"{value[:ECHO_CHARS]}… ({len(value)} characters)"
