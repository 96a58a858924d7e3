"""Callers and permissions on a real service with mutual TLS: bearer tokens and client
certificates (URI, DNS and common-name identities, as grpc's auth context gives them), the
refusals callers see, the log line, and reloads of the access file."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from chat_policy_shared.channel import ChannelSecurity, open_channel
from chatpolicy.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    creation_policy_service_pb2,
    creation_policy_service_pb2_grpc,
    group_state_service_pb2,
    group_state_service_pb2_grpc,
)
from policy_service.access.access_file import token_digest_line
from tests.policy_service.servers import APP, Serve, Server, error_info, full_event
from tests.tls_files import Pki
from tests.waiting import wait_for

ADAPTER_TOKEN = "adapter-token-for-tests"
GET = "/chatpolicy.v1.GroupStateService/GetGroupState"
RECORD = "/chatpolicy.v1.GroupStateService/RecordGroupFull"

ACCESS = f"""\
[callers.adapter]
relays_chat = true
tokens = ["{token_digest_line(ADAPTER_TOKEN)}"]
allow = ["creation.check", "group-state.write"]

[callers.billing]
certificates = ["spiffe://example.org/billing"]
allow = ["group-state.read"]

[callers.reader]
certificates = ["reader.internal"]
allow = ["policy.read"]

[callers.named]
certificates = ["cn-only"]
allow = ["group-state.read"]

[callers.auditor]
certificates = ["auditor.internal"]
allow = ["audit.read"]
"""


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """The CAs, and client certificates naming their holder each in its own way."""
    pki = Pki.make(tmp_path / "pki")
    pki.issue_client(
        "billing", uris=("spiffe://example.org/billing",), dns=("billing.internal",), cn="b"
    )
    pki.issue_client("reader", dns=("reader.internal", "other.internal"), cn="someone")
    pki.issue_client("named", cn="cn-only")
    pki.issue_client("stranger", uris=("spiffe://example.org/stranger",))
    pki.issue_client("auditor", dns=("auditor.internal",))
    return pki


@pytest.fixture
def server(serve: Serve, pki: Pki, tmp_path: Path) -> Server:
    """A service with mutual TLS and the access file ACCESS (reloaded when it changes)."""
    access_file = tmp_path / "access.toml"
    access_file.write_text(ACCESS)
    return serve(
        tls_cert_file=pki.path("server.pem"),
        tls_key_file=pki.path("server-key.pem"),
        tls_client_ca_file=pki.path("client-ca.pem"),
        access_file=access_file,
    )


class Client:
    """Stubs over a channel presenting one client certificate, and a token if given."""

    def __init__(self, server: Server, pki: Pki, certificate: str, token: str = "") -> None:
        security = ChannelSecurity(
            ca_file=pki.path("server-ca.pem"),
            cert_file=pki.path(f"{certificate}.pem"),
            key_file=pki.path(f"{certificate}-key.pem"),
            server_name="localhost",
            token=token,
        )
        self.channel = open_channel(server.target, security)
        self.groups = group_state_service_pb2_grpc.GroupStateServiceStub(self.channel)
        self.creation = creation_policy_service_pb2_grpc.CreationPolicyServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.audit = audit_service_pb2_grpc.AuditServiceStub(self.channel)

    def get(self) -> grpc.StatusCode:
        """GetGroupState of a group never seen: NOT_FOUND when the caller may read."""
        return code_of(
            lambda: self.groups.GetGroupState(
                group_state_service_pb2.GetGroupStateRequest(sdk_app_id=APP, group_id="@g"),
                timeout=5,
            )
        )

    def record(self) -> grpc.StatusCode:
        """RecordGroupFull of a group: OK when the caller may write."""
        return code_of(lambda: self.groups.RecordGroupFull(full_event("@g", 1_000), timeout=5))


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    """The status code `call` ends with."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def refusal(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str, dict[str, str], str]:
    """The code, ErrorInfo reason and metadata, and message of a refused call."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    info = error_info(raised.value)
    return raised.value.code(), info.reason, dict(info.metadata), raised.value.details()


def test_each_caller_gets_exactly_what_the_file_allows(server: Server, pki: Pki) -> None:
    """A URI-named certificate reads but may not write; the token of the adapter (over an
    unlisted certificate) writes but may not read; a DNS-named and a CN-named certificate
    are theirs."""
    billing = Client(server, pki, "billing")
    assert billing.get() == grpc.StatusCode.NOT_FOUND
    assert billing.record() == grpc.StatusCode.PERMISSION_DENIED
    adapter = Client(server, pki, "client", token=ADAPTER_TOKEN)
    assert adapter.record() == grpc.StatusCode.OK
    assert adapter.get() == grpc.StatusCode.PERMISSION_DENIED
    reader = Client(server, pki, "reader")
    assert code_of(
        lambda: reader.creation.GetPolicy(creation_policy_service_pb2.GetPolicyRequest(), timeout=5)
    ) == (grpc.StatusCode.OK)
    assert reader.get() == grpc.StatusCode.PERMISSION_DENIED
    assert Client(server, pki, "named").get() == grpc.StatusCode.OK  # the adapter recorded it


def test_a_caller_refused_a_method_is_told_which_permission_it_lacks(
    server: Server, pki: Pki
) -> None:
    """PERMISSION_DENIED carries ERROR_REASON_METHOD_NOT_ALLOWED with caller, method and
    permission, and nothing was done."""
    billing = Client(server, pki, "billing")
    code, reason, metadata, message = refusal(
        lambda: billing.groups.RecordGroupFull(full_event("@g", 1_000), timeout=5)
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ERROR_REASON_METHOD_NOT_ALLOWED")
    assert metadata == {"caller": "billing", "method": RECORD, "permission": "group-state.write"}
    assert message == (
        f"caller 'billing' may not call {RECORD}: the access file does not give it the"
        " permission 'group-state.write'"
    )
    assert billing.get() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("certificate", "token", "message"),
    [
        ("stranger", "", "client certificate 'spiffe://example.org/stranger' is not a caller's"),
        ("billing", "not-a-token-of-the-file", "the bearer token is not one the access file"),
        ("billing", ADAPTER_TOKEN, "the bearer token names caller 'adapter' but the client"),
    ],
)
def test_unknown_and_conflicting_credentials_are_unauthenticated(
    server: Server, pki: Pki, certificate: str, token: str, message: str
) -> None:
    """A CA-signed certificate the file does not list, an unknown token, or a token and a
    certificate of two callers: UNAUTHENTICATED, ERROR_REASON_UNKNOWN_CALLER, `method`."""
    client = Client(server, pki, certificate, token)
    code, reason, metadata, details = refusal(
        lambda: client.groups.GetGroupState(
            group_state_service_pb2.GetGroupStateRequest(sdk_app_id=APP, group_id="@g"), timeout=5
        )
    )
    assert (code, reason, metadata) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "ERROR_REASON_UNKNOWN_CALLER",
        {"method": GET},
    )
    assert details.startswith(f"{GET}: {message}")


def test_health_is_open_to_an_unlisted_certificate_but_not_to_an_unknown_token(
    server: Server, pki: Pki
) -> None:
    """Health answers any caller of the CA; a token sent is checked even there."""
    request = health_pb2.HealthCheckRequest()
    stranger = Client(server, pki, "stranger")
    assert (
        stranger.health.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    )
    forger = Client(server, pki, "stranger", token="forged")
    assert code_of(lambda: forger.health.Check(request, timeout=5)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )


def test_refusals_are_counted_and_every_line_names_the_caller(
    server: Server, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused calls count under their code; each RPC line carries `caller`."""

    def count(method: str, code: str) -> float:
        labels = {"method": method, "code": code}
        return REGISTRY.get_sample_value("chat_policy_service_rpcs_total", labels) or 0.0

    denied, unknown = count(RECORD, "PERMISSION_DENIED"), count(GET, "UNAUTHENTICATED")
    caplog.set_level(logging.INFO, "policy_service.api.rpc_interceptor")
    Client(server, pki, "billing").record()
    Client(server, pki, "billing").get()
    Client(server, pki, "stranger").get()
    wait_for(lambda: len(caplog.records) >= 3, what="three RPC lines")
    assert count(RECORD, "PERMISSION_DENIED") == denied + 1
    assert count(GET, "UNAUTHENTICATED") == unknown + 1
    lines = [(r.rpc_method, r.caller, r.code, r.getMessage()) for r in caplog.records]  # type: ignore[attr-defined]
    assert lines[0][:3] == (RECORD, "billing", "PERMISSION_DENIED")
    assert lines[0][3].startswith("RecordGroupFull answered PERMISSION_DENIED: caller 'billing'")
    assert lines[1][:3] == (GET, "billing", "NOT_FOUND")
    assert lines[2][:3] == (GET, "unknown", "UNAUTHENTICATED")


