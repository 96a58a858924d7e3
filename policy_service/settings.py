"""Settings of the policy service, read once from CHAT_POLICY_* environment variables."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from chat_policy_shared.listen_address import bind_problem, parse_bind
from policy_service.stores.store import SQLITE_PREFIX

Number = TypeVar("Number", int, float)


class SettingsError(ValueError):
    """A setting has a value the service cannot use; the message names the variable."""


# Settings that meant something once and are refused now, rather than silently ignored, with
# what to do instead.
REMOVED_SETTINGS = {
    "CHAT_POLICY_GRPC_MAX_WORKERS": (
        "the service holds no thread per call. Remove it; CHAT_POLICY_GRPC_MAX_CONCURRENT bounds"
        " the unary calls served at once, CHAT_POLICY_MAX_STREAMS the streams"
    ),
}


@dataclass(frozen=True)
class ServiceSettings:
    """How the policy service listens, where it keeps state and which policy it applies."""

    grpc_bind: str = "127.0.0.1:50051"
    """HOST:PORT the gRPC server listens on (CHAT_POLICY_GRPC_BIND); port 0 picks a free one."""

    data_dir: Path = Path("var")
    """Directory for the default SQLite file (CHAT_POLICY_DATA_DIR)."""

    database_url: str = ""
    """`sqlite:///PATH` or `postgresql://...` (CHAT_POLICY_DATABASE_URL); empty: SQLite file."""

    policy_file: Path | None = None
    """Group-creation policy TOML (CHAT_POLICY_POLICY_FILE); None means the shipped default."""

    tls_cert_file: Path | None = None
    """PEM certificate chain the gRPC port presents (CHAT_POLICY_GRPC_TLS_CERT); with
    tls_key_file, turns TLS on."""

    tls_key_file: Path | None = None
    """PEM private key of tls_cert_file (CHAT_POLICY_GRPC_TLS_KEY)."""

    tls_client_ca_file: Path | None = None
    """PEM CA bundle that callers' certificates must chain to (CHAT_POLICY_GRPC_TLS_CLIENT_CA);
    setting it requires every caller to present one (mutual TLS)."""

    access_file: Path | None = None
    """Who may call what (CHAT_POLICY_ACCESS_FILE, TOML); None: every caller may call every
    method, as ANONYMOUS."""

    open_access: bool = False
    """An open gRPC port on a non-loopback address, accepted knowingly
    (CHAT_POLICY_GRPC_OPEN_ACCESS=true): without it, such a bind needs an access file or
    mutual TLS."""

    max_concurrent_rpcs: int = 256
    """Unary calls served at once (CHAT_POLICY_GRPC_MAX_CONCURRENT); one more is answered
    RESOURCE_EXHAUSTED (ERROR_REASON_OVERLOADED) at once. Health checks are not counted."""

    max_streams: int = 2000
    """Streaming calls (watch and reflection streams) served at once (CHAT_POLICY_MAX_STREAMS);
    one more is answered RESOURCE_EXHAUSTED (ERROR_REASON_TOO_MANY_STREAMS). An idle stream
    holds no thread, only a few KB of memory. Health Watch streams are not counted."""

    grace_s: float = 5.0
    """On SIGTERM/SIGINT, how long in-flight RPCs may finish (CHAT_POLICY_GRPC_GRACE_S)."""

    destroyed_retention_s: float = 7 * 86400.0
    """How long a destroyed group stays visible, from its last event
    (CHAT_POLICY_DESTROYED_RETENTION_S)."""

    change_log_retention_s: float = 86400.0
    """How long the change log keeps a change for watchers that resume
    (CHAT_POLICY_CHANGE_LOG_RETENTION_S)."""

    decision_retention_s: float = 7 * 86400.0
    """How long the decision log keeps a creation decision (CHAT_POLICY_DECISION_RETENTION_S)."""

    audit_retention_s: float = 90 * 86400.0
    """How long the audit trail keeps an event (CHAT_POLICY_AUDIT_RETENTION_S)."""

    watch_heartbeat_s: float = 10.0
    """An idle watch stream gets a progress message this often (CHAT_POLICY_WATCH_HEARTBEAT_S)."""

    watch_max_streams: int = 1000
    """Of max_streams, how many may be watch streams (CHAT_POLICY_WATCH_MAX_STREAMS; at most
    CHAT_POLICY_MAX_STREAMS): one more is RESOURCE_EXHAUSTED (ERROR_REASON_TOO_MANY_WATCHERS),
    so watchers leave room for reflection streams."""

    max_event_ahead_s: float = 300.0
    """Largest distance a recorded event's time may be ahead of the service's clock
    (CHAT_POLICY_MAX_EVENT_AHEAD_S); further ahead is INVALID_ARGUMENT, so no clock can pin a
    group."""

    metrics_bind: str = "127.0.0.1:9464"
    """HOST:PORT of the Prometheus /metrics endpoint (CHAT_POLICY_METRICS_BIND); port 0 picks
    a free one."""

    @property
    def prune_interval_s(self) -> float:
        """How often retention runs: a quarter of the shortest retention, at most a minute."""
        return min(
            60.0,
            self.destroyed_retention_s / 4,
            self.change_log_retention_s / 4,
            self.decision_retention_s / 4,
            self.audit_retention_s / 4,
        )

    @property
    def resolved_database_url(self) -> str:
        """The database URL in force: the configured one, or the SQLite file in data_dir."""
        return self.database_url or f"{SQLITE_PREFIX}{self.data_dir / 'chat-policy.db'}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ServiceSettings:
        """Read the settings from the environment; unset or empty variables keep defaults."""
        defaults = cls()
        policy_file = environ.get("CHAT_POLICY_POLICY_FILE", "")
        database_url = environ.get("CHAT_POLICY_DATABASE_URL", "")
        if database_url.startswith(SQLITE_PREFIX) and not database_url[len(SQLITE_PREFIX) :]:
            raise SettingsError(
                f"CHAT_POLICY_DATABASE_URL={database_url!r} names no file: expected"
                f" {SQLITE_PREFIX}relative/path or {SQLITE_PREFIX}/absolute/path"
            )
        tls_cert_file = _path(environ, "CHAT_POLICY_GRPC_TLS_CERT")
        tls_key_file = _path(environ, "CHAT_POLICY_GRPC_TLS_KEY")
        tls_client_ca_file = _path(environ, "CHAT_POLICY_GRPC_TLS_CLIENT_CA")
        if (tls_cert_file is None) != (tls_key_file is None):
            raise SettingsError(
                "CHAT_POLICY_GRPC_TLS_CERT and CHAT_POLICY_GRPC_TLS_KEY go together:"
                " set both or neither"
            )
        if tls_client_ca_file is not None and tls_cert_file is None:
            raise SettingsError(
                "CHAT_POLICY_GRPC_TLS_CLIENT_CA (mutual TLS) needs TLS: set"
                " CHAT_POLICY_GRPC_TLS_CERT and CHAT_POLICY_GRPC_TLS_KEY"
            )
        grpc_bind = _bind(environ, "CHAT_POLICY_GRPC_BIND", defaults.grpc_bind)
        access_file = _path(environ, "CHAT_POLICY_ACCESS_FILE")
        open_access = _flag(environ, "CHAT_POLICY_GRPC_OPEN_ACCESS")
        if (
            access_file is None
            and tls_client_ca_file is None
            and not open_access
            and not is_loopback(grpc_bind)
        ):
            raise SettingsError(
                f"CHAT_POLICY_GRPC_BIND={grpc_bind!r} is not a loopback address, and anyone"
                " who reaches it could call every method: set CHAT_POLICY_ACCESS_FILE (callers"
                " and what each may call), or CHAT_POLICY_GRPC_TLS_CLIENT_CA (mutual TLS), or"
                " CHAT_POLICY_GRPC_OPEN_ACCESS=true to accept an open port knowingly"
            )
        for removed, instead in REMOVED_SETTINGS.items():
            if environ.get(removed, ""):
                raise SettingsError(f"{removed} is no longer used: {instead}")
        max_streams = _positive(environ, "CHAT_POLICY_MAX_STREAMS", defaults.max_streams)
        watch_max_streams = _positive(
            environ, "CHAT_POLICY_WATCH_MAX_STREAMS", min(defaults.watch_max_streams, max_streams)
        )
        if watch_max_streams > max_streams:
            raise SettingsError(
                f"CHAT_POLICY_WATCH_MAX_STREAMS={watch_max_streams} is more than"
                f" CHAT_POLICY_MAX_STREAMS={max_streams}: watch streams are part of the streams"
            )
        return cls(
            grpc_bind=grpc_bind,
            data_dir=Path(environ.get("CHAT_POLICY_DATA_DIR", "") or defaults.data_dir),
            database_url=database_url,
            policy_file=Path(policy_file) if policy_file else None,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            tls_client_ca_file=tls_client_ca_file,
            access_file=access_file,
            open_access=open_access,
            max_concurrent_rpcs=_positive(
                environ, "CHAT_POLICY_GRPC_MAX_CONCURRENT", defaults.max_concurrent_rpcs
            ),
            max_streams=max_streams,
            grace_s=_positive(environ, "CHAT_POLICY_GRPC_GRACE_S", defaults.grace_s),
            destroyed_retention_s=_positive(
                environ, "CHAT_POLICY_DESTROYED_RETENTION_S", defaults.destroyed_retention_s
            ),
            change_log_retention_s=_positive(
                environ, "CHAT_POLICY_CHANGE_LOG_RETENTION_S", defaults.change_log_retention_s
            ),
            decision_retention_s=_positive(
                environ, "CHAT_POLICY_DECISION_RETENTION_S", defaults.decision_retention_s
            ),
            audit_retention_s=_positive(
                environ, "CHAT_POLICY_AUDIT_RETENTION_S", defaults.audit_retention_s
            ),
            watch_heartbeat_s=_positive(
                environ, "CHAT_POLICY_WATCH_HEARTBEAT_S", defaults.watch_heartbeat_s
            ),
            watch_max_streams=watch_max_streams,
            max_event_ahead_s=_positive(
                environ, "CHAT_POLICY_MAX_EVENT_AHEAD_S", defaults.max_event_ahead_s
            ),
            metrics_bind=_bind(environ, "CHAT_POLICY_METRICS_BIND", defaults.metrics_bind),
        )


def _bind(environ: Mapping[str, str], name: str, default: str) -> str:
    """A listen address (port 0: any free one), or the default when unset."""
    raw = environ.get(name, "") or default
    problem = bind_problem(raw, port_zero_allowed=True)
    if problem:
        raise SettingsError(f"{name}={raw!r} {problem}, e.g. {default}")
    return raw


def is_loopback(bind: str) -> bool:
    """Whether a listen address reaches this host only: `localhost` or a loopback address."""
    host = parse_bind(bind)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another host name: it may resolve to anything
        return False


def _flag(environ: Mapping[str, str], name: str) -> bool:
    """`true` or `false` (any case); unset or empty is false."""
    raw = environ.get(name, "").strip().lower()
    if raw not in ("", "true", "false"):
        raise SettingsError(f"{name}={environ[name]!r} must be true or false")
    return raw == "true"


def _path(environ: Mapping[str, str], name: str) -> Path | None:
    raw = environ.get(name, "").strip()
    return Path(raw) if raw else None


def _positive(environ: Mapping[str, str], name: str, default: Number) -> Number:
    """Parse a positive number of the default's type, or return the default when unset."""
    raw = environ.get(name, "")
    if not raw:
        return default
    try:
        value = type(default)(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be positive")
    return value
