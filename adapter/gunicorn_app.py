"""`chat-policy adapter`: gunicorn's uvicorn workers serving adapter.asgi, settings from the
environment."""

from __future__ import annotations

import functools
import logging
import os
import resource
import shutil
import sys
import tempfile
from typing import Any, ClassVar

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from gunicorn.util import import_app
from uvicorn_worker import UvicornWorker

from adapter.settings import AdapterSettings
from adapter.spool import Spool, SpoolUnavailable
from chat_policy_shared import tracing
from chat_policy_shared.data_directory import directory_problem
from chat_policy_shared.listen_address import listen_problem
from chat_policy_shared.version import version

log = logging.getLogger(__name__)

# gunicorn restarts a worker that has not answered its heartbeat for this long.
WORKER_TIMEOUT_S = 30
# On SIGTERM a worker stops accepting, finishes what it serves, stops its replayer and closes
# its channel; gunicorn kills it after this. uvicorn waits for requests a little less, so
# that the worker's own shutdown has time.
GRACEFUL_TIMEOUT_S = 10
REQUESTS_GRACE_S = GRACEFUL_TIMEOUT_S - 3
# How long an idle keep-alive connection stays open after an answer (uvicorn's default).
KEEPALIVE_S = 5
# File descriptors a worker needs besides its connections: the listening socket, the spool,
# the metric files, the gRPC channel, logs.
SPARE_FILES = 256


class GunicornLogger(Logger):  # type: ignore[misc]
    """gunicorn's own lines go through the process's JSON handler (chat_policy_shared.logs).

    The access log stays off: the adapter writes one canonical line per request, without the
    query string that carries Sign.
    """

    def setup(self, cfg: Any) -> None:
        """Let gunicorn set up, then hand its error log to the root logger."""
        super().setup(cfg)
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True


class AdapterWorker(UvicornWorker):  # type: ignore[misc]
    """gunicorn's uvicorn worker as the adapter runs it: uvloop, httptools with a deadline for
    each request (adapter/http_protocol.py), ASGI lifespan on, uvicorn's access log off (the
    adapter writes its own line per request, without the query string that carries Sign), and
    at most CHAT_POLICY_HTTP_MAX_CONNECTIONS open connections served. gunicorn runs the class
    configured() makes from the settings.
    """

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop",
        "lifespan": "on",
        "access_log": False,
        "server_header": False,  # no "server: uvicorn"; the Date header stays
        "proxy_headers": False,  # the adapter reads X-Forwarded-For itself (adapter/source.py)
        "timeout_graceful_shutdown": REQUESTS_GRACE_S,
    }

    @classmethod
    def configured(cls, settings: AdapterSettings) -> type[AdapterWorker]:
        """This worker class with the request deadline and the connection cap of `settings`."""
        # After PROMETHEUS_MULTIPROC_DIR is set (main): the protocol imports the metrics.
        from adapter.http_protocol import ReadDeadlineProtocol

        config = {
            **cls.CONFIG_KWARGS,
            "http": functools.partial(
                ReadDeadlineProtocol, read_timeout_s=settings.http_read_timeout_s
            ),
            # uvicorn refuses a request once this many connections are open, its own counted.
            "limit_concurrency": settings.http_max_connections + 1,
        }
        return type(cls.__name__, (cls,), {"CONFIG_KWARGS": config})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn_worker hands uvicorn's error logger gunicorn's handlers, which GunicornLogger
        # gave to the root logger: let its lines reach the root, as JSON. uvicorn.access keeps
        # no handler and does not propagate (access_log off): its lines would carry Sign.
        error_log = logging.getLogger("uvicorn.error")
        error_log.handlers = []
        error_log.propagate = True
        error_log.addFilter(_without_color_message)


class AdapterApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn configured in code: AdapterWorker processes, SO_REUSEPORT, no preload.

    Without preload each worker imports adapter.asgi itself, so every worker dials the policy
    service on its own grpc.aio channel, opened in its event loop after fork.
    """

    def __init__(self, settings: AdapterSettings) -> None:
        self._settings = settings
        super().__init__()

    def load_config(self) -> None:
        """Apply our settings to gunicorn's config."""
        settings = self._settings
        options: dict[str, Any] = {
            "bind": [settings.http_bind],
            "workers": settings.http_workers,
            "worker_class": AdapterWorker.configured(settings),
            # Each worker gets its own listening socket: the kernel spreads connections.
            "reuse_port": True,
            "preload_app": False,
            # Chat gives up after 2 s; a worker stuck far longer than that is restarted.
            "timeout": WORKER_TIMEOUT_S,
            "graceful_timeout": GRACEFUL_TIMEOUT_S,
            "keepalive": KEEPALIVE_S,  # uvicorn_worker passes it on as timeout_keep_alive
            "accesslog": None,
            "errorlog": "-",
            "logger_class": GunicornLogger,
            "proc_name": "chat-policy-adapter",
            # gunicorn's control socket is one path per user: two adapters would fight over it.
            "control_socket_disable": True,
            # The workers share their metrics through files (adapter/metrics.py).
            "child_exit": _forget_live_gauges,
        }
        for name, value in options.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        """Import the ASGI app in the worker."""
        return import_app("adapter.asgi:app")


