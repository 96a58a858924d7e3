"""Service settings from the environment: listen addresses and the database URL."""

from __future__ import annotations

import pytest

from policy_service.settings import ServiceSettings, SettingsError


@pytest.mark.parametrize("bind", ["127.0.0.1:7000", "[::1]:7000", "0.0.0.0:0", "localhost:7000"])
def test_binds_are_host_and_port(bind: str) -> None:
    """The gRPC and metrics binds take HOST:PORT, an IPv6 host in brackets, port 0 too."""
    settings = ServiceSettings.from_env(
        {
            "CHAT_POLICY_GRPC_BIND": bind,
            "CHAT_POLICY_METRICS_BIND": bind,
            "CHAT_POLICY_GRPC_OPEN_ACCESS": "true",
        }
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


def test_the_budget_defaults_fit_a_thousand_idle_streams() -> None:
    """By default 2,000 streams, 1,000 of them watches, and 256 unary calls at once."""
    settings = ServiceSettings.from_env({})
    assert (settings.max_streams, settings.watch_max_streams) == (2000, 1000)
    assert settings.max_concurrent_rpcs == 256


def test_the_watch_budget_is_part_of_the_stream_budget() -> None:
    """More watch streams than streams is refused, naming both; a lower stream budget lowers
    the watch default with it."""
    with pytest.raises(SettingsError, match=r"CHAT_POLICY_WATCH_MAX_STREAMS=50 .*MAX_STREAMS=10"):
        ServiceSettings.from_env(
            {"CHAT_POLICY_MAX_STREAMS": "10", "CHAT_POLICY_WATCH_MAX_STREAMS": "50"}
        )
    assert ServiceSettings.from_env({"CHAT_POLICY_MAX_STREAMS": "10"}).watch_max_streams == 10


@pytest.mark.parametrize("variable", ["CHAT_POLICY_GRPC_MAX_CONCURRENT", "CHAT_POLICY_MAX_STREAMS"])
def test_budgets_must_be_positive_numbers(variable: str) -> None:
    """A budget of 0, or not a number, is refused naming the variable."""
    for value in ("0", "many"):
        with pytest.raises(SettingsError, match=variable):
            ServiceSettings.from_env({variable: value})


def test_the_thread_count_of_the_threaded_server_is_refused_with_what_replaces_it() -> None:
    """CHAT_POLICY_GRPC_MAX_WORKERS, a thread count, no longer means anything: refused, naming
    the settings that bound calls now."""
    with pytest.raises(SettingsError, match="CHAT_POLICY_GRPC_MAX_CONCURRENT"):
        ServiceSettings.from_env({"CHAT_POLICY_GRPC_MAX_WORKERS": "8"})


@pytest.mark.parametrize("bind", ["0.0.0.0:50051", "[::]:50051", "10.0.1.11:50051", "policy:1"])
def test_an_open_port_beyond_loopback_is_refused(bind: str) -> None:
    """A gRPC bind other hosts can reach, with neither an access file nor mutual TLS, is a
    SettingsError naming the three ways out."""
    with pytest.raises(SettingsError) as raised:
        ServiceSettings.from_env({"CHAT_POLICY_GRPC_BIND": bind})
    message = str(raised.value)
    assert message.startswith(f"CHAT_POLICY_GRPC_BIND={bind!r} is not a loopback address")
    for way_out in (
        "CHAT_POLICY_ACCESS_FILE",
        "CHAT_POLICY_GRPC_TLS_CLIENT_CA",
        "CHAT_POLICY_GRPC_OPEN_ACCESS=true",
    ):
        assert way_out in message


@pytest.mark.parametrize(
    "way_out",
    [
        {"CHAT_POLICY_ACCESS_FILE": "access.toml"},
        {
            "CHAT_POLICY_GRPC_TLS_CERT": "c.pem",
            "CHAT_POLICY_GRPC_TLS_KEY": "k.pem",
            "CHAT_POLICY_GRPC_TLS_CLIENT_CA": "ca.pem",
        },
        {"CHAT_POLICY_GRPC_OPEN_ACCESS": "TRUE"},
    ],
)
def test_each_way_out_opens_a_port_beyond_loopback(way_out: dict[str, str]) -> None:
    """An access file, mutual TLS or the explicit open flag each let 0.0.0.0 be bound."""
    settings = ServiceSettings.from_env({"CHAT_POLICY_GRPC_BIND": "0.0.0.0:50051", **way_out})
    assert settings.grpc_bind == "0.0.0.0:50051"


def test_open_access_is_true_or_false() -> None:
    """CHAT_POLICY_GRPC_OPEN_ACCESS is true or false, nothing else."""
    with pytest.raises(SettingsError, match="CHAT_POLICY_GRPC_OPEN_ACCESS='yes' must be true"):
        ServiceSettings.from_env({"CHAT_POLICY_GRPC_OPEN_ACCESS": "yes"})


@pytest.mark.parametrize("bind", ["127.0.0.1:50051", "127.8.9.10:1", "[::1]:50051", "localhost:1"])
def test_loopback_binds_need_no_access_file(bind: str) -> None:
    """Only this host reaches a loopback bind: it starts open, as before."""
    settings = ServiceSettings.from_env({"CHAT_POLICY_GRPC_BIND": bind})
    assert (settings.access_file, settings.open_access) == (None, False)