def test_an_edited_file_applies_and_a_broken_one_is_refused(
    server: Server, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a restart: a new permission applies to the next calls; a broken file is
    refused loudly (counted) and the last good rules stay."""
    billing = Client(server, pki, "billing")
    assert billing.record() == grpc.StatusCode.PERMISSION_DENIED
    access_file = tmp_path / "access.toml"
    access_file.write_text(
        ACCESS.replace('["group-state.read"]', '["group-state.read", "group-state.write"]', 1)
    )
    wait_for(lambda: billing.record() == grpc.StatusCode.OK, what="the new permission")
    holder = server.service.access
    assert holder is not None
    caplog.set_level(logging.ERROR, "policy_service.access.access_reload")
    access_file.write_text(
        ACCESS + "\n[callers.broken]\ncertificates = ['x']\nallow = ['everything']\n"
    )
    wait_for(lambda: holder.last_reload_error != "", what="the broken file to be refused")
    assert billing.record() == grpc.StatusCode.OK
    assert "access file reload refused, still applying sha256:" in caplog.text
    assert "caller 'broken' field 'allow': unknown permission 'everything'" in caplog.text


def test_access_reloads_are_audited(server: Server, pki: Pki, tmp_path: Path) -> None:
    """Each reload of the access file is an access.reload event of the audit trail by
    "local": OK with the revision, or REFUSED with why (read by a caller with audit.read)."""
    request = audit_service_pb2.ListAuditEventsRequest(action="access.reload")
    auditor = Client(server, pki, "auditor")

    def events() -> list[Any]:
        return list(auditor.audit.ListAuditEvents(request, timeout=5).events)

    access_file = tmp_path / "access.toml"
    access_file.write_text(ACCESS + "# edited\n")
    wait_for(lambda: len(events()) == 1, what="the reload's event")
    access_file.write_text(ACCESS + "[callers.x]\n")
    wait_for(lambda: len(events()) == 2, what="the refusal's event")
    refused, loaded = events()
    assert (loaded.caller, loaded.reason, loaded.result) == ("local", "file changed", "OK")
    assert loaded.detail.startswith("revision sha256:")
    assert (refused.result, refused.caller) == ("REFUSED", "local")
    assert "caller 'x': cannot be recognised" in refused.detail
