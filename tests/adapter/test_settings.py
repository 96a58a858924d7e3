"""Adapter settings from the environment: defaults, parsing, refusals naming the variable."""

from __future__ import annotations

import pytest

from adapter.settings import DEMO_SDKAPPID, AdapterSettings, OnPolicyError, SettingsError


def test_defaults_accept_the_demo_app_without_auth() -> None:
    """With nothing set: the demo SdkAppid (flagged as unconfigured), auth off, 500 ms."""
    settings = AdapterSettings.from_env({})
    assert settings.sdk_app_ids == {DEMO_SDKAPPID}
    assert not settings.sdk_app_ids_configured
    assert not settings.auth_enabled
    assert (settings.grpc_deadline_ms, settings.webhook_path) == (500, "/")
    assert settings.grpc_target == "127.0.0.1:50051"


def test_lists_and_targets_are_parsed() -> None:
    """Comma lists are trimmed; the gRPC target follows the bind unless set itself."""
    settings = AdapterSettings.from_env(
        {
            "CHAT_POLICY_SDKAPPIDS": "1400000001, 1400000002",
            "CHAT_POLICY_CALLBACK_TOKENS": "a, b",
            "CHAT_POLICY_GRPC_BIND": "0.0.0.0:6000",
        }
    )
    assert settings.sdk_app_ids == {1400000001, 1400000002}
    assert settings.callback_tokens == ("a", "b")
    assert settings.auth_enabled
    assert settings.grpc_target == "0.0.0.0:6000"
    explicit = {"CHAT_POLICY_GRPC_BIND": ":6000", "CHAT_POLICY_GRPC_TARGET": "dns:///policy:6000"}
    assert AdapterSettings.from_env(explicit).grpc_target == "dns:///policy:6000"


@pytest.mark.parametrize("bind", ["127.0.0.1:8081", "0.0.0.0:80", "[::1]:8081", "localhost:8081"])
def test_the_http_bind_is_host_and_port(bind: str) -> None:
    """CHAT_POLICY_HTTP_BIND takes HOST:PORT, an IPv6 host in brackets."""
    assert AdapterSettings.from_env({"CHAT_POLICY_HTTP_BIND": bind}).http_bind == bind


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CHAT_POLICY_HTTP_BIND", "127.0.0.1", "must be HOST:PORT (an IPv6 address as [::1]:PORT)"),
        ("CHAT_POLICY_HTTP_BIND", "::1:8080", "must be HOST:PORT"),
        ("CHAT_POLICY_HTTP_BIND", "127.0.0.1:0", "needs a port from 1 to 65535"),
        ("CHAT_POLICY_GRPC_BIND", "localhost", "must be HOST:PORT"),
        ("CHAT_POLICY_GRPC_BIND", "127.0.0.1:0", "set CHAT_POLICY_GRPC_TARGET"),
    ],
)
def test_a_bind_that_is_not_host_and_port_is_refused(
    variable: str, value: str, message: str
) -> None:
    """A listen address without a port, or with port 0 (each worker would get a port of its
    own; the service's port could not be dialled), names the variable and the form."""
    with pytest.raises(SettingsError) as raised:
        AdapterSettings.from_env({variable: value})
    assert str(raised.value).startswith(f"{variable}={value!r} ")
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHAT_POLICY_SDKAPPIDS", "abc"),
        ("CHAT_POLICY_SDKAPPIDS", "1,,x"),
        ("CHAT_POLICY_SDKAPPIDS", ","),
        ("CHAT_POLICY_GRPC_DEADLINE_MS", "2000"),
        ("CHAT_POLICY_GRPC_DEADLINE_MS", "0"),
        ("CHAT_POLICY_GRPC_DEADLINE_MS", "fast"),
        ("CHAT_POLICY_WEBHOOK_PATH", "callback"),
        ("CHAT_POLICY_WEBHOOK_PATH", "/healthz"),
        ("CHAT_POLICY_WEBHOOK_PATH", "/readyz"),
        ("CHAT_POLICY_WEBHOOK_PATH", "/metrics"),
        ("CHAT_POLICY_MAX_BODY_BYTES", "-1"),
        ("CHAT_POLICY_SIGN_TOLERANCE_S", "1.5"),
        ("CHAT_POLICY_HTTP_WORKERS", "0"),
        ("CHAT_POLICY_HTTP_READ_TIMEOUT_S", "0"),
        ("CHAT_POLICY_HTTP_READ_TIMEOUT_S", "2.5"),
        ("CHAT_POLICY_HTTP_MAX_CONNECTIONS", "0"),
        ("CHAT_POLICY_HTTP_MAX_CONNECTIONS", "many"),
        ("CHAT_POLICY_ALLOWED_SOURCES", "10.0.0.0/8, example.com"),
        ("CHAT_POLICY_TRUSTED_PROXIES", "10.0.0.300"),
        ("CHAT_POLICY_ON_POLICY_ERROR", "maybe"),
        ("CHAT_POLICY_DENY_ERROR_CODE", "10016"),
        ("CHAT_POLICY_DENY_ERROR_CODE", "10201"),
        ("CHAT_POLICY_SPOOL_MAX_EVENTS", "0"),
    ],
)
def test_unusable_values_are_refused_naming_the_variable(variable: str, value: str) -> None:
    """A value the adapter cannot use raises SettingsError that names the variable."""
    with pytest.raises(SettingsError, match=variable):
        AdapterSettings.from_env({variable: value})


