"""`chat-policy groups get|list|watch|clear`: the group-full state, from the policy service.

`groups get APP GROUP [--topic T]` shows one group's state (GetGroupState).
`groups list APP [--limit N] [--all]` lists the full groups, oldest full_since first
(ListFullGroups, paging through as many pages as it needs).
`groups watch APP [--from SEQUENCE]` prints every change as the service streams it
(WatchGroupStates) until Ctrl-C.
`groups clear APP GROUP [--topic T] [--reason TEXT]` says a full group has room again
(ClearGroupFull).

APP is the SdkAppid; 0 lists or watches every app's groups.
"""

from __future__ import annotations

import argparse
import getpass
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chat_policy_cli.arguments import (
    HelpFormatter,
    add_grpc_options,
    add_limit_options,
    non_negative_int,
    sdk_app_id,
)
from chat_policy_cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    enum_word,
    fail,
    format_time,
    key_values,
    message_dict,
    plural,
    print_json,
)
from chat_policy_cli.service_calls import (
    RPC_EXIT_STATUSES,
    call_service,
    collect_pages,
    report_rpc_error,
)
from chat_policy_shared.channel import dial_target

if TYPE_CHECKING:
    import grpc

    from chatpolicy.v1 import group_state_pb2, group_state_service_pb2

MAX_REASON_CHARS = 256  # ClearGroupFullRequest.reason

WATCH_EXIT_STATUSES = """\
exit status:
  0  stopped with Ctrl-C (SIGINT) or SIGTERM; stderr says the sequence to resume from
     (--from)
  1  the stream failed or ended (the service stopped, the change log no longer holds the
     changes after --from, ...): one line on stderr with the gRPC status code, details and
     reason
  2  bad arguments or configuration"""


def add_group_arguments(groups: argparse.ArgumentParser) -> None:
    """The subcommands of `chat-policy groups`: get, list, watch and clear."""
    groups.description = "The group-full state the policy service keeps (GroupStateService)."
    commands = groups.add_subparsers(dest="groups_command", required=True, metavar="COMMAND")

    get = commands.add_parser(
        "get",
        help="show one group's state",
        description="Show one group's state (GetGroupState). A group the service never saw"
        " is NOT_FOUND (exit 1).",
        epilog=RPC_EXIT_STATUSES,
        formatter_class=HelpFormatter,
    )
    _add_app(get)
    _add_group(get)
    add_grpc_options(get)
    get.set_defaults(prog=get.prog)

    listing = commands.add_parser(
        "list",
        help="list the full groups, oldest first",
        description="List the groups that are full now, oldest full_since first"
        " (ListFullGroups). Without --all, at most --limit groups; when there are more, the"
        " last line says so.",
        epilog=RPC_EXIT_STATUSES,
        formatter_class=HelpFormatter,
    )
    _add_app(listing, every_app=True)
    add_limit_options(listing, "full groups")
    add_grpc_options(listing)
    listing.set_defaults(prog=listing.prog)

    watch = commands.add_parser(
        "watch",
        help="print every change of a group state as it happens, until Ctrl-C",
        description="Print every change of a group state as the service streams it"
        " (WatchGroupStates), one line each, until Ctrl-C. Without --from, from now on."
        " With --json, one JSON object per change and line (JSON Lines). Where the stream is"
        " goes to stderr: once it has caught up, and the sequence to resume from when it"
        " stops.",
        epilog=WATCH_EXIT_STATUSES,
        formatter_class=HelpFormatter,
    )
    _add_app(watch, every_app=True)
    watch.add_argument(
        "--from",
        dest="after_sequence",
        type=non_negative_int,
        metavar="SEQUENCE",
        help="resume after this sequence (the one a previous watch stopped at): every change"
        " since is printed first, if the change log still holds it",
    )
    add_grpc_options(watch, unary=False)
    watch.set_defaults(prog=watch.prog)

    clear = commands.add_parser(
        "clear",
        help="say a full group has room again (no webhook said so)",
        description="Say that a full group has room again although Chat sent no webhook,"
        " e.g. after its member limit was raised through Chat's REST API (ClearGroupFull)."
        " The clear happens now, by the service's clock. A group that is not full is left as"
        " it is (the output says `unchanged`); a group the service never saw is NOT_FOUND.",
        epilog=RPC_EXIT_STATUSES,
        formatter_class=HelpFormatter,
    )
    _add_app(clear)
    _add_group(clear)
    clear.add_argument(
        "--reason",
        metavar="TEXT",
        help="why, kept in the state until its next event (at most"
        f" {MAX_REASON_CHARS} characters; default: `cleared by USER with chat-policy`)",
    )
    add_grpc_options(clear)
    clear.set_defaults(prog=clear.prog)


