"""`chat-policy spool list|replay|drop`: the adapter's set-aside events, for an operator.

The adapter keeps the group-state events the policy service could not take in its spool,
$CHAT_POLICY_DATA_DIR/adapter-spool.db, and replays them. An event the service refuses for good
(INVALID_ARGUMENT) is set aside there, never retried by itself. `spool list` shows the set-aside
events and how many events wait; `spool replay` puts set-aside events back in the queue, where
the running adapter's replayer delivers them; `spool drop` deletes them.

The commands open the spool file itself: run them on the adapter's host, with its data dir.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from chat_policy_cli.arguments import HelpFormatter, add_json_option, positive_int
from chat_policy_cli.output import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    fail,
    format_time,
    message_dict,
    plural,
    print_json,
)

if TYPE_CHECKING:
    from adapter.policy_client import RecordRequest
    from adapter.spool import SetAsideEvent, Spool

SPOOL_EXIT_STATUSES = """\
exit status:
  0  done
  1  an ID is not a set-aside event: nothing was changed
  2  bad arguments or configuration (no spool in the data directory, or one that cannot be
     read)"""

LIST_HEADER = ("ID", "SET ASIDE", "METHOD", "EVENT", "REASON")


def add_spool_arguments(spool: argparse.ArgumentParser) -> None:
    """The subcommands of `chat-policy spool`: list, replay and drop."""
    spool.description = (
        "The adapter's spool ($CHAT_POLICY_DATA_DIR/adapter-spool.db): group-state"
        " events waiting for the policy service, and those it refused for good, set aside."
    )
    commands = spool.add_subparsers(dest="spool_command", required=True, metavar="COMMAND")

    listing = commands.add_parser(
        "list",
        help="show the set-aside events and how many events wait",
        description="Show every set-aside event (its id, when it was set aside, the call, the"
        " group and EventTime, and why the service refused it) and how many events wait for"
        " the policy service.",
        epilog=SPOOL_EXIT_STATUSES,
        formatter_class=HelpFormatter,
    )
    _add_options(listing)
    listing.set_defaults(prog=listing.prog)

    replay = commands.add_parser(
        "replay",
        help="put set-aside events back in the queue",
        description="Put set-aside events back in the queue, due at once with their attempts"
        " reset. The running adapter's replayer delivers them; one the service refuses again"
        " is set aside again.",
        epilog=SPOOL_EXIT_STATUSES,
        formatter_class=HelpFormatter,
    )
    _add_ids(replay, "replay")
    _add_options(replay)
    replay.set_defaults(prog=replay.prog)

    drop = commands.add_parser(
        "drop",
        help="delete set-aside events for good",
        description="Delete set-aside events for good: the policy service never records them.",
        epilog=SPOOL_EXIT_STATUSES,
        formatter_class=HelpFormatter,
    )
    _add_ids(drop, "drop")
    _add_options(drop)
    drop.set_defaults(prog=drop.prog)


def run_spool(args: argparse.Namespace) -> int:
    """Run the chosen `spool` subcommand; the exit status is its."""
    run = {"list": run_list, "replay": run_replay, "drop": run_drop}
    return run[args.spool_command](args)


def _add_ids(parser: argparse.ArgumentParser, verb: str) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "ids", nargs="*", type=positive_int, default=[], metavar="ID", help=f"{verb} these events"
    )
    which.add_argument("--all", action="store_true", help=f"{verb} every set-aside event")


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the adapter's data directory (default: $CHAT_POLICY_DATA_DIR, else ./var)",
    )
    add_json_option(parser)


# --- running ---------------------------------------------------------------------------------


def open_spool(args: argparse.Namespace) -> Spool | None:
    """The spool in args.data_dir (else $CHAT_POLICY_DATA_DIR, else the adapter's default);
    None, with the problem printed, if there is none or it cannot be read."""
    from adapter.settings import AdapterSettings
    from adapter.spool import Spool, SpoolUnavailable

    data_dir = args.data_dir or os.environ.get("CHAT_POLICY_DATA_DIR") or AdapterSettings.data_dir
    settings = AdapterSettings(data_dir=Path(data_dir))
    path = settings.spool_path
    if not path.is_file():
        fail(args, f"no spool at {path}: is the data dir the adapter's? (--data-dir)")
        return None
    try:
        return Spool(path, settings.spool_max_events)
    except SpoolUnavailable as error:
        fail(args, str(error))
        return None


def run_list(args: argparse.Namespace) -> int:
    """Print the set-aside events and the number waiting (or one JSON document)."""
    spool = open_spool(args)
    if spool is None:
        return EXIT_CONFIG
    try:
        events = spool.set_aside_events()
        waiting = spool.depth()
    finally:
        spool.close()
    if args.json:
        print_json({"set_aside": [event_dict(event) for event in events], "waiting": waiting})
    else:
        print("\n".join(list_lines(events, waiting)))
    return EXIT_OK


def run_replay(args: argparse.Namespace) -> int:
    """Move set-aside events back to the queue; say how many, and who delivers them."""
    from adapter.spool import UnknownEvents

    spool = open_spool(args)
    if spool is None:
        return EXIT_CONFIG
    try:
        count = spool.restore(None if args.all else args.ids)
        waiting = spool.depth()
    except UnknownEvents as error:
        return fail(args, f"{error}; nothing replayed", EXIT_FAILED)
    finally:
        spool.close()
    if args.json:
        print_json({"replayed": count, "waiting": waiting})
    else:
        print(
            f"replayed {plural(count, 'set-aside event')}: back in the queue with attempts"
            f" reset; the running adapter's replayer delivers the {plural(waiting, 'event')}"
            " waiting now"
        )
    return EXIT_OK


def run_drop(args: argparse.Namespace) -> int:
    """Delete set-aside events; say how many."""
    from adapter.spool import UnknownEvents

    spool = open_spool(args)
    if spool is None:
        return EXIT_CONFIG
    try:
        count = spool.drop(None if args.all else args.ids)
    except UnknownEvents as error:
        return fail(args, f"{error}; nothing dropped", EXIT_FAILED)
    finally:
        spool.close()
    if args.json:
        print_json({"dropped": count})
    else:
        print(f"dropped {plural(count, 'set-aside event')}")
    return EXIT_OK


# --- printing --------------------------------------------------------------------------------


def event_dict(event: SetAsideEvent) -> dict[str, object]:
    """A set-aside event as JSON-ready data; `request` is the decoded call (null if this
    adapter cannot read it)."""
    request = _decoded(event)
    return {
        "id": event.id,
        "method": event.method,
        "request_id": event.request_id,
        "enqueued": _time_ms(event.enqueued_ms),
        "set_aside": _time_ms(event.set_aside_ms),
        "attempts": event.attempts,
        "reason": event.reason,
        "request": None if request is None else message_dict(request),
    }


def list_lines(events: list[SetAsideEvent], waiting: int) -> list[str]:
    """The table of set-aside events, and a last line that counts them and the waiting ones."""
    counts = f"{plural(waiting, 'event')} waiting for the policy service"
    if not events:
        return [f"no set-aside events; {counts}"]
    rows = [LIST_HEADER] + [
        (
            str(event.id),
            _time_ms(event.set_aside_ms),
            event.method,
            _event_summary(event),
            " ".join(event.reason.split()),
        )
        for event in events
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(LIST_HEADER) - 1)]
    lines = [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]
        )
        for row in rows
    ]
    return [*lines, f"{plural(len(events), 'set-aside event')}; {counts}"]


def _event_summary(event: SetAsideEvent) -> str:
    """`app A group G [topic T] at TIME`, or `-` for a call this adapter cannot read."""
    from chatpolicy.v1 import group_state_service_pb2 as pb

    request = _decoded(event)
    if request is None:
        return "-"
    group = request.group_id
    if isinstance(request, pb.RecordGroupFullRequest) and request.topic_id:
        group += f" topic {request.topic_id}"
    return f"app {request.sdk_app_id} group {group} at {format_time(request.event_time)}"


def _decoded(event: SetAsideEvent) -> RecordRequest | None:
    """The call the event holds, or None if this adapter cannot read it."""
    from google.protobuf.message import DecodeError

    from adapter.group_state import SPOOLED_REQUESTS

    request_type = SPOOLED_REQUESTS.get(event.method)
    if request_type is None:
        return None
    try:
        return request_type.FromString(event.request)
    except DecodeError:
        return None


def _time_ms(ms: int) -> str:
    """Unix ms as format_time prints a Timestamp."""
    from adapter.policy_client import timestamp_from_ms

    return format_time(timestamp_from_ms(ms))