def test_http_limits_default_to_room_for_a_thousand_slow_connections() -> None:
    """The read deadline is a few seconds (Chat waits 2 s for the whole answer); each worker
    serves up to 2048 connections, so 1,000 held open by slow clients leave room on either
    worker; both can be set."""
    defaults = AdapterSettings.from_env({})
    assert (defaults.http_read_timeout_s, defaults.http_max_connections) == (5, 2048)
    settings = AdapterSettings.from_env(
        {"CHAT_POLICY_HTTP_READ_TIMEOUT_S": "1", "CHAT_POLICY_HTTP_MAX_CONNECTIONS": "4"}
    )
    assert (settings.http_read_timeout_s, settings.http_max_connections) == (1, 4)


def test_edge_settings_are_parsed() -> None:
    """Networks, the fail-closed answer and the spool's place and size come from the environment."""
    settings = AdapterSettings.from_env(
        {
            "CHAT_POLICY_ALLOWED_SOURCES": "198.51.100.0/24, 2001:db8::1",
            "CHAT_POLICY_TRUSTED_PROXIES": "10.0.0.0/8",
            "CHAT_POLICY_ON_POLICY_ERROR": "Deny",
            "CHAT_POLICY_DENY_ERROR_CODE": "1",
            "CHAT_POLICY_DENY_ERROR_INFO": "稍后再试",
            "CHAT_POLICY_DATA_DIR": "/srv/chat",
            "CHAT_POLICY_SPOOL_MAX_EVENTS": "5",
        }
    )
    assert [str(n) for n in settings.allowed_sources] == ["198.51.100.0/24", "2001:db8::1/128"]
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8"]
    assert settings.on_policy_error is OnPolicyError.DENY
    assert (settings.deny_error_code, settings.deny_error_info) == (1, "稍后再试")
    assert (str(settings.spool_path), settings.spool_max_events) == (
        "/srv/chat/adapter-spool.db",
        5,
    )


def test_edge_defaults_fail_open_from_anywhere() -> None:
    """Unset: any source, no proxy, fail open, refusal code 10100, spool of 100000 in ./var."""
    settings = AdapterSettings.from_env({})
    assert (settings.allowed_sources, settings.trusted_proxies) == ((), ())
    assert (settings.on_policy_error, settings.deny_error_code) == (OnPolicyError.ALLOW, 10100)
    assert (str(settings.spool_path), settings.spool_max_events) == ("var/adapter-spool.db", 100000)
