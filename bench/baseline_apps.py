"""The baselines of scripts/bench (bench/bench_http.py): what the adapter is compared with.

- B0: a bare Falcon app that reads the body, parses it as JSON and answers Chat's constant OK.
- B1: the same plus one unary grpcio call per request to a do-nothing echo server: the floor
  an adapter that makes one gRPC call per webhook can approach.
- echo: the do-nothing gRPC server B1 calls, one generic method with bytes in and out;
  echo-aio: the same on grpc.aio (scripts/bench --only floor compares them).

Both apps are served by gunicorn with the adapter's own settings (AdapterApplication's
load_config: gthread, CHAT_POLICY_HTTP_WORKERS workers, CHAT_POLICY_HTTP_THREADS threads,
SO_REUSEPORT, no preload); B1 dials on a channel made in each worker after fork with the
adapter's channel options and deadline. The echo server is a grpc.server on a
ThreadPoolExecutor with the policy service's options and thread count, without its
interceptor, servicers or store.

    python -m bench.baseline_apps b0 --bind 127.0.0.1:8081
    python -m bench.baseline_apps b1 --bind 127.0.0.1:8082 --target 127.0.0.1:50052
    python -m bench.baseline_apps echo --bind 127.0.0.1:50052
    python -m bench.baseline_apps echo-aio --bind unix:/tmp/echo.sock

The bind addresses come from the command line; every other setting from the CHAT_POLICY_*
environment, as for the adapter and the service (unset: their defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from concurrent import futures
from typing import Any

import falcon
import grpc

from adapter.gunicorn_app import AdapterApplication
from adapter.settings import AdapterSettings
from chat_policy_shared.channel import ChannelSecurity, open_channel
from policy_service.server import SERVER_OPTIONS

OK = b'{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}'
FAILED = b'{"ActionStatus":"FAIL","ErrorCode":502,"ErrorInfo":"echo call failed"}'
ECHO_SERVICE = "bench.v1.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"
APPS = ("b0", "b1")


class ParseAndAnswer:
    """B0's only resource: read the body, parse it as JSON, answer OK."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer any POST with Chat's OK JSON once its body parsed."""
        body = json.loads(req.bounded_stream.read())
        if not isinstance(body, dict):
            raise falcon.HTTPBadRequest()
        resp.data = OK
        resp.content_type = falcon.MEDIA_JSON


class ParseCallAndAnswer:
    """B1's only resource: read and parse the body, send it to the echo server, answer OK."""

    def __init__(self, call: grpc.UnaryUnaryMultiCallable, timeout_s: float) -> None:
        self._call = call
        self._timeout_s = timeout_s

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer OK once the body parsed and the echo call returned; 502 if it failed."""
        raw = req.bounded_stream.read()
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise falcon.HTTPBadRequest()
        resp.content_type = falcon.MEDIA_JSON
        try:
            self._call(raw, timeout=self._timeout_s)
        except grpc.RpcError:
            resp.status = falcon.HTTP_502
            resp.data = FAILED
            return
        resp.data = OK


def make_b0() -> falcon.App[falcon.Request, falcon.Response]:
    """B0: parse and answer, on the adapter's webhook path."""
    app = falcon.App()
    app.add_route(AdapterSettings.from_env().webhook_path, ParseAndAnswer())
    return app


def make_b1(target: str) -> falcon.App[falcon.Request, falcon.Response]:
    """B1: parse, one echo call on a channel made now (in the worker, after fork), answer."""
    settings = AdapterSettings.from_env()
    channel = open_channel(target, ChannelSecurity())
    # No serializers: the request and the answer are bytes as they are.
    call = channel.unary_unary(ECHO_METHOD)
    app = falcon.App()
    app.add_route(settings.webhook_path, ParseCallAndAnswer(call, settings.grpc_deadline_ms / 1000))
    return app


class BaselineApplication(AdapterApplication):
    """gunicorn with exactly the adapter's configuration, serving a baseline app instead."""

    def __init__(self, settings: AdapterSettings, name: str, target: str) -> None:
        self._name, self._target = name, target
        super().__init__(settings)

    def load_config(self) -> None:
        """The adapter's settings; without its metrics hook (no metrics here)."""
        super().load_config()
        self.cfg.set("child_exit", _nothing)
        self.cfg.set("proc_name", f"bench-{self._name}")

    def load(self) -> Any:
        """Build the app in the worker (no preload: after fork)."""
        return make_b0() if self._name == "b0" else make_b1(self._target)


def _nothing(arbiter: Any, worker: Any) -> None:
    """A gunicorn hook that does nothing."""


# The threaded policy service's pool before grpc.aio: CHAT_POLICY_GRPC_MAX_WORKERS (8) plus a
# thread per watch stream (CHAT_POLICY_WATCH_MAX_STREAMS, 100).
THREADED_SERVICE_WORKERS = 108


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    """The echo method: the request back."""
    return request


def echo_server(bind: str) -> tuple[grpc.Server, int]:
    """The do-nothing threaded gRPC server, bound (not started): the thread pool the policy
    service had before it moved to grpc.aio (8 workers + 100 watch threads) and its options
    (policy_service/server.py), one generic method, no interceptor."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=THREADED_SERVICE_WORKERS), options=SERVER_OPTIONS
    )
    handler = grpc.method_handlers_generic_handler(
        ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(bind)
    if port == 0:
        raise SystemExit(f"echo server: cannot listen on {bind}")
    return server, port


def serve_echo(bind: str) -> int:
    """Run the echo server until SIGTERM or SIGINT."""
    server, port = echo_server(bind)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    server.start()
    print(f"echo server listening on port {port}", flush=True)
    while not stop.wait(0.1):  # in slices, so that the handler runs promptly
        pass
    server.stop(1).wait()
    return 0


async def _echo_async(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    """The grpc.aio echo method: the request back."""
    return request


async def _serve_echo_aio(bind: str) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo_async)}
    )
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(bind) == 0:
        raise SystemExit(f"echo server: cannot listen on {bind}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


def serve_echo_aio(bind: str) -> int:
    """The echo server on grpc.aio (one event loop, no thread pool) until SIGTERM or SIGINT:
    the floor if the policy service were an asyncio server."""
    asyncio.run(_serve_echo_aio(bind))
    return 0


def main(argv: list[str]) -> int:
    """Serve B0, B1 or the echo server."""
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_apps", description=__doc__)
    parser.add_argument("what", choices=(*APPS, "echo", "echo-aio"))
    parser.add_argument("--bind", required=True, help="host:port to listen on")
    parser.add_argument("--target", default="", help="B1: the echo server's host:port")
    args = parser.parse_args(argv)
    if args.what == "echo":
        return serve_echo(args.bind)
    if args.what == "echo-aio":
        return serve_echo_aio(args.bind)
    if args.what == "b1" and not args.target:
        parser.error("b1 needs --target")
    settings = AdapterSettings.from_env({**os.environ, "CHAT_POLICY_HTTP_BIND": args.bind})
    BaselineApplication(settings, args.what, args.target).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
