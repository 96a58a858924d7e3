"""Settings of the webhook adapter, read once from CHAT_POLICY_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# The SdkAppid of example.env: accepted when CHAT_POLICY_SDKAPPIDS is unset, with a warning.
DEMO_SDKAPPID = 1400000000
# Chat waits 2 s for an answer; a deadline at or past that would answer too late.
CHAT_TIMEOUT_MS = 2000


class SettingsError(ValueError):
    """A setting has a value the adapter cannot use; the message names the variable."""


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
    """host:port gunicorn listens on (CHAT_POLICY_HTTP_BIND)."""

    webhook_path: str = "/"
    """URL path Chat posts to (CHAT_POLICY_WEBHOOK_PATH), as in the console's callback URL."""

    grpc_target: str = "127.0.0.1:50051"
    """Where the policy service is dialled (CHAT_POLICY_GRPC_TARGET; default: GRPC_BIND)."""

    grpc_deadline_ms: int = 500
    """Deadline of each policy call (CHAT_POLICY_GRPC_DEADLINE_MS), below Chat's 2 s."""

    max_body_bytes: int = 64 * 1024
    """Largest accepted webhook body (CHAT_POLICY_MAX_BODY_BYTES); larger gets 413."""

    http_workers: int = 2
    """gunicorn worker processes (CHAT_POLICY_HTTP_WORKERS)."""

    http_threads: int = 4
    """Threads per gunicorn worker (CHAT_POLICY_HTTP_THREADS)."""

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
        grpc_bind = environ.get("CHAT_POLICY_GRPC_BIND", "") or defaults.grpc_target
        return cls(
            sdk_app_ids=_sdk_app_ids(raw_ids) if raw_ids else defaults.sdk_app_ids,
            sdk_app_ids_configured=bool(raw_ids),
            callback_tokens=tuple(_items(environ.get("CHAT_POLICY_CALLBACK_TOKENS", ""))),
            sign_tolerance_s=_positive_int(
                environ, "CHAT_POLICY_SIGN_TOLERANCE_S", defaults.sign_tolerance_s
            ),
            http_bind=environ.get("CHAT_POLICY_HTTP_BIND", "") or defaults.http_bind,
            webhook_path=path,
            grpc_target=environ.get("CHAT_POLICY_GRPC_TARGET", "") or grpc_bind,
            grpc_deadline_ms=deadline_ms,
            max_body_bytes=_positive_int(
                environ, "CHAT_POLICY_MAX_BODY_BYTES", defaults.max_body_bytes
            ),
            http_workers=_positive_int(environ, "CHAT_POLICY_HTTP_WORKERS", defaults.http_workers),
            http_threads=_positive_int(environ, "CHAT_POLICY_HTTP_THREADS", defaults.http_threads),
        )


def _items(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


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
