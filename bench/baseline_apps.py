"""The baselines of scripts/bench (bench/bench_http.py): what the adapter is compared with.

- B0: a bare Falcon app that reads the body, parses it as JSON and answers Chat's constant OK.
- B1: the same plus one unary grpcio call per request to a do-nothing echo server: the floor
  an adapter that makes one gRPC call per webhook can approach.
- B1-async: B1 on asyncio: the same resource as a `falcon.asgi.App` under gunicorn's uvicorn
  worker (uvicorn_worker.UvicornWorker on uvloop with httptools' parser), calling a grpc.aio
  channel made in each worker's event loop (at ASGI lifespan startup), against echo-aio: the
  floor an asyncio adapter and an asyncio policy service can approach.
- echo: the do-nothing gRPC server B1 calls, one generic method with bytes in and out;
  echo-aio: the same on grpc.aio (B1-async's; scripts/bench --only floor also runs B1 against
  it).

B0 and B1 keep the model the adapter had until issue 18 (the floor it was first measured
against): gunicorn gthread workers, CHAT_POLICY_HTTP_WORKERS of them with
BENCH_B1_THREADS threads each (default 4), SO_REUSEPORT, no preload; B1-async the same
workers with the uvicorn worker, which has no threads. B1 dials on a channel made in each
worker after fork, B1-async in each worker's event loop, with the adapter's channel options
and deadline. The echo server is a grpc.server on a ThreadPoolExecutor of ECHO_THREADS
threads (the thread-pool policy service's default pool) with the policy service's options,
without interceptor, servicers or store; echo-aio the same on grpc.aio.

    python -m bench.baseline_apps b0 --bind 127.0.0.1:8081
    python -m bench.baseline_apps b1 --bind 127.0.0.1:8082 --target 127.0.0.1:50052
    python -m bench.baseline_apps b1async --bind 127.0.0.1:8083 --target 127.0.0.1:50053
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
from collections.abc import Mapping
from concurrent import futures
from typing import Any, ClassVar

import falcon
import falcon.asgi
import grpc
from gunicorn.app.base import BaseApplication
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from adapter.gunicorn_app import GunicornLogger
from adapter.settings import AdapterSettings
from chat_policy_shared.channel import CHANNEL_OPTIONS, ChannelSecurity, open_channel
from policy_service.server import SERVER_OPTIONS

OK = b'{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}'
FAILED = b'{"ActionStatus":"FAIL","ErrorCode":502,"ErrorInfo":"echo call failed"}'
ECHO_SERVICE = "bench.v1.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"
APPS = ("b0", "b1", "b1async")
# B0's and B1's threads per gthread worker (BENCH_B1_THREADS), and the echo server's pool: the
# thread-pool adapter's and service's defaults before issue 18 (4; 8 workers + 100 streams).
B1_THREADS = 4
ECHO_THREADS = 108


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


class AsyncParseCallAndAnswer:
    """B1-async's only resource: B1's, awaiting a grpc.aio call on the worker's loop."""

    def __init__(self, target: str, timeout_s: float) -> None:
        self._target, self._timeout_s = target, timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] | None = None

    async def process_startup(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        """ASGI lifespan startup, in the worker's event loop: open the channel there."""
        self._channel = grpc.aio.insecure_channel(self._target, options=_channel_options())
        self._call = self._channel.unary_unary(ECHO_METHOD)

    async def process_shutdown(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        """ASGI lifespan shutdown: close the channel."""
        if self._channel is not None:
            await self._channel.close()

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Answer OK once the body parsed and the echo call returned; 502 if it failed."""
        raw = await req.bounded_stream.read()
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise falcon.HTTPBadRequest()
        resp.content_type = falcon.MEDIA_JSON
        if self._call is None:
            raise RuntimeError("no channel: the ASGI lifespan startup did not run")
        try:
            await self._call(raw, timeout=self._timeout_s)
        except grpc.RpcError:
            resp.status = falcon.HTTP_502
            resp.data = FAILED
            return
        resp.data = OK


def _channel_options() -> list[tuple[str, Any]]:
    """The adapter's channel options (chat_policy_shared/channel.py), for a grpc.aio channel."""
    return list(CHANNEL_OPTIONS)


def make_b1async(target: str) -> falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]:
    """B1-async: B1's resource on ASGI; its grpc.aio channel opens at lifespan startup."""
    settings = AdapterSettings.from_env()
    resource = AsyncParseCallAndAnswer(target, settings.grpc_deadline_ms / 1000)
    app: falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response] = falcon.asgi.App(
        middleware=[resource]
    )
    app.add_route(settings.webhook_path, resource)
    return app


class UvloopHttptoolsWorker(UvicornWorker):  # type: ignore[misc]
    """gunicorn's uvicorn worker, with uvloop and httptools asked for by name (not "auto",
    which would fall back to asyncio and h11 without a word if they were missing)."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
    }


class BaselineApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn serving a baseline app: the adapter's bind, workers and SO_REUSEPORT; gthread
    workers for B0 and B1, the uvicorn worker for B1-async."""

    def __init__(self, settings: AdapterSettings, name: str, target: str) -> None:
        self._settings, self._name, self._target = settings, name, target
        super().__init__()

    def load_config(self) -> None:
        """The adapter's bind, workers and listening sockets; the baseline's worker class."""
        options: dict[str, Any] = {
            "bind": [self._settings.http_bind],
            "workers": self._settings.http_workers,
            "reuse_port": True,
            "preload_app": False,
            "accesslog": None,
            "errorlog": "-",
            "logger_class": GunicornLogger,
            "proc_name": f"bench-{self._name}",
            "control_socket_disable": True,
        }
        if self._name == "b1async":
            options["worker_class"] = f"{__name__}.UvloopHttptoolsWorker"
        else:
            options["worker_class"] = "gthread"
            options["threads"] = int(os.environ.get("BENCH_B1_THREADS", B1_THREADS))
        for name, value in options.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        """Build the app in the worker (no preload: after fork)."""
        if self._name == "b1async":
            return make_b1async(self._target)
        return make_b0() if self._name == "b0" else make_b1(self._target)


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    """The echo method: the request back."""
    return request


def echo_server(bind: str) -> tuple[grpc.Server, int]:
    """The do-nothing gRPC server, bound (not started): ECHO_THREADS threads, the service's
    options (policy_service/server.py), one generic method, no interceptor."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=ECHO_THREADS),
        options=SERVER_OPTIONS,
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
    parser.add_argument("--target", default="", help="B1, B1-async: the echo server's host:port")
    args = parser.parse_args(argv)
    if args.what == "echo":
        return serve_echo(args.bind)
    if args.what == "echo-aio":
        return serve_echo_aio(args.bind)
    if args.what in ("b1", "b1async") and not args.target:
        parser.error(f"{args.what} needs --target")
    settings = AdapterSettings.from_env({**os.environ, "CHAT_POLICY_HTTP_BIND": args.bind})
    BaselineApplication(settings, args.what, args.target).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