def run_groups(args: argparse.Namespace) -> int:
    """Run the chosen `groups` subcommand; the exit status is its."""
    run = {"get": run_get, "list": run_list, "watch": run_watch, "clear": run_clear}
    return run[args.groups_command](args)


def _add_app(parser: argparse.ArgumentParser, *, every_app: bool = False) -> None:
    parser.add_argument(
        "app",
        metavar="APP",
        type=sdk_app_id,
        help="the SdkAppid" + ("; 0: every app" if every_app else ""),
    )


def _add_group(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("group", metavar="GROUP", help="the GroupId, e.g. @TGS#2J4SZEAEL")
    parser.add_argument(
        "--topic", default="", metavar="T", help="a topic of a Community group (TopicId)"
    )


# --- get ---------------------------------------------------------------------------------


def run_get(args: argparse.Namespace) -> int:
    """GetGroupState, printed as a block of `key value` lines (or JSON)."""
    from chatpolicy.v1 import group_state_service_pb2 as pb
    from chatpolicy.v1 import group_state_service_pb2_grpc as rpc

    def get(channel: grpc.Channel) -> int:
        request = pb.GetGroupStateRequest(
            sdk_app_id=args.app, group_id=args.group, topic_id=args.topic
        )
        response = rpc.GroupStateServiceStub(channel).GetGroupState(request, timeout=args.timeout)
        if args.json:
            print_json(message_dict(response))
        else:
            print("\n".join(state_lines(response.group_state)))
        return EXIT_OK

    return call_service(args, get)


def state_lines(state: group_state_pb2.GroupState) -> list[str]:
    """One group's state as aligned `key value` lines."""
    full = f"yes, since {format_time(state.full_since)}" if state.full else "no"
    return key_values(
        [
            ("app", str(state.sdk_app_id)),
            ("group", state.group_id),
            ("topic", state.topic_id or "-"),
            ("full", full),
            ("full events", str(state.full_event_count)),
            ("last event", f"{_event_kind(state)} at {format_time(state.last_event_time)}"),
            ("destroyed", "yes" if state.destroyed else "no"),
            ("clear reason", state.clear_reason or "-"),
        ]
    )


def state_summary(state: group_state_pb2.GroupState) -> str:
    """A state in a few words: `full since T (N full events)`, `destroyed at T`, ..."""
    from chatpolicy.v1 import group_state_pb2

    last = format_time(state.last_event_time)
    if state.full:
        since = format_time(state.full_since)
        return f"full since {since} ({plural(state.full_event_count, 'full event')})"
    if state.destroyed:
        return f"destroyed at {last}"
    if state.last_event_kind == group_state_pb2.GROUP_EVENT_KIND_CLEARED:
        return f"not full: cleared at {last} ({state.clear_reason})"
    if state.last_event_kind == group_state_pb2.GROUP_EVENT_KIND_MEMBER_EXIT:
        return f"not full: a member left at {last}"
    return "not full"


def group_label(state: group_state_pb2.GroupState) -> str:
    """`GROUP`, or `GROUP topic TOPIC`."""
    return f"{state.group_id} topic {state.topic_id}" if state.topic_id else state.group_id


def _event_kind(state: group_state_pb2.GroupState) -> str:
    from chatpolicy.v1 import group_state_pb2

    name = group_state_pb2.GroupEventKind.Name(state.last_event_kind)
    return enum_word(name, "GROUP_EVENT_KIND_")


# --- list --------------------------------------------------------------------------------


LIST_HEADER = ("FULL SINCE", "APP", "FULL EVENTS", "LAST EVENT", "GROUP")


def run_list(args: argparse.Namespace) -> int:
    """ListFullGroups, page after page, as a table (or JSON)."""
    from chatpolicy.v1 import group_state_service_pb2 as pb
    from chatpolicy.v1 import group_state_service_pb2_grpc as rpc

    def list_groups(channel: grpc.Channel) -> int:
        stub = rpc.GroupStateServiceStub(channel)

        def fetch(size: int, token: str) -> tuple[Sequence[group_state_pb2.GroupState], str]:
            request = pb.ListFullGroupsRequest(
                sdk_app_id=args.app, page_size=size, page_token=token
            )
            page = stub.ListFullGroups(request, timeout=args.timeout)
            return page.group_states, page.next_page_token

        states, token = collect_pages(fetch, None if args.all else args.limit)
        if args.json:
            print_json(
                {
                    "group_states": [message_dict(state) for state in states],
                    "next_page_token": token,
                }
            )
        else:
            print("\n".join(list_lines(states, more=bool(token))))
        return EXIT_OK

    return call_service(args, list_groups)


def list_lines(states: list[group_state_pb2.GroupState], *, more: bool) -> list[str]:
    """The table of full groups, and a last line that counts them (and says if there are more)."""
    rows = [LIST_HEADER] + [
        (
            format_time(state.full_since),
            str(state.sdk_app_id),
            str(state.full_event_count),
            format_time(state.last_event_time),
            group_label(state),
        )
        for state in states
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(LIST_HEADER) - 1)]
    lines = [
        "  ".join(
            [
                row[0].ljust(widths[0]),
                row[1].ljust(widths[1]),
                row[2].rjust(widths[2]),
                row[3].ljust(widths[3]),
                row[4],
            ]
        )
        for row in rows
    ]
    count = plural(len(states), "full group")
    if more:
        lines.append(f"{count} shown; there are more: --all lists every one")
    elif not states:
        lines = ["no full groups"]
    else:
        lines.append(count)
    return lines


