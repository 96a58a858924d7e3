"""Settings of the webhook adapter, read once from CHAT_POLICY_* environment variables."""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from adapter.answers import is_refusal_code
from adapter.source import Network, parse_networks
from chat_policy_shared.channel import DEFAULT_TARGET, ChannelSecurity, dial_target
from chat_policy_shared.listen_address import bind_problem

# The SdkAppid of example.env: accepted when CHAT_POLICY_SDKAPPIDS is unset, with a warning.
DEMO_SDKAPPID = 1400000000
# Chat waits 2 s for an answer; a deadline at or past that would answer too late.
CHAT_TIMEOUT_MS = 2000
# Paths the adapter serves besides the webhook (adapter/health.py, adapter/metrics.py).
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
METRICS_PATH = "/metrics"


class SettingsError(ValueError):
    """A setting has a value the adapter cannot use; the message names the variable."""


class OnPolicyError(enum.Enum):
    """What a before-webhook answers when the policy service cannot decide."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True)
class AdapterSettings:
    """What the adapter accepts, how it checks it and where it forwards it."""

    sdk_app_ids: frozenset[int] = frozenset({DEMO_SDKAPPID})
    """Accepted SdkAppid values (CHAT_POLICY_SDKAPPIDS, comma-separated)."""

    sdk_app_ids_configured: bool = False
    """False when CHAT_POLICY_SDKAPPIDS is unset and only the demo id is accepted."""

    callback_tokens: tuple[str, ...] = ()
    """Webhook auth tokens (CHAT_POLICY_CALLBACK_TOKENS); any one signs; empty = auth off."""

    sign_tolerance_s: int = 60
    """Largest accepted distance of RequestTime from now (CHAT_POLICY_SIGN_TOLERANCE_S)."""

    http_bind: str = "127.0.0.1:8080"
    """HOST:PORT gunicorn listens on (CHAT_POLICY_HTTP_BIND); every worker binds it itself."""

    webhook_path: str = "/"
    """URL path Chat posts to (CHAT_POLICY_WEBHOOK_PATH), as in the console's callback URL."""

    grpc_target: str = DEFAULT_TARGET
    """Where the policy service is dialled (chat_policy_shared.channel.dial_target)."""

    grpc_deadline_ms: int = 500
    """Deadline of each policy call (CHAT_POLICY_GRPC_DEADLINE_MS), below Chat's 2 s."""

    grpc_security: ChannelSecurity = field(default_factory=ChannelSecurity)
    """TLS or mutual TLS to the policy service (CHAT_POLICY_GRPC_TLS_CA, _CLIENT_CERT, ...)."""

    max_body_bytes: int = 64 * 1024
    """Largest accepted webhook body (CHAT_POLICY_MAX_BODY_BYTES); larger gets 413."""

    http_workers: int = 2
    """gunicorn worker processes (CHAT_POLICY_HTTP_WORKERS)."""

    http_read_timeout_s: int = 5
    """Deadline for receiving a whole request, headers and body, from its first byte (from
    the connection, for its first request) (CHAT_POLICY_HTTP_READ_TIMEOUT_S); then 408."""

    http_max_connections: int = 2048
    """Open connections each worker accepts requests on (CHAT_POLICY_HTTP_MAX_CONNECTIONS);
    a request on a connection beyond them is answered 503."""

    allowed_sources: tuple[Network, ...] = ()
    """Networks webhooks may come from (CHAT_POLICY_ALLOWED_SOURCES); empty = anywhere."""

    trusted_proxies: tuple[Network, ...] = ()
    """Proxies whose X-Forwarded-For is believed (CHAT_POLICY_TRUSTED_PROXIES)."""

    on_policy_error: OnPolicyError = OnPolicyError.ALLOW
    """Answer when the policy service cannot decide a creation (CHAT_POLICY_ON_POLICY_ERROR)."""

    deny_error_code: int = 10100
    """ErrorCode of a fail-closed refusal (CHAT_POLICY_DENY_ERROR_CODE): 1 or 10100-10200."""

    deny_error_info: str = "group creation is unavailable right now; please try again later"
    """ErrorInfo of a fail-closed refusal, shown to the creator (CHAT_POLICY_DENY_ERROR_INFO)."""

    data_dir: Path = Path("var")
    """Directory of the after-event spool (CHAT_POLICY_DATA_DIR)."""

    spool_max_events: int = 100_000
    """Most after-events the spool holds before answering 503 (CHAT_POLICY_SPOOL_MAX_EVENTS)."""

    max_event_ahead_s: int = 300
    """Largest distance a group-state event's EventTime may be ahead of the adapter's clock
    (CHAT_POLICY_MAX_EVENT_AHEAD_S); further ahead gets 400, so no clock can pin a group."""

    @property
    def auth_enabled(self) -> bool:
        """True when webhooks must carry a valid Sign and RequestTime."""
        return bool(self.callback_tokens)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> AdapterSettings:
        """Read the settings from the environment; unset or empty variables keep defaults."""
        defaults = cls()
        raw_ids = environ.get("CHAT_POLICY_SDKAPPIDS", "")
        deadline_ms = _positive_int(
            environ, "CHAT_POLICY_GRPC_DEADLINE_MS", defaults.grpc_deadline_ms
        )
        if deadline_ms >= CHAT_TIMEOUT_MS:
            raise SettingsError(
                f"CHAT_POLICY_GRPC_DEADLINE_MS={deadline_ms} must be below Chat's"
                f" {CHAT_TIMEOUT_MS} ms timeout"
            )
        path = environ.get("CHAT_POLICY_WEBHOOK_PATH", "") or defaults.webhook_path
        if not path.startswith("/"):
            raise SettingsError(f"CHAT_POLICY_WEBHOOK_PATH={path!r} must start with '/'")
        if path in (LIVENESS_PATH, READINESS_PATH, METRICS_PATH):
            raise SettingsError(
                f"CHAT_POLICY_WEBHOOK_PATH={path!r} is taken by the adapter's own {path} endpoint"
            )
        grpc_target = dial_target(environ)
        if not environ.get("CHAT_POLICY_GRPC_TARGET", ""):  # it dials the service's bind
            _check_grpc_bind(grpc_target)
        deny_error_code = _positive_int(
            environ, "CHAT_POLICY_DENY_ERROR_CODE", defaults.deny_error_code
        )
        if not is_refusal_code(deny_error_code):
            raise SettingsError(
                f"CHAT_POLICY_DENY_ERROR_CODE={deny_error_code} must be 1 or in [10100, 10200]"
            )
        return cls(
            sdk_app_ids=_sdk_app_ids(raw_ids) if raw_ids else defaults.sdk_app_ids,
            sdk_app_ids_configured=bool(raw_ids),
            callback_tokens=tuple(_items(environ.get("CHAT_POLICY_CALLBACK_TOKENS", ""))),
            sign_tolerance_s=_positive_int(
                environ, "CHAT_POLICY_SIGN_TOLERANCE_S", defaults.sign_tolerance_s
            ),
            http_bind=_http_bind(environ.get("CHAT_POLICY_HTTP_BIND", "") or defaults.http_bind),
            webhook_path=path,
            grpc_target=grpc_target,
            grpc_deadline_ms=deadline_ms,
            grpc_security=ChannelSecurity.from_env(environ),
            max_body_bytes=_positive_int(
                environ, "CHAT_POLICY_MAX_BODY_BYTES", defaults.max_body_bytes
            ),
            http_workers=_positive_int(environ, "CHAT_POLICY_HTTP_WORKERS", defaults.http_workers),
            http_read_timeout_s=_positive_int(
                environ, "CHAT_POLICY_HTTP_READ_TIMEOUT_S", defaults.http_read_timeout_s
            ),
            http_max_connections=_positive_int(
                environ, "CHAT_POLICY_HTTP_MAX_CONNECTIONS", defaults.http_max_connections
            ),
            allowed_sources=_networks(environ, "CHAT_POLICY_ALLOWED_SOURCES"),
            trusted_proxies=_networks(environ, "CHAT_POLICY_TRUSTED_PROXIES"),
            on_policy_error=_on_policy_error(environ.get("CHAT_POLICY_ON_POLICY_ERROR", "")),
            deny_error_code=deny_error_code,
            deny_error_info=environ.get("CHAT_POLICY_DENY_ERROR_INFO", "")
            or defaults.deny_error_info,
            data_dir=Path(environ.get("CHAT_POLICY_DATA_DIR", "") or defaults.data_dir),
            spool_max_events=_positive_int(
                environ, "CHAT_POLICY_SPOOL_MAX_EVENTS", defaults.spool_max_events
            ),
            max_event_ahead_s=_positive_int(
                environ, "CHAT_POLICY_MAX_EVENT_AHEAD_S", defaults.max_event_ahead_s
            ),
        )

    @property
    def spool_path(self) -> Path:
        """The spool's SQLite file, shared by every worker of this adapter."""
        return self.data_dir / "adapter-spool.db"


