"""Adapter settings from the environment: defaults, parsing, refusals naming the variable."""

from __future__ import annotations

import pytest

from adapter.settings import DEMO_SDKAPPID, AdapterSettings, SettingsError


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
        ("CHAT_POLICY_MAX_BODY_BYTES", "-1"),
        ("CHAT_POLICY_SIGN_TOLERANCE_S", "1.5"),
        ("CHAT_POLICY_HTTP_WORKERS", "0"),
    ],
)
def test_unusable_values_are_refused_naming_the_variable(variable: str, value: str) -> None:
    """A value the adapter cannot use raises SettingsError that names the variable."""
    with pytest.raises(SettingsError, match=variable):
        AdapterSettings.from_env({variable: value})
