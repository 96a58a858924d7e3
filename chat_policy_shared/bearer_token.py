"""Client interceptors that present a bearer token on every call: the `authorization:
Bearer TOKEN` metadata the policy service's access file recognises.

Interceptors rather than call credentials, because grpc refuses call credentials on a
plaintext channel, and a service on loopback or a trusted network may be dialled without TLS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

AUTHORIZATION_METADATA = "authorization"


def _with_token(metadata: Any, header: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """The call's metadata and the authorization header (replacing any the call had)."""
    kept = tuple(item for item in metadata or () if item[0] != AUTHORIZATION_METADATA)
    return (*kept, header)


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds the token to every call of a blocking channel (grpc.intercept_channel)."""

    def __init__(self, token: str) -> None:
        self._header = (AUTHORIZATION_METADATA, f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            _with_token(details.metadata, self._header),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, proceed: Callable[..., Any], details: Any, request: Any) -> Any:
        return proceed(self._details(details), request)

    def intercept_unary_stream(
        self, proceed: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return proceed(self._details(details), request)

    def intercept_stream_unary(
        self, proceed: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return proceed(self._details(details), requests)

    def intercept_stream_stream(
        self, proceed: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return proceed(self._details(details), requests)


class _CallDetails(grpc.ClientCallDetails):  # type: ignore[misc]
    """A blocking call's details with metadata of our own (grpc's are read-only)."""

    def __init__(
        self,
        method: str,
        timeout: float | None,
        metadata: tuple[tuple[str, str], ...],
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> None:
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = (
            credentials,
            wait_for_ready,
            compression,
        )


def aio_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors that add the token to every call of an asyncio channel."""
    header = (AUTHORIZATION_METADATA, f"Bearer {token}")

    def details(given: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            given.method,
            given.timeout,
            grpc.aio.Metadata(*_with_token(given.metadata, header)),
            given.credentials,
            given.wait_for_ready,
        )

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_unary(self, continuation: Any, given: Any, request: Any) -> Any:
            return await continuation(details(given), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_stream(self, continuation: Any, given: Any, request: Any) -> Any:
            return await continuation(details(given), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
        async def intercept_stream_unary(self, continuation: Any, given: Any, requests: Any) -> Any:
            return await continuation(details(given), requests)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
        async def intercept_stream_stream(
            self, continuation: Any, given: Any, requests: Any
        ) -> Any:
            return await continuation(details(given), requests)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]
