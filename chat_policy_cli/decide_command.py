"""`chat-policy decide`: ask the running policy service for a group-creation decision.

The request is what a Group.CallbackBeforeCreateGroup webhook with these fields would make
(CheckGroupCreation), and the answer is the one the webhook would give. By default it is a dry
run: decided and explained by the live policy, but not recorded, not counted, and taking no
rate-limit slot. With --live the service treats it as Chat's request: it is recorded
(ListDecisions) and an allowed one counts towards rate limits.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from chat_policy_cli.arguments import HelpFormatter, add_grpc_options, non_negative_int, sdk_app_id
from chat_policy_cli.environment import ConfigError, default_sdk_app_id
from chat_policy_cli.output import (
    EXIT_CONFIG,
    EXIT_OK,
    enum_word,
    fail,
    key_values,
    message_dict,
    print_json,
)
from chat_policy_cli.service_calls import call_service

if TYPE_CHECKING:
    import grpc

    from chatpolicy.v1 import creation_policy_service_pb2

DECIDE_EXIT_STATUSES = """\
exit status:
  0  the service decided, whether it allows or denies: a refusal is an answer, not an error
  1  the call failed: one line on stderr with the gRPC status code, its details and the
     google.rpc.ErrorInfo reason
  2  bad arguments or configuration"""


def add_decide_arguments(decide: argparse.ArgumentParser) -> None:
    """The options of `chat-policy decide`."""
    decide.description = (
        "Ask the running policy service whether a group may be created"
        " (CheckGroupCreation), with the fields a Group.CallbackBeforeCreateGroup webhook"
        " carries. Prints the decision, the error_code and error_info Chat would get, the"
        " deciding rule and its reason, the policy revision, the decision id and every"
        " evaluated rule. A dry run by default: the service decides with its live policy"
        " (rate limits count the creations made so far and this one) but records nothing and"
        " takes no rate-limit slot. --live asks as Chat's request would: the decision is"
        " recorded and an allowed one counts towards rate limits."
    )
    decide.epilog = DECIDE_EXIT_STATUSES
    decide.formatter_class = HelpFormatter
    decide.add_argument(
        "--app",
        type=sdk_app_id,
        metavar="ID",
        help="SdkAppid (default: the first of $CHAT_POLICY_SDKAPPIDS, else the demo id)",
    )
    decide.add_argument(
        "--operator", required=True, metavar="USER", help="Operator_Account: who creates it"
    )
    decide.add_argument(
        "--owner", metavar="USER", help="Owner_Account: who will own it (default: the operator)"
    )
    decide.add_argument(
        "--type",
        default="",
        metavar="TYPE",
        help="Type as Chat sends it: Private/Work, Public, ChatRoom/Meeting, AVChatRoom,"
        " Community (default: none)",
    )
    decide.add_argument("--name", default="", metavar="NAME", help="Name (default: none)")
    decide.add_argument(
        "--members",
        default="",
        metavar="A,B",
        help="the initial members' accounts, comma-separated (MemberList)",
    )
    decide.add_argument(
        "--create-group-num",
        type=non_negative_int,
        metavar="N",
        help="CreateGroupNum: groups of this type the owner has (default: absent)",
    )
    decide.add_argument("--client-ip", default="", metavar="IP", help="ClientIP (default: none)")
    decide.add_argument(
        "--platform",
        default="",
        metavar="P",
        help="OptPlatform: RESTAPI, Web, Android, iOS, ... (default: none)",
    )
    decide.add_argument(
        "--live",
        action="store_true",
        help="ask as Chat's request would: the decision is recorded, and an allowed one takes"
        " a rate-limit slot (default: a dry run, which does neither)",
    )
    decide.add_argument(
        "--explain",
        action="store_true",
        help="with --live, also print every evaluated rule's outcome (a dry run always does)",
    )
    add_grpc_options(decide)
    decide.set_defaults(prog=decide.prog)


def run_decide(args: argparse.Namespace) -> int:
    """CheckGroupCreation with the flags' request; the decision printed (or JSON)."""
    from chatpolicy.v1 import creation_policy_service_pb2 as pb
    from chatpolicy.v1 import creation_policy_service_pb2_grpc as rpc

    try:
        app = args.app if args.app is not None else default_sdk_app_id()
    except ConfigError as error:
        return fail(args, str(error), EXIT_CONFIG)
    request = pb.CheckGroupCreationRequest(
        sdk_app_id=app,
        operator_account=args.operator,
        owner_account=args.operator if args.owner is None else args.owner,
        group_type=args.type,
        name=args.name,
        member_accounts=[m.strip() for m in args.members.split(",") if m.strip()],
        client_ip=args.client_ip,
        opt_platform=args.platform,
        explain=args.explain,
        dry_run=not args.live,
    )
    if args.create_group_num is not None:
        request.create_group_num = args.create_group_num

    def decide(channel: grpc.Channel) -> int:
        stub = rpc.CreationPolicyServiceStub(channel)
        response = stub.CheckGroupCreation(request, timeout=args.timeout)
        if args.json:
            print_json(message_dict(response))
        else:
            print("\n".join(decision_lines(response)))
        return EXIT_OK

    return call_service(args, decide)


def decision_lines(response: creation_policy_service_pb2.CheckGroupCreationResponse) -> list[str]:
    """The decision as aligned `key value` lines, and the evaluations when there are some."""
    from chatpolicy.v1 import creation_policy_service_pb2 as pb

    rows = [
        ("decision", enum_word(pb.Decision.Name(response.decision), "DECISION_")),
        ("error_code", str(response.error_code)),
        ("error_info", response.error_info or "-"),
        ("rule", response.rule_id),
        ("reason", response.reason or "-"),
        ("revision", response.policy_revision),
        ("decision id", response.decision_id),
    ]
    if response.shadow_rule_ids:
        rows.append(("shadow rules", ", ".join(response.shadow_rule_ids)))
    if response.error_rule_ids:
        rows.append(("failed rules", ", ".join(response.error_rule_ids)))
    if response.dry_run:
        rows.append(("dry run", "yes: not recorded, no rate-limit slot taken (--live to act)"))
    lines = key_values(rows)
    if response.evaluations:
        lines.append("evaluations:")
        table = [
            (
                evaluation.rule_id,
                evaluation.kind,
                enum_word(pb.RuleResult.Name(evaluation.result), "RULE_RESULT_"),
                evaluation.reason,
            )
            for evaluation in response.evaluations
        ]
        widths = [max(len(row[column]) for row in table) for column in range(3)]
        lines.extend(
            "  "
            + "  ".join(value.ljust(width) for value, width in zip(row[:3], widths, strict=True))
            + (f"  {row[3]}" if row[3] else "")
            for row in table
        )
        lines = [line.rstrip() for line in lines]
    return lines
