"""A real policy service on port 0 for servicer tests, with helpers to call it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import Tracer

from policy_service.access.access_file import load_access
from policy_service.access.access_reload import AccessHolder
from policy_service.engine.policy import Policy
from policy_service.engine.policy_file import load_policy
from policy_service.engine.policy_reload import PolicyHolder
from policy_service.settings import ServiceSettings
from tests.policy_service.servers import Serve, Server, StoreSpec


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start servers with a given store, policy and settings (default: SQLite, allow-all,
    ServiceSettings' defaults); stop them after the test. The store is named (StoreSpec: a
    URL, an async opener, a BrokenStore) and opened on the server's own loop. A policy given
    as a path is reloaded when the file changes (polled every 0.05 s), and so is the access
    file of an `access_file` setting. With a `tracer`, the service makes spans with it."""
    started: list[Server] = []

    def start(
        store: StoreSpec | None = None,
        policy: Policy | Path | None = None,
        *,
        serve_metrics: bool = False,
        tracer: Tracer | None = None,
        **settings: Any,
    ) -> Server:
        if isinstance(policy, Path):
            holder = PolicyHolder(policy, load_policy(policy))
        else:
            holder = PolicyHolder(None, policy or load_policy(None))
        default_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
        access_file = settings.get("access_file")
        access = (
            None if access_file is None else AccessHolder(access_file, load_access(access_file))
        )
        server = Server(
            store or default_url,
            default_url,
            holder,
            ServiceSettings(grpc_bind="127.0.0.1:0", **settings),
            policy_poll_s=0.05,
            serve_metrics=serve_metrics,
            access=access,
            tracer=tracer,
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
