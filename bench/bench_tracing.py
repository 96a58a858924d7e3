"""What tracing costs per webhook, both processes' work together: `scripts/bench-tracing`.

Each measurement is a fresh Python process (the global tracer provider is set once per
process, and a process is how production configures it) holding the whole path in one uvloop
event loop: the adapter's ASGI app as a worker builds it (authentication on, its request log
line and the service's RPC line formatted to /dev/null, metrics in multi-process mode), its
real GrpcPolicyClient, and the real PolicyService (grpc.aio, its interceptor, SQLite in a
temporary directory, the shipped default policy) on a loopback port. It sends --calls signed
BeforeCreateGroup webhooks (each decided), then --calls AfterGroupFull ones (each a new group
written to the store), one after another, and reports the process's CPU time (every thread:
grpc's, SQLite's writer, the span processor's) per webhook of each.

Variants, taking turns in each of --rounds rounds:

- off: no OTEL_* variable, as shipped;
- on: OTEL_EXPORTER_OTLP_ENDPOINT pointed at a sink on loopback (another process, which
  takes every export and answers at once, like a collector; its CPU is not counted): every
  webhook sampled (the default sampler), spans batched (BatchSpanProcessor, defaults) and
  exported over OTLP/gRPC while the webhooks run; the last batch, exported at shutdown, is
  not in the figure;
- on, 1 in 10 sampled: the same with OTEL_TRACES_SAMPLER=parentbased_traceidratio and
  OTEL_TRACES_SAMPLER_ARG=0.1: the adapter records a tenth of the webhooks, and the service
  follows its choice; the others cost unrecorded spans and the traceparent;
- with --baseline-ref REF (e.g. main): "off" run on that commit's code, exported with
  `git archive` to a temporary directory (this module copied in), to show what "off" costs
  against the code before tracing.

Each cell is the median of the rounds (min..max); ratios are taken within a round against
"off". The Markdown report goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("before", "after")  # bench.wrk's webhooks: BeforeCreateGroup, AfterGroupFull
# The adapter samples a tenth of the webhooks; the service follows its choice (the sampled
# flag of traceparent).
SAMPLE_ONE_IN_TEN = {
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.1",
}
SINK_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def measure(calls: int) -> dict[str, float]:
    """In this process, the configured path's CPU µs per webhook of each kind (KINDS), and
    "traced": 1 if tracing was on, else 0."""
    import uvloop

    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as workdir:
        metrics_dir = Path(workdir, "metrics")
        metrics_dir.mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # before the metrics import
        from chat_policy_shared import logs

        logs.configure()
        with open(os.devnull, "w") as devnull:
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler):
                    handler.setStream(devnull)
            loop = uvloop.new_event_loop()
            try:
                return loop.run_until_complete(_measure(Path(workdir), calls, loop))
            finally:
                loop.close()


async def _measure(workdir: Path, calls: int, loop: asyncio.AbstractEventLoop) -> dict[str, float]:
    from adapter.app import create_app
    from adapter.policy_client import GrpcPolicyClient
    from adapter.settings import AdapterSettings
    from adapter.spool import Spool
    from bench.bench_app import SDK_APP_ID, TOKEN, WEBHOOK_PATH, asgi_requests
    from chat_policy_shared.channel import ChannelSecurity
    from policy_service.engine.policy_file import load_policy
    from policy_service.engine.policy_reload import PolicyHolder
    from policy_service.server import PolicyService
    from policy_service.settings import ServiceSettings
    from policy_service.stores.store import open_store

    tracer, traced = _tracer()
    store = await open_store(f"sqlite:///{workdir / 'policy.sqlite'}")
    service = PolicyService(
        ServiceSettings(grpc_bind="127.0.0.1:0"),
        store,
        PolicyHolder(None, load_policy(None)),
        **traced,
    )
    await service.start()
    client_arguments: list[Any] = []
    if tracer is not None:
        from chat_policy_shared.trace_context import with_trace_context

        client_arguments.append(with_trace_context)
    client = GrpcPolicyClient(
        f"127.0.0.1:{service.port}", ChannelSecurity(), 2000, *client_arguments
    )
    settings = AdapterSettings.from_env(
        {
            "CHAT_POLICY_SDKAPPIDS": str(SDK_APP_ID),
            "CHAT_POLICY_CALLBACK_TOKENS": TOKEN,
            "CHAT_POLICY_WEBHOOK_PATH": WEBHOOK_PATH,
            "CHAT_POLICY_DATA_DIR": str(workdir),
        }
    )
    spool = Spool(settings.spool_path, settings.spool_max_events)
    app = create_app(settings, client, spool, lambda: None, **traced)
    try:
        for kind in KINDS:
            await _send(app, asgi_requests(kind, "warm", 200))
        result = {}
        for kind in KINDS:
            requests = asgi_requests(kind, "timed", calls)
            started = time.process_time_ns()
            await _send(app, requests)
            result[kind] = (time.process_time_ns() - started) / 1e3 / calls
        result["traced"] = float(tracer is not None)
        return result
    finally:
        await client.close()
        await service.stop(None)
        await store.close()
        spool.close()
        if tracer is not None:
            from chat_policy_shared import tracing

            tracing.shut_down()


def _tracer() -> tuple[Any, dict[str, Any]]:
    """The tracer the OTEL_* variables ask for, and the keyword arguments that hand it to
    create_app and PolicyService; (None, {}) when off, or on code from before tracing."""
    try:
        from chat_policy_shared import tracing
    except ImportError:  # --baseline-ref: code without tracing
        return None, {}
    tracer = tracing.start("chat-policy-bench")
    return tracer, ({} if tracer is None else {"tracer": tracer})


async def _send(app: Callable[..., Any], requests: list[tuple[dict[str, Any], bytes]]) -> None:
    """Await the app once per request; raise unless each is answered 200 with ErrorCode 0."""
    from bench.bench_app import check_answers

    statuses: list[int] = []
    answers: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        else:
            answers.append(message.get("body", b""))

    for scope, content in requests:

        async def receive(content: bytes = content) -> dict[str, Any]:
            return {"type": "http.request", "body": content, "more_body": False}

        await app(scope, receive, send)
    check_answers(statuses, answers)


def sink() -> None:
    """Serve an OTLP trace sink on a free loopback port (printed), until stdin closes."""
    import grpc

    def export(request: bytes, context: object) -> bytes:
        return b""  # an empty ExportTraceServiceResponse

    handler = grpc.unary_unary_rpc_method_handler(export)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SINK_METHOD.split("/")[1], {"Export": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(None)


def run_measure(tree: Path, calls: int, environ: dict[str, str]) -> dict[str, float]:
    """One measurement in a new process running the code of `tree`."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.bench_tracing", "--measure", "--calls", str(calls)],
        cwd=tree,
        env={**environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'protos'}"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"measurement in {tree} failed:\n{result.stderr[-3000:]}")
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    if measured["traced"] != float("OTEL_EXPORTER_OTLP_ENDPOINT" in environ):
        raise RuntimeError(f"tracing was {'on' if measured['traced'] else 'off'} in {tree}")
    return measured


