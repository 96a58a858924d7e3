"""Where clients dial the policy service: one rule for the adapter and the command line."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chat_policy_shared.channel import (
    ChannelSecurity,
    ChannelSettingsError,
    dial_target,
    open_aio_channel,
    open_channel,
)


def test_the_target_follows_the_adapters_rule() -> None:
    """CHAT_POLICY_GRPC_TARGET, else CHAT_POLICY_GRPC_BIND, else 127.0.0.1:50051."""
    assert dial_target({}) == "127.0.0.1:50051"
    assert dial_target({"CHAT_POLICY_GRPC_BIND": "0.0.0.0:7000"}) == "0.0.0.0:7000"
    assert (
        dial_target(
            {"CHAT_POLICY_GRPC_BIND": "0.0.0.0:7000", "CHAT_POLICY_GRPC_TARGET": "dns:///p:1"}
        )
        == "dns:///p:1"
    )
    assert dial_target({"CHAT_POLICY_GRPC_TARGET": "", "CHAT_POLICY_GRPC_BIND": ""}) == (
        "127.0.0.1:50051"
    )


class MetadataEcho(health.HealthServicer):
    """A health servicer that remembers the authorization metadata of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str | None] = []

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        metadata = dict(context.invocation_metadata())
        self.seen.append(metadata.get("authorization"))
        return super().Check(request, context)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, MetadataEcho]]:
    """A blocking grpc server on a free port whose health Check records the metadata."""
    server = grpc.server(ThreadPoolExecutor(2))
    servicer = MetadataEcho()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(None)


def token_security(tmp_path: Path, text: str) -> ChannelSecurity:
    """The client settings with CHAT_POLICY_GRPC_TOKEN_FILE holding `text`."""
    token_file = tmp_path / "token"
    token_file.write_text(text)
    return ChannelSecurity.from_env({"CHAT_POLICY_GRPC_TOKEN_FILE": str(token_file)})


def test_both_kinds_of_channel_present_the_token_on_every_call(
    tmp_path: Path, echo_server: tuple[str, MetadataEcho]
) -> None:
    """A token file's token (read once, trimmed) goes as `authorization: Bearer` on each
    call of a blocking and of an asyncio channel, plaintext as they are; none without it."""
    target, servicer = echo_server
    security = token_security(tmp_path, "  s3cret-token\n")
    (tmp_path / "token").unlink()  # read once: the channels need the file no more
    assert "s3cret-token" not in repr(security)
    with open_channel(target, security) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5, metadata=(("authorization", "other"),)
        )

    async def aio_call() -> None:
        async with open_aio_channel(target, security) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )

    asyncio.run(aio_call())
    with open_channel(target, ChannelSecurity()) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert servicer.seen == ["Bearer s3cret-token"] * 3 + [None]


@pytest.mark.parametrize(
    ("text", "problem"),
    [("\n", "holds no token"), ("two words", "one word of printable ASCII")],
)
def test_a_token_file_without_a_usable_token_is_refused(
    tmp_path: Path, text: str, problem: str
) -> None:
    """An empty token file, or one that is no single word, is a ChannelSettingsError."""
    with pytest.raises(ChannelSettingsError, match=problem):
        token_security(tmp_path, text)


def test_a_missing_token_file_is_refused(tmp_path: Path) -> None:
    """A token file that cannot be read names the variable and the reason."""
    missing = str(tmp_path / "nope")
    with pytest.raises(ChannelSettingsError) as raised:
        ChannelSecurity.from_env({"CHAT_POLICY_GRPC_TOKEN_FILE": missing})
    assert str(raised.value) == (
        f"CHAT_POLICY_GRPC_TOKEN_FILE={missing!r}: No such file or directory"
    )
