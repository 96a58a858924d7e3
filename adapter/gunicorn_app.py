"""`chat-policy adapter`: gunicorn serving adapter.wsgi with settings from the environment."""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.util import import_app

from adapter.settings import AdapterSettings
from adapter.spool import Spool, SpoolUnavailable

log = logging.getLogger(__name__)


class AdapterApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn configured in code: gthread workers, SO_REUSEPORT, no preload.

    Without preload each worker imports adapter.wsgi itself, so every worker dials the policy
    service on its own gRPC channel, created after fork.
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
            "threads": settings.http_threads,
            "worker_class": "gthread",
            # Each worker gets its own listening socket: the kernel spreads connections.
            "reuse_port": True,
            "preload_app": False,
            # Chat gives up after 2 s; a worker stuck far longer than that is restarted.
            "timeout": 30,
            "graceful_timeout": 10,
            "accesslog": None,
            "errorlog": "-",
            "proc_name": "chat-policy-adapter",
            # gunicorn's control socket is one path per user: two adapters would fight over it.
            "control_socket_disable": True,
        }
        for name, value in options.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        """Import the WSGI app in the worker."""
        return import_app("adapter.wsgi:app")


def main() -> int:
    """Entry point of `chat-policy adapter`: exit 2 on bad configuration."""
    try:
        settings = AdapterSettings.from_env()
        settings.grpc_security.credentials()  # the TLS files are readable
        # Open (create, migrate) the spool once before forking, so a data dir the adapter
        # cannot write is one clear line here rather than workers failing to boot.
        Spool(settings.spool_path, settings.spool_max_events).close()
    except (ValueError, SpoolUnavailable) as error:
        log.error("adapter cannot start: %s", error)
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
        "adapter listening on %s%s, policy service at %s (deadline %d ms)",
        settings.http_bind,
        settings.webhook_path,
        settings.grpc_target,
        settings.grpc_deadline_ms,
    )
    AdapterApplication(settings).run()
    return 0
