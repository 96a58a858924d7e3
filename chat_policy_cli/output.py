"""How the operator commands print: their exit statuses, an error line on stderr, one JSON
document (protobuf messages in the .proto's field order), times, counts and aligned
`key  value` lines.

protobuf is imported only when a message is printed, so that `--help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.protobuf.message import Message
    from google.protobuf.timestamp_pb2 import Timestamp

EXIT_OK = 0
EXIT_FAILED = 1  # an RPC error, an HTTP error, nothing answering
EXIT_CONFIG = 2  # bad arguments or configuration (argparse's own usage errors are 2 as well)


def fail(args: argparse.Namespace, message: str, status: int = EXIT_FAILED) -> int:
    """Print `PROG: message` on stderr and return status."""
    print(f"{args.prog}: {message}", file=sys.stderr)
    return status


def message_dict(message: Message) -> dict[str, object]:
    """A protobuf message as JSON-ready data: proto field names, every field (also those at
    their default, so `"full": false` and `"error_code": 0` are there), in the .proto's order.
    """
    from google.protobuf.json_format import MessageToDict

    document = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _in_field_order(message, document)


def _in_field_order(message: Message, document: dict[str, object]) -> dict[str, object]:
    """document's keys in the order the message declares its fields (MessageToDict puts the
    fields at their default last), nested messages too."""
    ordered: dict[str, object] = {}
    for field in message.DESCRIPTOR.fields:
        if field.name not in document:
            continue
        value = document[field.name]
        nested = field.message_type is not None and not field.message_type.GetOptions().map_entry
        if nested and isinstance(value, dict):
            value = _in_field_order(getattr(message, field.name), value)
        elif nested and isinstance(value, list):
            items = zip(getattr(message, field.name), value, strict=True)
            value = [_in_field_order(m, v) if isinstance(v, dict) else v for m, v in items]
        ordered[field.name] = value
    return ordered


def print_json(document: object) -> None:
    """One JSON document on stdout."""
    print(json.dumps(document, ensure_ascii=False, indent=2), flush=True)


def format_time(timestamp: Timestamp | None) -> str:
    """A Timestamp as RFC 3339 UTC with milliseconds (`2022-12-09T08:26:54.123Z`); `-` when
    unset."""
    if timestamp is None or (timestamp.seconds == 0 and timestamp.nanos == 0):
        return "-"
    import datetime

    moment = datetime.datetime.fromtimestamp(timestamp.seconds, datetime.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{timestamp.nanos // 1_000_000:03d}Z"


def plural(count: int, noun: str) -> str:
    """`1 full event`, `2 full events`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def enum_word(name: str, prefix: str) -> str:
    """`GROUP_EVENT_KIND_MEMBER_EXIT` without its prefix, as words: `member exit`."""
    return name.removeprefix(prefix).lower().replace("_", " ")


def key_values(rows: list[tuple[str, str]]) -> list[str]:
    """Aligned `key   value` lines."""
    width = max(len(key) for key, _ in rows)
    return [f"{key:<{width}}  {value}".rstrip() for key, value in rows]


def table_lines(rows: list[tuple[str, ...]], numbers: frozenset[int] = frozenset()) -> list[str]:
    """Rows as columns two spaces apart, each as wide as its widest value; the columns at
    `numbers` aligned right, the others left."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(
            value.rjust(width) if column in numbers else value.ljust(width)
            for column, (value, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
