"""gRPC channels to the policy service: TLS or mutual TLS when configured, a bearer token on
every call when one is given, round-robin over every address a DNS name resolves to,
keepalive, and a quick reconnect after a restart.

Used by every client the project ships: the adapter's workers (an asyncio channel each),
`chat-policy run` and the operator commands (blocking channels). grpc is imported when a
channel is opened, not with this module, so that the command line can read the dial rule
(dial_target) without loading grpc for its --help.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc
    import grpc.aio

DEFAULT_TARGET = "127.0.0.1:50051"

# Spread calls over every address of the target (a DNS name with one A/AAAA record per replica);
# with one address it changes nothing.
_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})

CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.service_config", _SERVICE_CONFIG),
    # After a service restart the channel reconnects within this, not grpc's default of 120 s.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # A replica that vanished without closing its connections (host down, network cut) is
    # noticed within keepalive time + timeout even when no call is waiting on it. The service
    # permits pings this often (policy_service/server.py, SERVER_OPTIONS).
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


def dial_target(environ: Mapping[str, str] = os.environ) -> str:
    """Where a client dials the policy service: CHAT_POLICY_GRPC_TARGET, else the service's
    listen address CHAT_POLICY_GRPC_BIND, else 127.0.0.1:50051 (an empty variable is unset)."""
    return (
        environ.get("CHAT_POLICY_GRPC_TARGET", "")
        or environ.get("CHAT_POLICY_GRPC_BIND", "")
        or DEFAULT_TARGET
    )


class ChannelSettingsError(ValueError):
    """A TLS or token setting is incomplete or names a file that cannot be read."""


@dataclass(frozen=True)
class ChannelSecurity:
    """How a client proves the service is ours, and itself to the service (mutual TLS, a
    bearer token, or both).

    No CA file: plaintext, for a service on loopback or inside a trusted network.
    """

    ca_file: Path | None = None
    """PEM CA bundle the service's certificate must chain to (CHAT_POLICY_GRPC_TLS_CA);
    setting it turns TLS on."""

    cert_file: Path | None = None
    """PEM client certificate for mutual TLS (CHAT_POLICY_GRPC_TLS_CLIENT_CERT)."""

    key_file: Path | None = None
    """PEM private key of cert_file (CHAT_POLICY_GRPC_TLS_CLIENT_KEY)."""

    server_name: str = ""
    """Name to check the service's certificate against when it differs from the target's
    host, e.g. when dialling an IP address (CHAT_POLICY_GRPC_TLS_SERVER_NAME)."""

    token_file: Path | None = None
    """File holding the bearer token every call presents (CHAT_POLICY_GRPC_TOKEN_FILE)."""

    token: str = field(default="", repr=False)
    """The token token_file holds, read once (from_env); empty: no token is sent."""

    @property
    def tls(self) -> bool:
        """True when the channel uses TLS."""
        return self.ca_file is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ChannelSecurity:
        """Read the client's TLS settings and its token file (now, once); a client
        certificate without its key (or without a CA), or a token file that cannot be read or
        holds no token, is an error."""
        token_file = _path(environ, "CHAT_POLICY_GRPC_TOKEN_FILE")
        security = cls(
            ca_file=_path(environ, "CHAT_POLICY_GRPC_TLS_CA"),
            cert_file=_path(environ, "CHAT_POLICY_GRPC_TLS_CLIENT_CERT"),
            key_file=_path(environ, "CHAT_POLICY_GRPC_TLS_CLIENT_KEY"),
            server_name=environ.get("CHAT_POLICY_GRPC_TLS_SERVER_NAME", "").strip(),
            token_file=token_file,
            token="" if token_file is None else _token(token_file),
        )
        if (security.cert_file is None) != (security.key_file is None):
            raise ChannelSettingsError(
                "CHAT_POLICY_GRPC_TLS_CLIENT_CERT and CHAT_POLICY_GRPC_TLS_CLIENT_KEY go together:"
                " set both or neither"
            )
        if security.cert_file is not None and not security.tls:
            raise ChannelSettingsError(
                "a client certificate needs TLS: set CHAT_POLICY_GRPC_TLS_CA to the CA that"
                " signed the policy service's certificate"
            )
        if security.server_name and not security.tls:
            raise ChannelSettingsError(
                "CHAT_POLICY_GRPC_TLS_SERVER_NAME needs TLS: set CHAT_POLICY_GRPC_TLS_CA"
            )
        return security

    def credentials(self) -> grpc.ChannelCredentials | None:
        """The channel credentials, reading the PEM files now; None for plaintext."""
        if self.ca_file is None:
            return None
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CHAT_POLICY_GRPC_TLS_CA"),
            private_key=_read(self.key_file, "CHAT_POLICY_GRPC_TLS_CLIENT_KEY")
            if self.key_file
            else None,
            certificate_chain=_read(self.cert_file, "CHAT_POLICY_GRPC_TLS_CLIENT_CERT")
            if self.cert_file
            else None,
        )


def open_channel(target: str, security: ChannelSecurity) -> grpc.Channel:
    """A blocking channel to the policy service at `target` (host:port or dns:///name:port),
    for the command line and `chat-policy run`."""
    import grpc

    credentials, options = _dial_options(security)
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, credentials, options=options)
    if not security.token:
        return channel
    from chat_policy_shared.bearer_token import BearerToken

    return grpc.intercept_channel(channel, BearerToken(security.token))


def open_aio_channel(target: str, security: ChannelSecurity) -> grpc.aio.Channel:
    """An asyncio channel to the policy service at `target`, bound to the running event loop:
    open it inside the loop that will use it (the adapter's workers, after fork)."""
    import grpc.aio

    credentials, options = _dial_options(security)
    interceptors = None
    if security.token:
        from chat_policy_shared.bearer_token import aio_interceptors

        interceptors = aio_interceptors(security.token)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


def _dial_options(
    security: ChannelSecurity,
) -> tuple[grpc.ChannelCredentials | None, tuple[tuple[str, int | str], ...]]:
    """The credentials (None: plaintext) and options every channel to the service uses."""
    credentials = security.credentials()
    options = CHANNEL_OPTIONS
    if credentials is not None and security.server_name:
        options += (("grpc.ssl_target_name_override", security.server_name),)
    return credentials, options


def _path(environ: Mapping[str, str], name: str) -> Path | None:
    raw = environ.get(name, "").strip()
    return Path(raw) if raw else None


def _token(path: Path) -> str:
    """The bearer token a token file holds: its text less surrounding white space."""
    name = "CHAT_POLICY_GRPC_TOKEN_FILE"
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8"
        raise ChannelSettingsError(f"{name}={str(path)!r}: {reason}") from None
    if not token:
        raise ChannelSettingsError(f"{name}={str(path)!r} holds no token")
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise ChannelSettingsError(
            f"{name}={str(path)!r}: a token is one word of printable ASCII"
            " (as `chat-policy access token` makes)"
        )
    return token


def _read(path: Path, name: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ChannelSettingsError(f"{name}={str(path)!r}: {error.strerror}") from None
