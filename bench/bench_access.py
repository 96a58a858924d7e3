"""Benchmark of the caller check in process, run by `scripts/bench-access` (see --help).

Two measures, each the median of --rounds rounds (min..max beside it):

- the check alone: read the request ID and `authorization` from the metadata, then
  CallerCheck.admit (the certificate identity under mutual TLS, the token's caller, the
  permission) for a realistic token call and a realistic client-certificate call, against an
  access file of --callers callers with two tokens each; wall-clock µs per call over --checks
  calls. The context is a stand-in: the metadata and the auth context (shaped like grpc's for a
  SPIFFE certificate) are built once, so grpc's own cost of making them (about 4 µs and 1.5
  µs here) is not in this figure; the interceptor reads the metadata without an access file
  too, for the request ID.
- unary calls through an in-process grpc.aio server with the production interceptor (the
  concurrency budget included), once without an access file and once with it, on one event
  loop with one channel each; every call carries the token, so the client's work is the same
  and the difference is the server's check. The two servers take turns in blocks of --block
  calls, so that drift of the machine falls on both; per round, µs of the process's CPU time
  per call of each (client and server together; CPU time, not wall time, so that what other
  tenants take of the cores does not count) and the difference. The RPC log lines are off
  (they cost the same with and without the check).

The goal: the check adds less than GOAL_US per unary call. The Markdown report goes to stdout,
progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import grpc

from bench.report import cell, heading, markdown_table, verdict
from bench.report import progress as report_progress
from policy_service.access.access_file import load_access, token_digest_line
from policy_service.access.access_reload import AccessHolder
from policy_service.access.permissions import permission_of
from policy_service.api.caller_check import CallerCheck
from policy_service.api.rpc_interceptor import (
    Budget,
    InterceptedServer,
    RpcInterceptor,
    read_metadata,
)

GOAL_US = 5.0
METHOD = "/chatpolicy.v1.GroupStateService/RecordGroupFull"
TOKEN = "bench-token-of-the-adapter-0123456789abcdefghij"  # as long as `access token` makes


def progress(message: str) -> None:
    """Tell the person waiting what the bench is doing."""
    report_progress("bench-access", message)


def access_file(directory: Path, callers: int) -> Path:
    """An access file of `callers` callers, two tokens and a certificate each
    (certificate_identity); the adapter (TOKEN) and every other caller may write group
    state."""
    lines = []
    for index in range(callers):
        name = "adapter" if index == 0 else f"caller-{index}"
        token = TOKEN if index == 0 else f"token-{index}"
        lines += [
            f"[callers.{name}]",
            f'tokens = ["{token_digest_line(token)}", "{token_digest_line(token + "-old")}"]',
            f'certificates = ["{certificate_identity(index)}"]',
            'allow = ["creation.check", "group-state.write", "group-state.read"]',
            "",
        ]
    path = directory / "access.toml"
    path.write_text("\n".join(lines))
    return path


def certificate_identity(index: int) -> str:
    """The SPIFFE ID in the client certificate of the access file's caller `index`."""
    return f"spiffe://example.org/caller-{index}"


class FakeContext:
    """What the interceptor reads of a grpc.aio ServicerContext: the metadata a grpc-python
    client sends, and the auth context of a mutual-TLS peer."""

    def __init__(self, metadata: tuple[tuple[str, str], ...], auth: Mapping[str, Any]) -> None:
        self._metadata, self._auth = metadata, auth

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def auth_context(self) -> Mapping[str, Any]:
        return self._auth


def token_context() -> FakeContext:
    """A plaintext call of the adapter: request ID, user agent, then its token."""
    return FakeContext(
        (
            ("x-request-id", "0116f25f18c24d1c8a797793f971a287"),
            ("user-agent", "grpc-python-asyncio/1.68.1 grpc-c/44.1.0 (linux; chttp2)"),
            ("authorization", f"Bearer {TOKEN}"),
        ),
        {},
    )


def certificate_context(identity: str) -> FakeContext:
    """A mutual-TLS call without a token: the auth context grpc gives for a certificate with
    the SPIFFE ID `identity`."""
    return FakeContext(
        (
            ("x-request-id", "0116f25f18c24d1c8a797793f971a287"),
            ("user-agent", "grpc-python-asyncio/1.68.1 grpc-c/44.1.0 (linux; chttp2)"),
        ),
        {
            "transport_security_type": [b"ssl"],
            "x509_subject": [b"CN=caller"],
            "x509_common_name": [b"caller"],
            "x509_pem_cert": [b"-----BEGIN CERTIFICATE-----\n" + b"A" * 900],
            "x509_subject_alternative_name": [identity.encode()],
            "peer_uri": [identity.encode()],
            "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"],
            "ssl_session_reused": [b"false"],
        },
    )