# --- watch -------------------------------------------------------------------------------


def run_watch(args: argparse.Namespace) -> int:
    """WatchGroupStates: a line per change until SIGINT or SIGTERM (0) or the stream fails (1).

    Both signals are made to interrupt here even when the process inherited them ignored (a
    background job of a non-interactive shell ignores SIGINT). A reader that stops reading
    (`| head`) ends the watch quietly, with 141 (see chat_policy_cli.main.run_printing).
    """
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return call_service(args, lambda channel: _watch(args, channel))
    except KeyboardInterrupt:  # a signal before the stream was open, or a second one
        return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _watch(args: argparse.Namespace, channel: grpc.Channel) -> int:
    import grpc

    from chatpolicy.v1 import group_state_service_pb2 as pb
    from chatpolicy.v1 import group_state_service_pb2_grpc as rpc

    request = pb.WatchGroupStatesRequest(sdk_app_id=args.app)
    if args.after_sequence is not None:
        request.after_sequence = args.after_sequence
    which = f"app {args.app}" if args.app else "every app"
    start = "from now" if args.after_sequence is None else f"after sequence {args.after_sequence}"
    print(f"watching {which} {start}; Ctrl-C stops", file=sys.stderr, flush=True)
    stream = rpc.GroupStateServiceStub(channel).WatchGroupStates(request)
    position: int | None = None  # the sequence to resume from, once the service said it
    try:
        for message in stream:
            for change in message.changes:
                print(watch_line(change, as_json=args.json), flush=True)
            if not message.changes and position is None:
                print(f"caught up at sequence {message.sequence}", file=sys.stderr, flush=True)
            position = message.sequence
    except KeyboardInterrupt:
        stream.cancel()
        if position is None:
            print("stopped", file=sys.stderr)
        else:
            print(f"stopped at sequence {position}: resume with --from {position}", file=sys.stderr)
        return EXIT_OK
    except grpc.RpcError as error:
        resume = "" if position is None else f" (resume with --from {position})"
        target = args.target or dial_target()
        return report_rpc_error(args, error, target, prefix=f"watch failed{resume}: ")
    return fail(args, f"the service ended the watch stream at sequence {position}", EXIT_FAILED)


def watch_line(change: group_state_service_pb2.GroupStateChange, *, as_json: bool) -> str:
    """One change: `SEQUENCE  CHANGE_TIME  APP  GROUP  summary`, or one line of JSON."""
    if as_json:
        import json

        return json.dumps(message_dict(change), ensure_ascii=False, separators=(",", ":"))
    state = change.group_state
    forgotten = " (forgotten)" if change.forgotten else ""
    return (
        f"{change.sequence}  {format_time(change.change_time)}  {state.sdk_app_id}"
        f"  {group_label(state)}  {state_summary(state)}{forgotten}"
    )


# --- clear -------------------------------------------------------------------------------


def run_clear(args: argparse.Namespace) -> int:
    """ClearGroupFull: `cleared` or `unchanged`, then the state (or JSON)."""
    from chatpolicy.v1 import group_state_service_pb2 as pb
    from chatpolicy.v1 import group_state_service_pb2_grpc as rpc

    reason = args.reason if args.reason is not None else default_clear_reason()

    def clear(channel: grpc.Channel) -> int:
        request = pb.ClearGroupFullRequest(
            sdk_app_id=args.app, group_id=args.group, topic_id=args.topic, reason=reason
        )
        response = rpc.GroupStateServiceStub(channel).ClearGroupFull(request, timeout=args.timeout)
        if args.json:
            print_json(message_dict(response))
            return EXIT_OK
        label = group_label(response.group_state)
        if response.applied:
            print(f"cleared: {label} is not full any more")
        else:
            print(f"unchanged: {label} was not full, or has a newer event than now")
        print("\n".join(state_lines(response.group_state)))
        return EXIT_OK

    return call_service(args, clear)


def default_clear_reason() -> str:
    """`cleared by USER with chat-policy`, so the state tells who did it."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name: no USER variable and no passwd entry
        user = "an operator"
    return f"cleared by {user} with chat-policy"
