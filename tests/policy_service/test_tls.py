"""TLS and mutual TLS on the gRPC port, with the project's own client channel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chat_policy_shared.channel import ChannelSecurity, ChannelSettingsError, open_channel
from policy_service.api.tls import server_credentials
from policy_service.settings import ServiceSettings, SettingsError
from tests.policy_service.servers import Serve, Server
from tests.tls_files import Pki

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """Fresh CAs and certificates in tmp_path/pki."""
    return Pki.make(tmp_path / "pki")


def tls_server(serve: Serve, pki: Pki, *, mutual: bool) -> Server:
    """A service whose gRPC port speaks TLS (mutual TLS when asked)."""
    return serve(
        tls_cert_file=pki.path("server.pem"),
        tls_key_file=pki.path("server-key.pem"),
        tls_client_ca_file=pki.path("client-ca.pem") if mutual else None,
    )


def check(target: str, security: ChannelSecurity) -> grpc.StatusCode | None:
    """Call Health.Check over a new channel: None if it answered SERVING, else the code."""
    with open_channel(target, security) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
        except grpc.RpcError as error:
            return error.code()
    assert response.status == SERVING
    return None


def client(pki: Pki, *, mutual: bool, server_name: str = "") -> ChannelSecurity:
    """A caller that trusts the server CA, with the client certificate when mutual."""
    return ChannelSecurity(
        ca_file=pki.path("server-ca.pem"),
        cert_file=pki.path("client.pem") if mutual else None,
        key_file=pki.path("client-key.pem") if mutual else None,
        server_name=server_name,
    )


def test_caller_trusting_the_service_ca_is_served(serve: Serve, pki: Pki) -> None:
    """A TLS caller that trusts the CA of the service's certificate gets answers."""
    server = tls_server(serve, pki, mutual=False)
    assert check(server.target, client(pki, mutual=False)) is None


def test_plaintext_caller_is_refused_by_a_tls_port(serve: Serve, pki: Pki) -> None:
    """A caller without TLS cannot talk to a TLS port."""
    server = tls_server(serve, pki, mutual=False)
    assert check(server.target, ChannelSecurity()) == grpc.StatusCode.UNAVAILABLE


def test_caller_trusting_another_ca_is_refused(serve: Serve, pki: Pki, tmp_path: Path) -> None:
    """A caller does not accept a service certificate signed by a CA it does not trust."""
    server = tls_server(serve, pki, mutual=False)
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    assert check(server.target, ChannelSecurity(ca_file=other)) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_certificate_from_the_client_ca(serve: Serve, pki: Pki) -> None:
    """With a client CA set, only callers presenting a certificate it signed are served."""
    server = tls_server(serve, pki, mutual=True)
    assert check(server.target, client(pki, mutual=True)) is None
    assert check(server.target, client(pki, mutual=False)) == grpc.StatusCode.UNAVAILABLE
    pki.issue(pki.server_ca, "impostor", "chat-policy-adapter")
    impostor = ChannelSecurity(
        ca_file=pki.path("server-ca.pem"),
        cert_file=pki.path("impostor.pem"),
        key_file=pki.path("impostor-key.pem"),
    )
    assert check(server.target, impostor) == grpc.StatusCode.UNAVAILABLE


def test_server_name_checks_a_certificate_issued_for_another_name(serve: Serve, pki: Pki) -> None:
    """Dialling an address, the caller checks the certificate against the configured name."""
    pki.issue(pki.server_ca, "server", "policy.internal")
    server = tls_server(serve, pki, mutual=False)
    assert check(server.target, client(pki, mutual=False)) == grpc.StatusCode.UNAVAILABLE
    named = client(pki, mutual=False, server_name="policy.internal")
    assert check(server.target, named) is None


def test_renewed_certificate_is_served_without_a_restart(serve: Serve, pki: Pki) -> None:
    """New connections get the certificate written over the old files; open ones go on."""
    server = tls_server(serve, pki, mutual=False)
    old = client(pki, mutual=False)
    with open_channel(server.target, old) as kept:
        health = health_pb2_grpc.HealthStub(kept)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=3).status == SERVING
        renewed_ca = trustme.CA()
        renewed_ca.cert_pem.write_to_path(str(pki.path("renewed-ca.pem")))
        pki.issue(renewed_ca, "server", "localhost", "127.0.0.1")
        renewed = ChannelSecurity(ca_file=pki.path("renewed-ca.pem"))
        assert check(server.target, renewed) is None
        assert check(server.target, old) == grpc.StatusCode.UNAVAILABLE
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=3).status == SERVING


