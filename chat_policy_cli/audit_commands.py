"""`chat-policy audit list`: the audit trail, from the policy service.

`audit list [--caller C] [--action A] [--app APP] [--group G] [--since T] [--until T]
[--limit N | --all]` lists audit events newest first (ListAuditEvents, paging through as many
pages as it needs).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chat_policy_cli.arguments import (
    HelpFormatter,
    add_grpc_options,
    add_limit_options,
    rfc3339_time,
    sdk_app_id,
)
from chat_policy_cli.output import EXIT_OK, format_time, message_dict, plural, print_json
from chat_policy_cli.service_calls import RPC_EXIT_STATUSES, call_service, collect_pages

if TYPE_CHECKING:
    import grpc

    from chatpolicy.v1 import audit_service_pb2

LIST_HEADER = ("OCCURRED AT", "CALLER", "ACTION", "RESULT", "GROUP", "REASON: DETAIL")


def add_audit_arguments(audit: argparse.ArgumentParser) -> None:
    """The subcommands of `chat-policy audit`: list."""
    audit.description = "The audit trail the policy service keeps (AuditService)."
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    listing = commands.add_parser(
        "list",
        help="list audit events, newest first",
        description="List audit events, newest first (ListAuditEvents): every ClearGroupFull,"
        " every Record* call of a caller other than the adapter, every policy or access file"
        " reload. Filters combine. Without --all, at most --limit events; when there are more,"
        " the last line says so.",
        epilog=RPC_EXIT_STATUSES,
        formatter_class=HelpFormatter,
    )
    listing.add_argument("--caller", default="", metavar="NAME", help="one caller's events")
    listing.add_argument(
        "--action",
        default="",
        metavar="ACTION",
        help="one action's events: a full gRPC method"
        " (/chatpolicy.v1.GroupStateService/ClearGroupFull), policy.reload or access.reload",
    )
    listing.add_argument(
        "--app", type=sdk_app_id, default=0, metavar="APP", help="events about one SdkAppid"
    )
    listing.add_argument("--group", default="", metavar="GROUP", help="events about one GroupId")
    listing.add_argument(
        "--since", type=rfc3339_time, metavar="TIME", help="events at or after TIME (RFC 3339)"
    )
    listing.add_argument(
        "--until", type=rfc3339_time, metavar="TIME", help="events at or before TIME (RFC 3339)"
    )
    add_limit_options(listing, "events")
    add_grpc_options(listing)
    listing.set_defaults(prog=listing.prog)


def run_audit(args: argparse.Namespace) -> int:
    """Run the chosen `audit` subcommand (list); the exit status is its."""
    return run_list(args)


def run_list(args: argparse.Namespace) -> int:
    """ListAuditEvents, page after page, as a table (or JSON)."""
    from chatpolicy.v1 import audit_service_pb2 as pb
    from chatpolicy.v1 import audit_service_pb2_grpc as rpc

    def list_events(channel: grpc.Channel) -> int:
        stub = rpc.AuditServiceStub(channel)

        def fetch(size: int, token: str) -> tuple[Sequence[audit_service_pb2.AuditEvent], str]:
            request = pb.ListAuditEventsRequest(
                caller=args.caller,
                action=args.action,
                sdk_app_id=args.app,
                group_id=args.group,
                page_size=size,
                page_token=token,
            )
            if args.since is not None:
                request.occurred_at_or_after.FromMilliseconds(args.since)
            if args.until is not None:
                request.occurred_at_or_before.FromMilliseconds(args.until)
            page = stub.ListAuditEvents(request, timeout=args.timeout)
            return page.events, page.next_page_token

        events, token = collect_pages(fetch, None if args.all else args.limit)
        if args.json:
            print_json(
                {"events": [message_dict(event) for event in events], "next_page_token": token}
            )
        else:
            print("\n".join(list_lines(events, more=bool(token))))
        return EXIT_OK

    return call_service(args, list_events)


def list_lines(events: Sequence[audit_service_pb2.AuditEvent], *, more: bool) -> list[str]:
    """The table of events, and a last line that counts them (and says if there are more)."""
    rows = [LIST_HEADER] + [
        (
            format_time(event.occurred_at),
            event.caller,
            event.action,
            event.result,
            _group(event),
            ": ".join(part for part in (event.reason, event.detail) if part) or "-",
        )
        for event in events
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(LIST_HEADER) - 1)]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]
    count = plural(len(events), "audit event")
    if more:
        lines.append(f"{count} shown; there are more: --all lists every one")
    elif not events:
        lines = ["no audit events"]
    else:
        lines.append(count)
    return lines


def _group(event: audit_service_pb2.AuditEvent) -> str:
    """`APP GROUP`, `APP GROUP topic TOPIC`, or `-` for a reload."""
    if not event.group_id:
        return "-"
    topic = f" topic {event.topic_id}" if event.topic_id else ""
    return f"{event.sdk_app_id} {event.group_id}{topic}"