def _items(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _http_bind(raw: str) -> str:
    # Port 0 would give each worker a port of its own.
    problem = bind_problem(raw, port_zero_allowed=False)
    if problem:
        raise SettingsError(f"CHAT_POLICY_HTTP_BIND={raw!r} {problem}, e.g. 127.0.0.1:8080")
    return raw


def _check_grpc_bind(raw: str) -> None:
    """The policy service's listen address must be one a client can dial."""
    problem = bind_problem(raw, port_zero_allowed=False)
    if problem:
        raise SettingsError(
            f"CHAT_POLICY_GRPC_BIND={raw!r} {problem}, e.g. 127.0.0.1:50051"
            " (or set CHAT_POLICY_GRPC_TARGET, which the adapter dials instead)"
        )


def _sdk_app_ids(raw: str) -> frozenset[int]:
    items = _items(raw)
    if not items or not all(item.isdigit() and item.isascii() for item in items):
        raise SettingsError(f"CHAT_POLICY_SDKAPPIDS={raw!r} must be a comma list of numbers")
    return frozenset(int(item) for item in items)


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "")
    if not raw:
        return default
    if not (raw.isdigit() and raw.isascii()) or int(raw) == 0:
        raise SettingsError(f"{name}={raw!r} must be a positive whole number")
    return int(raw)


def _networks(environ: Mapping[str, str], name: str) -> tuple[Network, ...]:
    try:
        return parse_networks(_items(environ.get(name, "")))
    except ValueError as error:
        raise SettingsError(f"{name}: {error}") from None


def _on_policy_error(raw: str) -> OnPolicyError:
    try:
        return OnPolicyError(raw.strip().lower() or OnPolicyError.ALLOW.value)
    except ValueError:
        raise SettingsError(f"CHAT_POLICY_ON_POLICY_ERROR={raw!r} must be allow or deny") from None