def test_renewed_files_that_do_not_pair_keep_the_old_certificate(serve: Serve, pki: Pki) -> None:
    """A certificate replaced without its key is not served; the last good pair is."""
    server = tls_server(serve, pki, mutual=False)
    trustme.CA().issue_cert("localhost").cert_chain_pems[0].write_to_path(
        str(pki.path("server.pem"))
    )
    assert check(server.target, client(pki, mutual=False)) is None


@pytest.fixture
def env(pki: Pki) -> Iterator[dict[str, str]]:
    """The service's TLS variables, for the settings tests to spoil."""
    yield pki.service_env(mutual=True)


def test_certificate_without_key_is_a_settings_error(env: dict[str, str]) -> None:
    """CHAT_POLICY_GRPC_TLS_CERT alone is refused, naming both variables."""
    del env["CHAT_POLICY_GRPC_TLS_KEY"]
    with pytest.raises(SettingsError, match="CHAT_POLICY_GRPC_TLS_KEY go together"):
        ServiceSettings.from_env(env)


def test_client_ca_without_tls_is_a_settings_error(env: dict[str, str]) -> None:
    """Mutual TLS without a certificate of the service's own is refused."""
    del env["CHAT_POLICY_GRPC_TLS_KEY"], env["CHAT_POLICY_GRPC_TLS_CERT"]
    with pytest.raises(SettingsError, match=r"CLIENT_CA \(mutual TLS\) needs TLS"):
        ServiceSettings.from_env(env)


@pytest.mark.parametrize(
    ("variable", "content", "message"),
    [
        ("CHAT_POLICY_GRPC_TLS_CERT", b"not a certificate", "are not a PEM certificate"),
        ("CHAT_POLICY_GRPC_TLS_KEY", None, "are not a PEM certificate"),
        ("CHAT_POLICY_GRPC_TLS_CLIENT_CA", b"not a CA", "is not a PEM CA bundle"),
        ("CHAT_POLICY_GRPC_TLS_CLIENT_CA", "missing", "No such file"),
    ],
)
def test_unusable_tls_file_stops_the_start_naming_it(
    env: dict[str, str], pki: Pki, variable: str, content: bytes | str | None, message: str
) -> None:
    """Garbage, a key of another certificate, or a missing file is a settings error."""
    path = Path(env[variable])
    if content is None:
        path.write_bytes(trustme.CA().issue_cert("localhost").private_key_pem.bytes())
    elif content == "missing":
        path.unlink()
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    with pytest.raises(SettingsError, match=message):
        server_credentials(ServiceSettings.from_env(env))


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"CHAT_POLICY_GRPC_TLS_CLIENT_CERT": "c.pem"}, "go together"),
        (
            {"CHAT_POLICY_GRPC_TLS_CLIENT_CERT": "c.pem", "CHAT_POLICY_GRPC_TLS_CLIENT_KEY": "k"},
            "needs TLS",
        ),
        ({"CHAT_POLICY_GRPC_TLS_SERVER_NAME": "policy.internal"}, "needs TLS"),
    ],
)
def test_incomplete_client_tls_settings_are_refused(
    variables: dict[str, str], message: str
) -> None:
    """A caller's TLS variables that cannot work together are refused at start."""
    with pytest.raises(ChannelSettingsError, match=message):
        ChannelSecurity.from_env(variables)


def test_unreadable_client_ca_names_its_variable(tmp_path: Path) -> None:
    """A CA path that does not exist is reported with the variable that named it."""
    security = ChannelSecurity.from_env({"CHAT_POLICY_GRPC_TLS_CA": str(tmp_path / "none.pem")})
    with pytest.raises(ChannelSettingsError, match=r"CHAT_POLICY_GRPC_TLS_CA=.*No such file"):
        security.credentials()
