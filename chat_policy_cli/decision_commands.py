"""`chat-policy decisions list`: the decisions the policy service recorded (ListDecisions).

Newest first, filtered by application, operator, decision, rule, decision id, caller and time
(--since and --until: RFC 3339 with an offset, both inclusive), paging through as many pages as
it needs. Dry runs are never recorded, so never listed.
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
from chat_policy_cli.output import (
    EXIT_OK,
    enum_word,
    format_time,
    message_dict,
    plural,
    print_json,
    table_lines,
)
from chat_policy_cli.service_calls import RPC_EXIT_STATUSES, call_service, collect_pages

if TYPE_CHECKING:
    import grpc

    from chatpolicy.v1 import creation_policy_service_pb2

LIST_HEADER = ("DECIDED AT", "APP", "OPERATOR", "DECISION", "RULE", "CALLER", "ID", "REASON")


def add_decision_arguments(decisions: argparse.ArgumentParser) -> None:
    """The subcommands of `chat-policy decisions`: list."""
    decisions.description = "The decisions the policy service recorded (CreationPolicyService)."
    commands = decisions.add_subparsers(dest="decisions_command", required=True, metavar="COMMAND")
    listing = commands.add_parser(
        "list",
        help="list recorded decisions, newest first",
        description="List the group-creation decisions the policy service recorded, newest"
        " first (ListDecisions), keeping those that match every filter given. Without --all,"
        " at most --limit decisions; when there are more, the last line says so. Dry runs"
        " (`decide` without --live) are not recorded.",
        epilog=RPC_EXIT_STATUSES,
        formatter_class=HelpFormatter,
    )
    listing.add_argument(
        "--app", type=sdk_app_id, default=0, metavar="ID", help="one SdkAppid (default: every app)"
    )
    listing.add_argument("--operator", default="", metavar="USER", help="one Operator_Account")
    listing.add_argument(
        "--decision", choices=("allow", "deny"), help="only allowed or only refused creations"
    )
    listing.add_argument(
        "--rule", default="", metavar="ID", help="the decisions one rule (or `default`) made"
    )
    listing.add_argument("--id", default="", metavar="DECISION_ID", help="one decision")
    listing.add_argument(
        "--caller", default="", metavar="NAME", help="the decisions one caller asked for"
    )
    listing.add_argument(
        "--since", type=rfc3339_time, metavar="TIME", help="decided at or after TIME (RFC 3339)"
    )
    listing.add_argument(
        "--until", type=rfc3339_time, metavar="TIME", help="decided at or before TIME (RFC 3339)"
    )
    add_limit_options(listing, "decisions")
    add_grpc_options(listing)
    listing.set_defaults(prog=listing.prog)


def run_decisions(args: argparse.Namespace) -> int:
    """Run the chosen `decisions` subcommand (list); the exit status is its."""
    from chatpolicy.v1 import creation_policy_service_pb2_grpc as rpc

    def list_decisions(channel: grpc.Channel) -> int:
        stub = rpc.CreationPolicyServiceStub(channel)

        def fetch(
            size: int, token: str
        ) -> tuple[Sequence[creation_policy_service_pb2.DecisionRecord], str]:
            request = list_request(args)
            request.page_size, request.page_token = size, token
            page = stub.ListDecisions(request, timeout=args.timeout)
            return page.decisions, page.next_page_token

        records, token = collect_pages(fetch, None if args.all else args.limit)
        if args.json:
            print_json({"decisions": [message_dict(r) for r in records], "next_page_token": token})
        else:
            print("\n".join(list_lines(records, more=bool(token))))
        return EXIT_OK

    return call_service(args, list_decisions)


def list_request(args: argparse.Namespace) -> creation_policy_service_pb2.ListDecisionsRequest:
    """The ListDecisionsRequest of the filters given (the first page)."""
    from chatpolicy.v1 import creation_policy_service_pb2 as pb

    request = pb.ListDecisionsRequest(
        sdk_app_id=args.app,
        operator_account=args.operator,
        decision=f"DECISION_{(args.decision or 'unspecified').upper()}",
        rule_id=args.rule,
        decision_id=args.id,
        caller=args.caller,
    )
    if args.since is not None:
        request.decided_at_or_after.FromMilliseconds(args.since)
    if args.until is not None:
        request.decided_at_or_before.FromMilliseconds(args.until)
    return request


def list_lines(
    records: Sequence[creation_policy_service_pb2.DecisionRecord], *, more: bool
) -> list[str]:
    """The table of decisions, and a last line that counts them (and says if there are more)."""
    from chatpolicy.v1 import creation_policy_service_pb2 as pb

    if not records:
        return ["no decisions"]
    rows: list[tuple[str, ...]] = [LIST_HEADER]
    rows += [
        (
            format_time(record.decided_at),
            str(record.request.sdk_app_id),
            record.request.operator_account or "-",
            enum_word(pb.Decision.Name(record.decision), "DECISION_"),
            record.rule_id,
            record.caller or "-",
            record.decision_id,
            record.reason,
        )
        for record in records
    ]
    count = plural(len(records), "decision")
    last = f"{count} shown; there are more: --all lists every one" if more else count
    return [*table_lines(rows, numbers=frozenset({1})), last]
