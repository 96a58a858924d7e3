"""The adapter's composition root: create_app(settings, client) builds the Falcon app."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import falcon

from adapter import group_creation, group_state, health
from adapter.answer_headers import AnswerHeaders
from adapter.answers import Failure, WebhookError, failure_answer
from adapter.metrics import add_metrics, count_failure
from adapter.policy_client import GrpcPolicyClient, PolicyClient
from adapter.request_log import RequestLog
from adapter.settings import AdapterSettings
from adapter.spool import Replayer, Spool
from adapter.webhook import WebhookFamily, WebhookResource, write_answer

log = logging.getLogger(__name__)

_HTTP_FAILURES = {404: Failure.NOT_FOUND, 405: Failure.METHOD_NOT_ALLOWED}


def create_app(
    settings: AdapterSettings,
    client: PolicyClient,
    spool: Spool,
    wake_replayer: Callable[[], None],
    clock: Callable[[], float] = time.time,
) -> falcon.App[falcon.Request, falcon.Response]:
    """The WSGI app: one webhook route, every answer in Chat's JSON shape.

    After-events the policy service cannot take go to `spool`; `wake_replayer` is called after
    each, so that a replayer in this process looks at the spool soon. `clock` (Unix seconds)
    is what RequestTime and EventTime are held against.
    """
    app = falcon.App(middleware=(RequestLog(), AnswerHeaders(settings.auth_enabled)))
    creation = group_creation.GroupCreationFamily(client, settings)
    state = group_state.GroupStateFamily(client, spool, wake_replayer, settings.max_event_ahead_s)
    families: dict[str, WebhookFamily] = {group_creation.COMMAND: creation}
    families.update(dict.fromkeys(group_state.COMMANDS, state))
    app.add_route(settings.webhook_path, WebhookResource(settings, families, clock))
    health.add_routes(app, client)
    add_metrics(app, families, spool)
    app.add_error_handler(Exception, _answer_unexpected)
    app.add_error_handler(falcon.HTTPError, _answer_http_error)
    app.add_error_handler(WebhookError, _answer_webhook_error)
    return app


def create_app_from_env() -> falcon.App[falcon.Request, falcon.Response]:
    """The app for this process, configured from the environment.

    Call it in each worker after fork: it makes the worker's own gRPC channel, opens the
    shared spool and starts the worker's replayer, of which one at a time leads.
    """
    settings = AdapterSettings.from_env()
    client = GrpcPolicyClient.connect(
        settings.grpc_target, settings.grpc_security, settings.grpc_deadline_ms
    )
    spool = Spool(settings.spool_path, settings.spool_max_events)
    replayer = Replayer(
        spool,
        group_state.replay_to(client),
        group_state.answers_health_checks(client, settings.grpc_deadline_ms / 1000),
        settings.spool_path.with_suffix(".lock"),
    )
    replayer.start()
    return create_app(settings, client, spool, replayer.wake)


def _answer_webhook_error(
    req: falcon.Request, resp: falcon.Response, error: WebhookError, params: object
) -> None:
    count_failure(error)
    write_answer(resp, failure_answer(error))


def _answer_http_error(
    req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError, params: object
) -> None:
    failure = _HTTP_FAILURES.get(error.status_code, Failure.MALFORMED_REQUEST)
    write_answer(resp, failure_answer(WebhookError(failure)))


def _answer_unexpected(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: object
) -> None:
    log.exception("unexpected error")
    write_answer(resp, failure_answer(WebhookError(Failure.INTERNAL)))