def check_us(check: CallerCheck, context: FakeContext, calls: int) -> float:
    """µs per check of one call, over `calls` calls: the request ID and authorization read
    from its metadata (read_metadata, which the interceptor does without an access file too),
    then CallerCheck.admit."""
    permission = permission_of(METHOD)
    admit = check.admit
    started = time.perf_counter_ns()
    for _ in range(calls):
        _, authorization, _ = read_metadata(context)  # type: ignore[arg-type]
        admit(METHOD, permission, authorization, context)  # type: ignore[arg-type]
    return (time.perf_counter_ns() - started) / calls / 1000


async def record(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """The cheapest handler: what is left is grpc and the interceptor."""
    return b""


async def start_server(callers: CallerCheck | None) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server with the production interceptor serving METHOD, on a free port."""
    server = InterceptedServer(RpcInterceptor(Budget(max_streams=2000, max_unary=256), callers))
    service, _, method = METHOD[1:].partition("/")
    handler = grpc.unary_unary_rpc_method_handler(record)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {method: handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def unary_rounds(holder: AccessHolder, args: argparse.Namespace) -> list[tuple[float, float]]:
    """Per round: (µs per call without an access file, µs per call with it)."""
    servers = [await start_server(None), await start_server(CallerCheck(holder, False))]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _, port in servers]
    calls = [channel.unary_unary(METHOD) for channel in channels]
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    try:
        for call in calls:  # warm up: connections, caches
            for _ in range(args.block):
                await call(b"", metadata=metadata, timeout=5)
        rounds = []
        for round_ in range(args.rounds):
            spent_ns, counted = [0, 0], [0, 0]
            for block in range(2 * args.unary // args.block):
                which = (block + round_) % 2
                started = time.process_time_ns()
                for _ in range(args.block):
                    await calls[which](b"", metadata=metadata, timeout=5)
                spent_ns[which] += time.process_time_ns() - started
                counted[which] += args.block
            rounds.append((spent_ns[0] / counted[0] / 1000, spent_ns[1] / counted[1] / 1000))
            without, with_ = rounds[-1]
            progress(f"unary round {round_ + 1}: {without:.1f} vs {with_:.1f} µs of CPU")
        return rounds
    finally:
        for channel in channels:
            await channel.close()
        for server, _ in servers:
            await server.stop(None)


def report(
    argv: list[str],
    args: argparse.Namespace,
    checks: Mapping[str, list[float]],
    unary: list[tuple[float, float]],
) -> str:
    """The Markdown report."""
    differences = [with_ - without for without, with_ in unary]
    lines = heading(["scripts/bench-access", *argv], [f"grpcio {grpc.__version__}"])
    lines += ["", f"The check alone, {args.checks:,} calls per round, {args.rounds} rounds:", ""]
    lines += markdown_table(
        ["call", "µs per check"], [[name, cell(values)] for name, values in checks.items()]
    )
    lines += [
        "",
        f"Unary calls in process, {args.unary:,} per server per round (CPU time, client and"
        " server):",
        "",
    ]
    rows: Iterable[list[str]] = [
        ["no access file", cell([without for without, _ in unary])],
        [f"access file ({args.callers} callers), token", cell([with_ for _, with_ in unary])],
        [
            "difference",
            f"{cell(differences)}: < {GOAL_US:g} "
            f"{verdict(statistics.median(differences) < GOAL_US)}",
        ],
    ]
    lines += markdown_table(["server", "µs per unary call"], rows)
    return "\n".join(lines)


def positive_int(text: str) -> int:
    """An argparse type: an integer above zero."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of scripts/bench-access."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench-access",
        description="Time the caller check in process, alone and in unary calls through a"
        f" grpc.aio server (goal: < {GOAL_US:g} µs per unary call).",
    )
    parser.add_argument("--rounds", type=positive_int, default=5, help="rounds (5 or more)")
    parser.add_argument("--checks", type=positive_int, default=200_000, help="checks per round")
    parser.add_argument(
        "--unary", type=positive_int, default=10_000, help="unary calls per server per round"
    )
    parser.add_argument("--block", type=positive_int, default=20, help="calls per turn")
    parser.add_argument("--callers", type=positive_int, default=20, help="callers in the file")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Measure and report."""
    args = parse_args(argv)
    logging.getLogger("policy_service").setLevel(logging.WARNING)
    with TemporaryDirectory(prefix="bench-access-") as directory:
        path = access_file(Path(directory), args.callers)
        holder = AccessHolder(path, load_access(path))
    checks: dict[str, list[float]] = {"token (plaintext)": [], "client certificate (mTLS)": []}
    by_token, by_certificate = CallerCheck(holder, False), CallerCheck(holder, True)
    last = args.callers - 1  # the certificate call's caller: the file's last
    for round_ in range(args.rounds):
        checks["token (plaintext)"].append(check_us(by_token, token_context(), args.checks))
        checks["client certificate (mTLS)"].append(
            check_us(by_certificate, certificate_context(certificate_identity(last)), args.checks)
        )
        progress(f"check round {round_ + 1} done")
    unary = asyncio.run(unary_rounds(holder, args))
    print(report(argv, args, checks, unary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
