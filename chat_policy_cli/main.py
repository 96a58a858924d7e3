"""The `chat-policy` command: `service`, `adapter` or `run` (both, supervised), and
`policy check` / `policy test` to check and test a policy file without a server; and the
operator commands: `groups get|list|watch|clear` and `decide` (ask the running policy
service), `sign` and `simulate` (Chat's side of a webhook), `spool list|replay|drop` (the
adapter's set-aside events)."""

from __future__ import annotations

import argparse
import os
import sys

from chat_policy_cli.decide_command import add_decide_command
from chat_policy_cli.group_commands import add_group_commands
from chat_policy_cli.spool_commands import add_spool_commands
from chat_policy_cli.webhook_commands import add_webhook_commands
from chat_policy_shared import logs

# A command whose reader closed its stdout early (`| head`) ends quietly with this status:
# 128 + SIGPIPE, what a shell reports for a writer that SIGPIPE ended. Not 0 (the output was
# cut short) nor 1 (the command did not fail).
EXIT_CLOSED_PIPE = 141
SERVERS = ("service", "adapter", "run")


def main(argv: list[str] | None = None) -> int:
    """Parse the subcommand and run it; the exit status is the command's."""
    parser = argparse.ArgumentParser(
        prog="chat-policy",
        description="Policy backend for Tencent Cloud Chat group webhooks."
        " Configured by CHAT_POLICY_* environment variables (see README).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("service", help="run the gRPC policy service")
    commands.add_parser("adapter", help="run the webhook adapter (gunicorn)")
    commands.add_parser("run", help="run both, supervised; Ctrl-C stops both")
    add_policy_commands(commands.add_parser("policy", help="check or test a policy file"))
    add_group_commands(commands)
    add_decide_command(commands)
    add_webhook_commands(commands)
    add_spool_commands(commands)
    args = parser.parse_args(argv)
    if args.command not in SERVERS:
        return run_printing(args)
    logs.configure()
    if args.command == "service":
        from policy_service.server import main as service_main

        return service_main()
    if args.command == "adapter":
        from adapter.gunicorn_app import main as adapter_main

        return adapter_main()
    from chat_policy_cli.supervisor import run_both

    return run_both()


def add_policy_commands(policy: argparse.ArgumentParser) -> None:
    """The subcommands of `chat-policy policy`: check and test."""
    subcommands = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    check = subcommands.add_parser(
        "check", help="load a policy file and say whether it is valid (exit 1 if not)"
    )
    check.add_argument("file", metavar="FILE", help="the policy file")
    test = subcommands.add_parser(
        "test",
        help="run a TOML file of test cases against a policy"
        " (exit 1 if a case fails, 2 if the cases or the policy are invalid)",
    )
    test.add_argument("cases", metavar="CASES", help="the cases file")
    test.add_argument(
        "--policy", metavar="FILE", help="the policy to test; overrides the cases file's `policy`"
    )
    test.add_argument("--json", action="store_true", help="print one JSON document")


def run_printing(args: argparse.Namespace) -> int:
    """Run a command that prints (`policy`, or an operator command); its exit status, or
    EXIT_CLOSED_PIPE when its reader stopped reading, without a traceback.

    As the Python docs' "Note on SIGPIPE" says: stdout is pointed at /dev/null, so that the
    flush at exit does not fail again. The servers are left out: their stdout is the log,
    which the logging module guards itself, and a BrokenPipeError in them is no reader gone.
    """
    try:
        if hasattr(args, "run"):  # an operator command: it set its own run function
            status: int = args.run(args)
        else:
            status = run_policy_command(args)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_CLOSED_PIPE
    return status


def run_policy_command(args: argparse.Namespace) -> int:
    """Run `policy check` or `policy test`; the exit status is the command's."""
    from chat_policy_cli.policy_commands import check_policy_file, run_policy_tests

    if args.policy_command == "check":
        return check_policy_file(args.file)
    return run_policy_tests(args.cases, policy=args.policy, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
