"""The `chat-policy` command: `service`, `adapter` or `run` (both, supervised), and
`policy check` / `policy test` to check and test a policy file without a server, `access
check` / `access token` for the access file (who may call what); and the operator commands:
`policy show`, `decisions list`, `groups get|list|watch|clear`, `decide` and `audit list`
(ask the running policy service), `sign` and `simulate` (Chat's side of a webhook), `spool
list|replay|drop` (the adapter's set-aside events).

COMMANDS is the one table of them. A command's module is imported only when that command is
chosen, so `chat-policy --help` and the servers load none of the operator commands (nor grpc).
Nothing imports this module, so naming the modules as strings hides no import the import rules
(scripts/check-imports) would refuse.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

# A command whose reader closed its stdout early (`| head`) ends quietly with this status:
# 128 + SIGPIPE, what a shell reports for a writer that SIGPIPE ended. Not 0 (the output was
# cut short) nor 1 (the command did not fail).
EXIT_CLOSED_PIPE = 141

Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, and the functions of the module that defines it."""

    help: str
    module: str
    run: str
    """The module's function that runs the command: run(args) -> exit status."""
    add_arguments: str | None = None
    """The module's function that adds the command's arguments to its parser; None: none."""
    prints: bool = True
    """False for a server: its stdout is its log, not output a reader may stop reading."""

    def load(self) -> tuple[Callable[[argparse.ArgumentParser], None] | None, Run]:
        """Import the module now; its add_arguments (None if the command takes none) and run."""
        module = importlib.import_module(self.module)
        add_arguments = getattr(module, self.add_arguments) if self.add_arguments else None
        return add_arguments, cast(Run, getattr(module, self.run))


_SERVERS = "chat_policy_cli.server_commands"
COMMANDS = {
    "service": Command("run the gRPC policy service", _SERVERS, "run_service", prints=False),
    "adapter": Command("run the webhook adapter (gunicorn)", _SERVERS, "run_adapter", prints=False),
    "run": Command("run both, supervised; Ctrl-C stops both", _SERVERS, "run_both", prints=False),
    "policy": Command(
        "check or test a policy file, or show the running service's",
        "chat_policy_cli.policy_commands",
        "run_policy",
        "add_policy_arguments",
    ),
    "access": Command(
        "check an access file (who may call what), or make a bearer token for one",
        "chat_policy_cli.access_commands",
        "run_access",
        "add_access_arguments",
    ),
    "decisions": Command(
        "list the decisions the policy service recorded",
        "chat_policy_cli.decision_commands",
        "run_decisions",
        "add_decision_arguments",
    ),
    "groups": Command(
        "show, list, watch or clear the group-full state",
        "chat_policy_cli.group_commands",
        "run_groups",
        "add_group_arguments",
    ),
    "decide": Command(
        "ask the policy service whether a group may be created",
        "chat_policy_cli.decide_command",
        "run_decide",
        "add_decide_arguments",
    ),
    "sign": Command(
        "print the Sign Chat sends with a callback token",
        "chat_policy_cli.webhook_commands",
        "run_sign",
        "add_sign_arguments",
    ),
    "simulate": Command(
        "send a deployment a signed webhook as Chat would, and show its answer",
        "chat_policy_cli.webhook_commands",
        "run_simulate",
        "add_simulate_arguments",
    ),
    "audit": Command(
        "list the audit trail: who changed group state, and policy reloads",
        "chat_policy_cli.audit_commands",
        "run_audit",
        "add_audit_arguments",
    ),
    "spool": Command(
        "list, replay or drop the events the adapter's spool set aside",
        "chat_policy_cli.spool_commands",
        "run_spool",
        "add_spool_arguments",
    ),
}


def main(argv: list[str] | None = None) -> int:
    """Parse the subcommand and run it; the exit status is the command's."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="chat-policy",
        description="Policy backend for Tencent Cloud Chat group webhooks."
        " Configured by CHAT_POLICY_* environment variables (see docs/configuration.md).",
    )
    parser.add_argument(
        "--version", action=PrintVersion, help="print the installed version of chat-policy and exit"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The command is the first word that is not an option (the only options here are -h,
    # --help and --version, which take no value); only its module is loaded, the others are
    # a name and a help line. (Not args.command after parsing: `simulate` has an argument of
    # that name.)
    chosen = next((word for word in argv if not word.startswith("-")), "")
    run: Run | None = None
    for name, command in COMMANDS.items():
        command_parser = subparsers.add_parser(name, help=command.help)
        if name == chosen:
            add_arguments, run = command.load()
            if add_arguments is not None:
                add_arguments(command_parser)
    args = parser.parse_args(argv)
    assert run is not None  # parse_args accepted a command, so it was the chosen one
    if not COMMANDS[chosen].prints:
        return run(args)
    return run_printing(run, args)


class PrintVersion(argparse.Action):
    """--version: print `chat-policy X.Y.Z`, read from the installed package's metadata only
    when asked, and exit 0."""

    def __init__(self, option_strings: list[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from chat_policy_shared.version import version

        print(f"chat-policy {version()}")
        parser.exit()


def run_printing(run: Run, args: argparse.Namespace) -> int:
    """Run a command that prints (`policy`, or an operator command); its exit status, or
    EXIT_CLOSED_PIPE when its reader stopped reading, without a traceback.

    As the Python docs' "Note on SIGPIPE" says: stdout is pointed at /dev/null, so that the
    flush at exit does not fail again. The servers are left out: their stdout is the log,
    which the logging module guards itself, and a BrokenPipeError in them is no reader gone.
    """
    try:
        status = run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_CLOSED_PIPE
    return status


if __name__ == "__main__":
    sys.exit(main())
