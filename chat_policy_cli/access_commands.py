"""`chat-policy access check` and `chat-policy access token`: the access file, without a server.

`access check FILE` loads an access file and prints `FILE: ok, N callers, revision
sha256:...`, what anyone may call, and per caller how it is recognised and what it may call
(exit 0); or the problem at `FILE:LINE` on stderr (exit 1).

`access token` prints a new random bearer token on its first line and, on its second, the
`sha256:...` line to put in the caller's `tokens` in the access file. The token itself goes to
the caller only (e.g. into its CHAT_POLICY_GRPC_TOKEN_FILE); the file holds its hash.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from policy_service.access.access_file import AccessError, load_access, token_digest_line
from policy_service.access.access_rules import Grant
from policy_service.access.permissions import ALL, methods_of


def add_access_arguments(access: argparse.ArgumentParser) -> None:
    """The subcommands of `chat-policy access`: check and token."""
    subcommands = access.add_subparsers(dest="access_command", required=True, metavar="COMMAND")
    check = subcommands.add_parser(
        "check",
        help="load an access file and print who may call what (exit 1 if it is not valid)",
    )
    check.add_argument("file", metavar="FILE", help="the access file")
    subcommands.add_parser(
        "token", help="print a new bearer token and the sha256: line for the access file"
    )


def run_access(args: argparse.Namespace) -> int:
    """Run `access check` or `access token`."""
    if args.access_command == "check":
        return check_access_file(args.file)
    token = secrets.token_urlsafe(32)
    print(token)
    print(token_digest_line(token))
    print(
        "first line: the token, for the caller only (e.g. its CHAT_POLICY_GRPC_TOKEN_FILE);"
        " second: for the caller's `tokens` in the access file",
        file=sys.stderr,
    )
    return 0


def check_access_file(file: str) -> int:
    """Load the access FILE; print who may call what (0) or the problem (1)."""
    try:
        rules = load_access(Path(file))
    except AccessError as error:
        print(error, file=sys.stderr)
        return 1
    count = len(rules.grants)
    print(f"{file}: ok, {count} caller{'' if count == 1 else 's'}, revision {rules.revision}")
    print(f"open to anyone: {', '.join(sorted(rules.open)) or 'nothing'}")
    for grant in rules.grants:
        print(f"caller {grant.caller.name}{_relays(grant)}: {_recognised_by(grant)}")
        for permission in grant.permissions or ("(nothing)",):
            print(f"  {permission:<18} {_methods(permission)}")
    return 0


def _relays(grant: Grant) -> str:
    return " (relays Chat)" if grant.caller.relays_chat else ""


def _recognised_by(grant: Grant) -> str:
    """How the caller is recognised, e.g. `2 tokens, certificate spiffe://x/y`."""
    ways = []
    if grant.token_digests:
        count = len(grant.token_digests)
        ways.append(f"{count} token{'' if count == 1 else 's'}")
    ways.extend(f"certificate {identity}" for identity in grant.certificates)
    return ", ".join(ways)


def _methods(permission: str) -> str:
    if permission == ALL:
        return "every method"
    return ", ".join(method.rpartition("/")[2] for method in methods_of(permission))
