"""Service settings from the environment: listen addresses and the database URL."""

from __future__ import annotations

import pytest

from policy_service.settings import ServiceSettings, SettingsError


@pytest.mark.parametrize("bind", ["127.0.0.1:7000", "[::1]:7000", "0.0.0.0:0", "localhost:7000"])
def test_binds_are_host_and_port(bind: str) -> None:
    """The gRPC and metrics binds take HOST:PORT, an IPv6 host in brackets, port 0 too."""
    settings = ServiceSettings.from_env(
        {"CHAT_POLICY_GRPC_BIND": bind, "CHAT_POLICY_METRICS_BIND": bind}
    )
    assert (settings.grpc_bind, settings.metrics_bind) == (bind, bind)


@pytest.mark.parametrize("variable", ["CHAT_POLICY_GRPC_BIND", "CHAT_POLICY_METRICS_BIND"])
@pytest.mark.parametrize("value", ["localhost", "127.0.0.1", ":7000", "::1:7000", "host:http"])
def test_a_bind_that_is_not_host_and_port_is_refused(variable: str, value: str) -> None:
    """A bind without a host or a port is a SettingsError naming the variable and the form
    (grpc took `localhost` as port 443)."""
    with pytest.raises(SettingsError) as raised:
        ServiceSettings.from_env({variable: value})
    assert str(raised.value).startswith(
        f"{variable}={value!r} must be HOST:PORT (an IPv6 address as [::1]:PORT), e.g. 127.0.0.1:"
    )


def test_an_sqlite_url_without_a_path_is_refused() -> None:
    """sqlite:/// names no file: a SettingsError saying the two forms that do."""
    with pytest.raises(SettingsError) as raised:
        ServiceSettings.from_env({"CHAT_POLICY_DATABASE_URL": "sqlite:///"})
    assert str(raised.value) == (
        "CHAT_POLICY_DATABASE_URL='sqlite:///' names no file: expected"
        " sqlite:///relative/path or sqlite:////absolute/path"
    )


def test_an_sqlite_url_with_a_path_is_kept() -> None:
    """A relative or absolute SQLite path is the database in force."""
    for url in ("sqlite:///state/db.sqlite", "sqlite:////srv/db.sqlite"):
        assert (
            ServiceSettings.from_env({"CHAT_POLICY_DATABASE_URL": url}).resolved_database_url == url
        )
