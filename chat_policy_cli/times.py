"""Times as the operator commands read them: RFC 3339 with an offset (and, in a cases file,
TOML's offset date-times and Unix milliseconds)."""

from __future__ import annotations

import datetime
import re

_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(?:([Zz])|([+-]\d{2}:\d{2}))"
)
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_TIME_FORMS = "an RFC 3339 time with an offset ('2026-01-01T12:00:00Z') or Unix milliseconds"


def parse_time_ms(value: object) -> int:
    """Unix milliseconds from an RFC 3339 string, a TOML offset date-time or an integer of
    milliseconds; ValueError saying which forms are accepted otherwise."""
    if type(value) is int and value >= 0:
        return value
    moment: datetime.datetime | None = None
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, str) and (match := _RFC3339.fullmatch(value)):
        date, clock, fraction, zulu, offset = match.groups()
        micros = f".{fraction[:6]}" if fraction else ""
        try:
            moment = datetime.datetime.fromisoformat(
                f"{date}T{clock}{micros}{'+00:00' if zulu else offset}"
            )
        except ValueError as error:
            raise ValueError(f"not a valid time: {value!r} ({error})") from None
    if moment is None or moment.tzinfo is None:
        shown = value.isoformat() if isinstance(value, datetime.date | datetime.time) else value
        raise ValueError(f"must be {_TIME_FORMS}, got {shown!r}")
    return (moment - _EPOCH) // datetime.timedelta(milliseconds=1)