def _without_color_message(record: logging.LogRecord) -> bool:
    """Drop the copy of the message with terminal colours that uvicorn adds to its records:
    the JSON line would carry it as a field."""
    record.__dict__.pop("color_message", None)
    return True


def main() -> int:
    """Entry point of `chat-policy adapter`: exit 2 on bad configuration."""
    try:
        settings = AdapterSettings.from_env()
        settings.grpc_security.credentials()  # the TLS files are readable
        tracing.exporters()  # the OTEL_* variables ask for nothing unshipped (set up per worker)
    except ValueError as error:
        log.error("adapter cannot start: %s", error)
        return 2
    problem = startup_problem(settings)
    if problem is not None:
        log.error("adapter cannot start: %s", problem)
        return 2
    if not settings.sdk_app_ids_configured:
        log.warning(
            "CHAT_POLICY_SDKAPPIDS is not set: accepting only the demo SdkAppid %s",
            ",".join(map(str, sorted(settings.sdk_app_ids))),
        )
    if not settings.auth_enabled:
        log.warning(
            "CHAT_POLICY_CALLBACK_TOKENS is not set: webhook signatures are NOT checked; anyone"
            " who can reach %s can post webhooks. Set the token configured in Chat's console.",
            settings.http_bind,
        )
    log.info(
        "adapter %s listening on %s%s, policy service at %s (deadline %d ms)",
        version(),
        settings.http_bind,
        settings.webhook_path,
        settings.grpc_target,
        settings.grpc_deadline_ms,
    )
    metrics_dir = private_metrics_dir()
    master = os.getpid()
    try:
        AdapterApplication(settings).run()
    finally:
        # A worker leaves gunicorn by raising SystemExit through this frame too: only the
        # master removes the directory.
        if os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def startup_problem(settings: AdapterSettings) -> str | None:
    """What keeps the adapter from starting on this host, naming the variable at fault, or None.

    Looked at in the master, before forking: in a worker, each would be a worker failing to
    boot, again and again.
    """
    problem = open_files_problem(settings.http_max_connections)
    if problem is not None:
        return f"CHAT_POLICY_HTTP_MAX_CONNECTIONS={settings.http_max_connections}: {problem}"
    data_dir = f"CHAT_POLICY_DATA_DIR={str(settings.data_dir)!r}"
    problem = directory_problem(settings.data_dir)
    if problem is not None:
        return f"{data_dir}: {problem}"
    try:
        Spool(settings.spool_path, settings.spool_max_events).close()  # create, migrate
    except SpoolUnavailable as error:
        return f"{data_dir}: {error}"
    # Each worker binds with SO_REUSEPORT, which shares the port with any other socket that
    # sets it, a second adapter's included: that one would take a share of the webhooks.
    # Look without it first. (Two adapters started in the same instant may still both pass.)
    problem = listen_problem(settings.http_bind)
    if problem is not None:
        return f"cannot listen on CHAT_POLICY_HTTP_BIND={settings.http_bind!r}: {problem}"
    return None


def open_files_problem(max_connections: int) -> str | None:
    """Raise this process's open-file limit (the workers inherit it) to what a worker with
    `max_connections` connections needs; what keeps it from that, or None."""
    needed = max_connections + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            return f"a worker needs {needed} open files, and the hard limit (ulimit -Hn) is {hard}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return None


def private_metrics_dir() -> str:
    """Make a new private directory for the workers' metric files and point
    PROMETHEUS_MULTIPROC_DIR at it; the workers inherit it when forked.

    New (mkdtemp) rather than under CHAT_POLICY_DATA_DIR: it never holds a previous run's
    counts, and two adapters sharing a data dir do not add up, or wipe, each other's files.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            "prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set: the"
            " workers' metrics would not add up (keep it out of the master's imports)"
        )
    path = tempfile.mkdtemp(prefix="chat-policy-adapter-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    log.info("worker metrics in %s", path)
    return path


def _forget_live_gauges(arbiter: Any, worker: Any) -> None:
    """gunicorn's child_exit hook: the files of a dead worker's live gauges go; its counters
    and histograms stay counted."""
    from prometheus_client import multiprocess  # in the master, once the directory is set

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
