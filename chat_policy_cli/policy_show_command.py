"""`chat-policy policy show`: the policy the running service decides with (GetPolicy).

It prints the live revision, where it was loaded from and when, the latest reload (and why it
was refused, if it was), and the rules in evaluation order with what each did in this replica
since the revision was loaded. Unlike `policy check` and `policy test`, it asks the service:
grpc is imported only when it runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from chat_policy_cli.arguments import HelpFormatter, add_grpc_options
from chat_policy_cli.output import (
    EXIT_OK,
    format_time,
    key_values,
    message_dict,
    print_json,
    table_lines,
)
from chat_policy_cli.service_calls import RPC_EXIT_STATUSES, call_service

if TYPE_CHECKING:
    import grpc

    from chatpolicy.v1 import creation_policy_service_pb2

RULES_HEADER = ("RULE", "DECIDED", "SHADOW HITS", "ERRORS")
DEFAULT_RULE_ID = "default"


def add_show_arguments(show: argparse.ArgumentParser) -> None:
    """The options of `chat-policy policy show`."""
    show.description = (
        "Show the policy the running service decides with (GetPolicy): its revision, source"
        " and load time, the latest reload, and its rules in evaluation order with what each"
        " decided, would have decided (shadow) or failed to evaluate in this replica since the"
        " revision was loaded. Dry runs are not counted."
    )
    show.epilog = RPC_EXIT_STATUSES
    show.formatter_class = HelpFormatter
    add_grpc_options(show)
    show.set_defaults(prog=show.prog)


def run_show(args: argparse.Namespace) -> int:
    """GetPolicy, printed as `key value` lines and a table of rules (or JSON)."""
    from chatpolicy.v1 import creation_policy_service_pb2 as pb
    from chatpolicy.v1 import creation_policy_service_pb2_grpc as rpc

    def show(channel: grpc.Channel) -> int:
        stub = rpc.CreationPolicyServiceStub(channel)
        response = stub.GetPolicy(pb.GetPolicyRequest(), timeout=args.timeout)
        if args.json:
            print_json(message_dict(response))
        else:
            print("\n".join(policy_lines(response)))
        return EXIT_OK

    return call_service(args, show)


def policy_lines(response: creation_policy_service_pb2.GetPolicyResponse) -> list[str]:
    """The policy as aligned `key value` lines, then its rules (and the default) with their
    counts, in evaluation order."""
    from chatpolicy.v1 import creation_policy_service_pb2 as pb

    rows = [
        ("revision", response.policy_revision),
        ("source", response.source),
        ("loaded at", format_time(response.loaded_at)),
        ("last reload", _last_reload(response)),
    ]
    if response.last_reload_error:
        rows.append(("reload error", response.last_reload_error))
    stats = {stat.rule_id: stat for stat in response.rule_stats}
    table: list[tuple[str, ...]] = [RULES_HEADER]
    for rule_id in [*response.rule_ids, DEFAULT_RULE_ID]:
        stat = stats.get(rule_id, pb.RuleStats())
        table.append((rule_id, str(stat.decided), str(stat.shadow_hits), str(stat.errors)))
    lines = key_values(rows)
    lines.append(f"rules (counted in this replica since {format_time(response.loaded_at)}):")
    lines.extend("  " + line for line in table_lines(table, numbers=frozenset({1, 2, 3})))
    return lines


def _last_reload(response: creation_policy_service_pb2.GetPolicyResponse) -> str:
    if not response.HasField("last_reload_at"):
        return "none tried"
    outcome = "refused, kept the revision above" if response.last_reload_error else "ok"
    return f"{format_time(response.last_reload_at)}, {outcome}"
