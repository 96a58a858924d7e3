"""The adapter's composition root: create_app(settings, client) builds the Falcon ASGI app."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import falcon
import falcon.asgi

from adapter import group_creation, group_state, health
from adapter.answer_headers import AnswerHeaders
from adapter.answers import Failure, WebhookError, failure_answer
from adapter.metrics import add_metrics, count_failure
from adapter.policy_client import GrpcPolicyClient, PolicyClient
from adapter.request_log import RequestLog
from adapter.settings import AdapterSettings
from adapter.spool import Replayer, Spool
from adapter.webhook import WebhookFamily, WebhookResource, write_answer
from chat_policy_shared import tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)

_HTTP_FAILURES = {404: Failure.NOT_FOUND, 405: Failure.METHOD_NOT_ALLOWED}

# Threads for the blocking work of one worker (the spool's append with its fsync, a metrics
# scrape): the spool serialises its writes behind one lock, so more would only queue there.
BLOCKING_THREADS = 2

P = ParamSpec("P")
R = TypeVar("R")


def create_app(
    settings: AdapterSettings,
    client: PolicyClient,
    spool: Spool,
    wake_replayer: Callable[[], None],
    clock: Callable[[], float] = time.time,
    tracer: Tracer | None = None,
) -> falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]:
    """The ASGI app: one webhook route, every answer in Chat's JSON shape.

    After-events the policy service cannot take go to `spool`, written off the event loop in a
    small pool of threads; `wake_replayer` is called after each, so that a replayer in this
    process looks at the spool soon. `clock` (Unix seconds) is what RequestTime and EventTime
    are held against. With `tracer` (tracing on), each webhook is served inside a span of its
    own (adapter.webhook_spans), which `client` is to propagate.
    """
    blocking = ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="adapter-blocking")
    app = falcon.asgi.App(middleware=(RequestLog(), AnswerHeaders(settings.auth_enabled)))
    if tracer is not None:
        from adapter.webhook_spans import WebhookSpans

        app.add_middleware(WebhookSpans(tracer, settings.webhook_path))
    creation = group_creation.GroupCreationFamily(client, settings)
    state = group_state.GroupStateFamily(
        client, spool, blocking, wake_replayer, settings.max_event_ahead_s
    )
    families: dict[str, WebhookFamily] = {group_creation.COMMAND: creation}
    families.update(dict.fromkeys(group_state.COMMANDS, state))
    app.add_route(settings.webhook_path, WebhookResource(settings, families, clock))
    health.add_routes(app, client)
    add_metrics(app, families, spool, blocking)
    app.add_error_handler(Exception, _answer_unexpected)
    app.add_error_handler(falcon.HTTPError, _answer_http_error)
    app.add_error_handler(WebhookError, _answer_webhook_error)
    return app


def create_app_from_env() -> falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]:
    """The app for this worker, configured from the environment.

    Call it in each worker after fork. Tracing, when the OTEL_* variables turn it on, is set
    up here, in the worker (chat_policy_shared.tracing). Its gRPC channel opens at the first
    call, inside the worker's event loop; at lifespan startup the worker's replayer starts
    (one at a time leads), and at shutdown it stops, the channel closes and the spans still
    queued are exported.
    """
    settings = AdapterSettings.from_env()
    tracer = tracing.start("chat-policy-adapter")
    add_trace_context = None
    if tracer is not None:
        from chat_policy_shared.trace_context import with_trace_context

        add_trace_context = with_trace_context
    client = GrpcPolicyClient(
        settings.grpc_target, settings.grpc_security, settings.grpc_deadline_ms, add_trace_context
    )
    spool = Spool(settings.spool_path, settings.spool_max_events)
    lifespan = WorkerLifespan(settings, client, spool, tracer)
    app = create_app(settings, client, spool, lifespan.replayer.wake, tracer=tracer)
    app.add_middleware(lifespan)
    return app


class WorkerLifespan:
    """Falcon lifespan middleware of a worker: the spool replayer and the gRPC channel.

    The replayer is a thread of its own, as it was: each pass reads and writes the spool's
    SQLite file event by event, which must stay off the event loop anyway, and its backoff and
    leader lock stay exactly as they are. Its calls to the policy service run on the worker's
    event loop, over the worker's one channel, and the thread waits for each.
    """

    def __init__(
        self,
        settings: AdapterSettings,
        client: GrpcPolicyClient,
        spool: Spool,
        tracer: Tracer | None = None,
    ) -> None:
        self._client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self.replayer = Replayer(
            spool,
            self._on_loop(group_state.replay_to(client, tracer)),
            self._on_loop(
                group_state.answers_health_checks(client, settings.grpc_deadline_ms / 1000)
            ),
            settings.spool_path.with_suffix(".lock"),
        )

    async def process_startup(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        """Start the replayer, its calls bound to this event loop."""
        self._loop = asyncio.get_running_loop()
        self.replayer.start()

    async def process_shutdown(self, scope: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        """Stop the replayer (from a thread: its last call may still need this loop), close
        the channel, then export the spans still queued (from a thread: it blocks)."""
        await asyncio.to_thread(self.replayer.stop)
        await self._client.close()
        await asyncio.to_thread(tracing.shut_down)

    def _on_loop(self, function: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
        """`function` as a blocking call for the replayer's thread, run on the worker's loop."""

        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            assert self._loop is not None, "the replayer starts at lifespan startup"
            return asyncio.run_coroutine_threadsafe(function(*args, **kwargs), self._loop).result()

        return call


async def _answer_webhook_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, error: WebhookError, params: object
) -> None:
    count_failure(error)
    write_answer(resp, failure_answer(error))


async def _answer_http_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, error: falcon.HTTPError, params: object
) -> None:
    failure = _HTTP_FAILURES.get(error.status_code, Failure.MALFORMED_REQUEST)
    write_answer(resp, failure_answer(WebhookError(failure)))


async def _answer_unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, error: Exception, params: object
) -> None:
    log.exception("unexpected error")
    write_answer(resp, failure_answer(WebhookError(Failure.INTERNAL)))
