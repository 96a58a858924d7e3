"""What the operator commands (`groups`, `decide`, `sign`, `simulate`) share: the --target,
--timeout and --json options, the channel to the policy service, the exit statuses, and how
answers, times and gRPC errors are printed.

grpc and protobuf are imported only when a command runs, so that `chat-policy --help` stays
fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from chat_policy_shared.channel import DEFAULT_TARGET, dial_target

if TYPE_CHECKING:
    import grpc
    from google.protobuf.message import Message
    from google.protobuf.timestamp_pb2 import Timestamp

EXIT_OK = 0
EXIT_FAILED = 1  # an RPC error, an HTTP error, nothing answering
EXIT_CONFIG = 2  # bad arguments or configuration (argparse's own usage errors are 2 as well)

DEFAULT_TIMEOUT_S = 5.0
MAX_SDK_APP_ID = 2**64 - 1

TARGET_HELP = (
    "the policy service, host:port or any gRPC target (default: $CHAT_POLICY_GRPC_TARGET,"
    f" else $CHAT_POLICY_GRPC_BIND, else {DEFAULT_TARGET}); TLS as CHAT_POLICY_GRPC_TLS_* say"
)
RPC_EXIT_STATUSES = """\
exit status:
  0  the call succeeded
  1  the call failed: one line on stderr with the gRPC status code, its details and the
     google.rpc.ErrorInfo reason (with --json, also {"error": {...}} on stdout)
  2  bad arguments or configuration (e.g. a CHAT_POLICY_GRPC_TLS_* file that cannot be read)"""


class HelpFormatter(argparse.HelpFormatter):
    """Wraps a one-paragraph description as usual, and keeps text with line breaks (the
    epilogs that list exit statuses) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class ConfigError(ValueError):
    """A setting or argument the command cannot use; the message names it."""


def default_sdk_app_id(environ: Mapping[str, str] = os.environ) -> int:
    """The first SdkAppid of CHAT_POLICY_SDKAPPIDS, else the demo id the adapter accepts then."""
    first = environ.get("CHAT_POLICY_SDKAPPIDS", "").split(",")[0].strip()
    if not first:
        from adapter.settings import DEMO_SDKAPPID

        return DEMO_SDKAPPID
    try:
        return sdk_app_id(first)
    except argparse.ArgumentTypeError as error:
        raise ConfigError(f"CHAT_POLICY_SDKAPPIDS: {error}") from None


def first_callback_token(environ: Mapping[str, str] = os.environ) -> str:
    """The first token of CHAT_POLICY_CALLBACK_TOKENS; empty when none is set."""
    tokens = [t.strip() for t in environ.get("CHAT_POLICY_CALLBACK_TOKENS", "").split(",")]
    return next((token for token in tokens if token), "")


# --- argument types and common options -------------------------------------------------------


def sdk_app_id(raw: str) -> int:
    """An SdkAppid argument: a whole number that fits in uint64."""
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_SDK_APP_ID:
        raise argparse.ArgumentTypeError(f"SdkAppid must be a whole number, got {raw!r}")
    return int(raw)


def positive_int(raw: str) -> int:
    """A whole number of at least 1."""
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {raw!r}")
    return int(raw)


def non_negative_int(raw: str) -> int:
    """A whole number of at least 0."""
    if not (raw.isascii() and raw.isdigit()):
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {raw!r}")
    return int(raw)


def seconds(raw: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {raw!r}")
    return value


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """--json: print one JSON document instead of text."""
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document instead of text"
    )


def add_grpc_options(parser: argparse.ArgumentParser, *, unary: bool = True) -> None:
    """--target, --timeout (for unary calls) and --json."""
    parser.add_argument("--target", metavar="HOST:PORT", help=TARGET_HELP)
    if unary:
        parser.add_argument(
            "--timeout",
            type=seconds,
            default=DEFAULT_TIMEOUT_S,
            metavar="SECONDS",
            help=f"deadline of each call (default {DEFAULT_TIMEOUT_S:g})",
        )
    add_json_option(parser)


# --- running a command ------------------------------------------------------------------------


def call_service(args: argparse.Namespace, body: Callable[[grpc.Channel], int]) -> int:
    """Open a channel to args.target (TLS settings from the environment), run body on it and
    return its status; an RPC error prints one line and is 1, a bad TLS setting is 2."""
    import grpc

    from chat_policy_shared.channel import ChannelSecurity, ChannelSettingsError, open_channel

    target = args.target or dial_target()
    try:
        channel = open_channel(target, ChannelSecurity.from_env())
    except ChannelSettingsError as error:
        return fail(args, str(error), EXIT_CONFIG)
    with channel:
        try:
            return body(channel)
        except grpc.RpcError as error:
            return report_rpc_error(args, error, target)


def fail(args: argparse.Namespace, message: str, status: int = EXIT_FAILED) -> int:
    """Print `PROG: message` on stderr and return status."""
    print(f"{args.prog}: {message}", file=sys.stderr)
    return status


def report_rpc_error(
    args: argparse.Namespace, error: grpc.RpcError, target: str, prefix: str = ""
) -> int:
    """Print a failed call in one line (and with --json its document on stdout); return 1."""
    document = rpc_error_dict(error)
    if args.json:
        print_json({"error": document})
    return fail(args, prefix + rpc_error_line(document, target))


def rpc_error_dict(error: grpc.RpcError) -> dict[str, object]:
    """The status code name, details, and the ErrorInfo's reason and metadata if it has one."""
    import grpc
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    code = error.code() if isinstance(error, grpc.Call) else None
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    document: dict[str, object] = {
        "code": code.name if code is not None else "UNKNOWN",
        "details": " ".join((details or "").split()),
    }
    try:
        status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    except ValueError:  # the status details disagree with the call's code or message
        status = None
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            document["reason"] = info.reason
            if info.metadata:
                document["metadata"] = dict(info.metadata)
            break
    return document


def rpc_error_line(document: Mapping[str, object], target: str) -> str:
    """`CODE: details (REASON)`; for a service that does not answer, the target too."""
    line = f"{document['code']}: {document['details'] or '(no details)'}"
    notes = [str(document["reason"])] if "reason" in document else []
    if document["code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        notes.append(f"target {target}")
    return f"{line} ({'; '.join(notes)})" if notes else line


# --- printing --------------------------------------------------------------------------------


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