def baseline_tree(ref: str, directory: Path) -> Path:
    """The code of commit `ref`, exported under `directory`, with this module copied in."""
    tree = directory / "baseline"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    shutil.copy(Path(__file__), tree / "bench" / "bench_tracing.py")
    return tree


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> str:
    """The Markdown table: CPU µs per webhook of each kind, and ÷ off within each round."""
    from bench.report import cell, heading, markdown_table

    baseline = results["off"]
    rows = []
    for name, rounds in results.items():
        row = [name]
        for kind in KINDS:
            values = [measured[kind] for measured in rounds]
            ratios = [m[kind] / b[kind] for m, b in zip(rounds, baseline, strict=True)]
            row += [cell(values), cell(ratios, lambda value: f"{value:.3f}")]
        rows.append(row)
    columns = [
        "variant",
        "BeforeCreateGroup, CPU µs/webhook",
        "÷ off",
        "AfterGroupFull, CPU µs/webhook",
        "÷ off",
    ]
    command = ["scripts/bench-tracing", *sys.argv[1:]]
    return "\n".join([*heading(command), "", *markdown_table(columns, rows)])


def parse_args(argv: list[str]) -> argparse.Namespace:
    """--rounds, --calls, --baseline-ref; --measure and --sink are the children's modes."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench-tracing", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument(
        "--calls", type=int, default=2000, help="webhooks of each kind per measurement"
    )
    parser.add_argument("--baseline-ref", help="also run 'off' on this commit's code (e.g. main)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be positive")
    return args


def main(argv: list[str]) -> int:
    """Run the rounds, each variant in a process of its own, and print the table."""
    args = parse_args(argv)
    if args.sink:
        sink()
        return 0
    if args.measure:
        print(json.dumps(measure(args.calls)))
        return 0
    from bench.report import progress

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHAT_POLICY_"))}
    with (
        tempfile.TemporaryDirectory(prefix="bench-tracing-") as directory,
        subprocess.Popen(
            [sys.executable, "-m", "bench.bench_tracing", "--sink"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as sink_process,
    ):
        assert sink_process.stdout is not None and sink_process.stdin is not None
        port = int(sink_process.stdout.readline())
        on = {**environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
        variants = {
            "off": (ROOT, environ),
            "on": (ROOT, on),
            "on, 1 in 10 sampled": (ROOT, {**on, **SAMPLE_ONE_IN_TEN}),
        }
        if args.baseline_ref:
            name = f"off on {args.baseline_ref}"
            variants[name] = (baseline_tree(args.baseline_ref, Path(directory)), environ)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        names = list(variants)
        for number in range(args.rounds):
            for name in names[number % len(names) :] + names[: number % len(names)]:
                tree, variant_environ = variants[name]
                results[name].append(run_measure(tree, args.calls, variant_environ))
            progress("bench-tracing", f"round {number + 1} of {args.rounds} done")
        sink_process.stdin.close()
    print(report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
