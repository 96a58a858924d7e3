"""The operator commands' argument types (an SdkAppid, whole numbers, seconds, a time), their
common options (--target, --timeout, --json, --limit and --all) and the help formatter that
keeps their exit status lists as written."""

from __future__ import annotations

import argparse

from chat_policy_cli.times import parse_time_ms
from chat_policy_shared.channel import DEFAULT_TARGET

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_LIMIT = 100
MAX_SDK_APP_ID = 2**64 - 1

TARGET_HELP = (
    "the policy service, host:port or any gRPC target (default: $CHAT_POLICY_GRPC_TARGET,"
    f" else $CHAT_POLICY_GRPC_BIND, else {DEFAULT_TARGET}); TLS as CHAT_POLICY_GRPC_TLS_* say"
)


class HelpFormatter(argparse.HelpFormatter):
    """Wraps a one-paragraph description as usual, and keeps text with line breaks (the
    epilogs that list exit statuses) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


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


def rfc3339_time(raw: str) -> int:
    """A --since/--until argument: an RFC 3339 time with an offset, as Unix milliseconds."""
    try:
        return parse_time_ms(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an RFC 3339 time with an offset, like 2026-01-01T12:00:00Z; got {raw!r}"
        ) from None


def add_limit_options(parser: argparse.ArgumentParser, items: str) -> None:
    """--limit N (default DEFAULT_LIMIT) and --all, for a listing of `items` (plural)."""
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"list at most N {items} (default {DEFAULT_LIMIT})",
    )
    parser.add_argument(
        "--all", action="store_true", help=f"list every {items[:-1]}, page after page"
    )


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
