"""Calling the policy service from an operator command: the channel (target and TLS from
the environment), and a failed call as one line on stderr (and a JSON document with --json)
with exit status 1.

grpc is imported only when a command calls the service, so that `--help` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from chat_policy_cli.output import EXIT_CONFIG, fail, print_json
from chat_policy_shared.channel import (
    ChannelSecurity,
    ChannelSettingsError,
    dial_target,
    open_channel,
)

if TYPE_CHECKING:
    import grpc

MAX_PAGE_SIZE = 1000  # the service caps page_size here

Item = TypeVar("Item")

RPC_EXIT_STATUSES = """\
exit status:
  0  the call succeeded
  1  the call failed: one line on stderr with the gRPC status code, its details and the
     google.rpc.ErrorInfo reason (with --json, also {"error": {...}} on stdout)
  2  bad arguments or configuration (e.g. a CHAT_POLICY_GRPC_TLS_* file that cannot be read)"""


def call_service(args: argparse.Namespace, body: Callable[[grpc.Channel], int]) -> int:
    """Open a channel to args.target (TLS settings from the environment), run body on it and
    return its status; an RPC error prints one line and is 1, a bad TLS setting is 2."""
    import grpc

    target = args.target or dial_target()
    try:
        channel = open_channel(target, ChannelSecurity.from_env())
    except ChannelSettingsError as error:
        return fail(args, str(error), EXIT_CONFIG)
    with channel:
        try:
            return body(channel)
        except grpc.RpcError as error:
            return report_rpc_error(args, error, target)


def report_rpc_error(
    args: argparse.Namespace, error: grpc.RpcError, target: str, prefix: str = ""
) -> int:
    """Print a failed call in one line (and with --json its document on stdout); return 1."""
    document = rpc_error_dict(error)
    if args.json:
        print_json({"error": document})
    return fail(args, prefix + rpc_error_line(document, target))


def rpc_error_dict(error: grpc.RpcError) -> dict[str, object]:
    """The status code name, details, and the ErrorInfo's reason and metadata if it has one."""
    import grpc
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    code = error.code() if isinstance(error, grpc.Call) else None
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    document: dict[str, object] = {
        "code": code.name if code is not None else "UNKNOWN",
        "details": " ".join((details or "").split()),
    }
    try:
        status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    except ValueError:  # the status details disagree with the call's code or message
        status = None
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            document["reason"] = info.reason
            if info.metadata:
                document["metadata"] = dict(info.metadata)
            break
    return document


def rpc_error_line(document: Mapping[str, object], target: str) -> str:
    """`CODE: details (REASON)`; for a service that does not answer, the target too."""
    line = f"{document['code']}: {document['details'] or '(no details)'}"
    notes = [str(document["reason"])] if "reason" in document else []
    if document["code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        notes.append(f"target {target}")
    return f"{line} ({'; '.join(notes)})" if notes else line


def collect_pages(
    fetch: Callable[[int, str], tuple[Sequence[Item], str]], limit: int | None
) -> tuple[list[Item], str]:
    """Call fetch(page_size, page_token) page after page, until the last page or until
    `limit` items (None: every page); the items and the token that would continue them."""
    items: list[Item] = []
    token = ""
    while True:
        wanted = MAX_PAGE_SIZE if limit is None else min(MAX_PAGE_SIZE, limit - len(items))
        page, token = fetch(wanted, token)
        items.extend(page)
        if not token or (limit is not None and len(items) >= limit):
            return items, token
