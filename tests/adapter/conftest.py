"""The real Falcon app with a fake policy client at the named seam (adapter.policy_client)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
from opentelemetry.trace import Tracer

from adapter.app import create_app
from adapter.settings import AdapterSettings
from adapter.spool import Spool
from tests.adapter.chat import APP, Chat, FakePolicyClient, MakeChat


@pytest.fixture
def make_chat(tmp_path: Path) -> Iterator[MakeChat]:
    """Build the app from settings overrides, a fake, a clock and a tracer (tracing on);
    return a Chat posting to it.

    The spool is a real one in tmp_path, left for the test to inspect (Chat.spool).
    """
    spools: list[Spool] = []

    def make(
        fake: FakePolicyClient | None = None,
        clock: Callable[[], float] = time.time,
        tracer: Tracer | None = None,
        **overrides: Any,
    ) -> Chat:
        settings = AdapterSettings(
            **{
                "sdk_app_ids": frozenset({APP}),
                "sdk_app_ids_configured": True,
                "data_dir": tmp_path / f"adapter{len(spools)}",
                **overrides,
            }
        )
        fake = fake or FakePolicyClient()
        spool = Spool(settings.spool_path, settings.spool_max_events)
        spools.append(spool)
        client = falcon.testing.TestClient(
            create_app(settings, fake, spool, lambda: None, clock, tracer)
        )
        return Chat(client, fake, spool, settings.webhook_path)

    yield make
    for spool in spools:
        spool.close()


@pytest.fixture
def chat(make_chat: MakeChat) -> Chat:
    """The app with default settings, auth off."""
    return make_chat()
