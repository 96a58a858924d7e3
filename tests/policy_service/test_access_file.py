"""The access file: what it grants, how callers are recognised, and errors at FILE:LINE."""

from __future__ import annotations

import pytest

from chatpolicy.v1 import audit_service_pb2, creation_policy_service_pb2, group_state_service_pb2
from policy_service.access.access_file import AccessError, parse_access, token_digest_line
from policy_service.access.access_rules import UNIDENTIFIED, AccessRules
from policy_service.access.caller import Caller
from policy_service.access.permissions import ALL, METHOD_PERMISSIONS, permission_of
from policy_service.errors import MethodNotAllowed, UnknownCaller

ADAPTER_TOKEN = "adapter-token-0123456789"
OTHER_TOKEN = "other-token-0123456789"
READ = "/chatpolicy.v1.GroupStateService/GetGroupState"
WRITE = "/chatpolicy.v1.GroupStateService/RecordGroupFull"
HEALTH = "/grpc.health.v1.Health/Check"

EXAMPLE = f"""
[callers.adapter]
relays_chat = true
tokens = ["{token_digest_line(ADAPTER_TOKEN)}", "{token_digest_line("rotated-out-token")}"]
allow = ["creation.check", "group-state.write"]

[callers.billing]
certificates = ["spiffe://example.org/billing"]
allow = ["group-state.read"]

[callers.ops]
tokens = ["{token_digest_line(OTHER_TOKEN)}"]
certificates = ["ops.internal"]
allow = ["*"]
"""


def rules(source: str = EXAMPLE) -> AccessRules:
    """The rules of an access file's text."""
    return parse_access(source.encode(), "access.toml")


def admit(method: str, authorization: str | None = None, certificate: str | None = None) -> Caller:
    """The caller EXAMPLE admits for a call to `method`."""
    return rules().admit(method, permission_of(method), authorization, certificate)


def load_error(source: str) -> str:
    """The message of the AccessError that loading `source` raises."""
    with pytest.raises(AccessError) as raised:
        rules(source)
    return str(raised.value)


def test_every_method_of_every_service_has_a_permission() -> None:
    """Each RPC of the protos, health and both reflection versions is in the table."""
    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (creation_policy_service_pb2, group_state_service_pb2, audit_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert len(methods) == 13
    assert methods <= set(METHOD_PERMISSIONS)
    assert set(METHOD_PERMISSIONS) - methods == {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
    assert permission_of("/chatpolicy.v1.GroupStateService/SomethingNew") == ALL


def test_a_token_names_its_caller_and_each_gets_what_it_is_allowed() -> None:
    """A bearer token (any case of 'Bearer') admits its caller to its permissions only."""
    assert admit(WRITE, f"Bearer {ADAPTER_TOKEN}") == Caller("adapter", relays_chat=True)
    assert admit(WRITE, "bearer rotated-out-token").name == "adapter"
    with pytest.raises(MethodNotAllowed) as refused:
        admit(READ, f"Bearer {ADAPTER_TOKEN}")
    assert (refused.value.caller, refused.value.method, refused.value.permission) == (
        "adapter",
        READ,
        "group-state.read",
    )


def test_a_certificate_names_its_caller() -> None:
    """A listed certificate identity admits its caller; `*` allows every method."""
    assert admit(READ, certificate="spiffe://example.org/billing").name == "billing"
    with pytest.raises(MethodNotAllowed):
        admit(WRITE, certificate="spiffe://example.org/billing")
    audit = "/chatpolicy.v1.AuditService/ListAuditEvents"
    assert admit(audit, certificate="ops.internal").name == "ops"
    assert admit("/chatpolicy.v1.Unknown/Method", f"Bearer {OTHER_TOKEN}").name == "ops"


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("Bearer not-a-listed-token", "the bearer token is not one the access file lists"),
        ("Basic dXNlcjpwYXNz", "must be 'Bearer TOKEN'"),
        ("Bearer ", "must be 'Bearer TOKEN'"),
    ],
)
def test_a_token_that_is_not_listed_is_refused_even_for_open_methods(
    authorization: str, message: str
) -> None:
    """A credential sent is never ignored: an unknown one is UnknownCaller, health too."""
    for method in (READ, HEALTH):
        with pytest.raises(UnknownCaller, match=message):
            admit(method, authorization)


def test_no_credential_is_refused_but_for_open_methods() -> None:
    """Without token or listed certificate only health and reflection answer, unidentified."""
    assert admit(HEALTH) is UNIDENTIFIED
    assert admit(HEALTH, certificate="spiffe://example.org/stranger") is UNIDENTIFIED
    with pytest.raises(UnknownCaller, match="no credential"):
        admit(READ)
    with pytest.raises(UnknownCaller, match=r"'spiffe://example\.org/stranger' is not a caller"):
        admit(READ, certificate="spiffe://example.org/stranger")


def test_token_and_certificate_of_two_callers_are_refused() -> None:
    """A token of one caller over a certificate of another is UnknownCaller; the same
    caller's pair, or a token over an unlisted certificate, is that caller."""
    with pytest.raises(UnknownCaller, match=r"'adapter'.*'billing'"):
        admit(WRITE, f"Bearer {ADAPTER_TOKEN}", "spiffe://example.org/billing")
    assert admit(WRITE, f"Bearer {OTHER_TOKEN}", "ops.internal").name == "ops"
    assert admit(WRITE, f"Bearer {ADAPTER_TOKEN}", "unlisted.internal").name == "adapter"


def test_open_can_be_narrowed_and_widened() -> None:
    """`open` replaces the default: health only, or reads open to anyone."""
    narrowed = rules(EXAMPLE.replace("[callers.adapter]", 'open = ["health"]\n[callers.adapter]'))
    reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
    assert narrowed.admit(HEALTH, "health", None, None) is UNIDENTIFIED
    with pytest.raises(UnknownCaller):
        narrowed.admit(reflection, "reflection", None, None)
    widened = rules('open = ["group-state.read"]\n' + EXAMPLE)
    assert widened.admit(READ, "group-state.read", None, None) is UNIDENTIFIED
    assert widened.admit(READ, "group-state.read", f"Bearer {ADAPTER_TOKEN}", None).name == (
        "adapter"
    )


def test_revision_is_the_files_hash() -> None:
    """The revision is sha256: and 16 hex digits, changing with the text."""
    assert rules().revision.startswith("sha256:")
    assert len(rules().revision) == len("sha256:") + 16
    assert rules().revision != rules(EXAMPLE + "\n# changed\n").revision


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("callers = 3", "access.toml:1: field 'callers': must be a table of callers"),
        ("version = 1", "access.toml:1: field 'version': unknown key (expected one of callers"),
        ('open = ["everything"]', "access.toml:1: field 'open': unknown permission 'everything'"),
        ('open = ["*"]', "access.toml:1: field 'open': cannot hold '*'"),
        ("open = [", "access.toml: not valid TOML"),
        (
            '[callers.a]\ntokens = ["sha256:abc"]',
            "access.toml:2: caller 'a' field 'tokens': entry 1 is not sha256: and 64 lowercase",
        ),
        (
            f'[callers.a]\ntokens = ["{token_digest_line("x").upper()}"]',
            "access.toml:2: caller 'a' field 'tokens': entry 1 is not sha256:",
        ),
        (
            '[callers.a]\ntokens = ["plain-secret-token"]',
            "access.toml:2: caller 'a' field 'tokens': entry 1 is not sha256:",
        ),
        (
            '[callers.a]\ncertificates = ["a.internal"]\nallow = ["group-state.read", "writes"]',
            "access.toml:3: caller 'a' field 'allow': unknown permission 'writes'",
        ),
        (
            '[callers.a]\ncertificates = ["a.internal"]\nalow = ["admin"]',
            "access.toml:3: caller 'a' field 'alow': unknown key",
        ),
        ('[callers.a]\nallow = ["admin"]', "access.toml:1: caller 'a': cannot be recognised"),
        (
            '[callers.a]\ncertificates = ["a"]\nrelays_chat = "yes"',
            "access.toml:3: caller 'a' field 'relays_chat': must be true or false",
        ),
        (
            '[callers.a]\ncertificates = "a.internal"',
            "access.toml:2: caller 'a' field 'certificates': must be a list of strings",
        ),
        (
            '[callers.a]\ncertificates = [""]',
            "access.toml:2: caller 'a' field 'certificates': an identity cannot be empty",
        ),
        (
            '[callers."bad name"]\ncertificates = ["a"]',
            "caller 'bad name': a caller's name is 1-64 of",
        ),
        (
            '[callers.a]\ncertificates = ["c.internal"]\n\n'
            '[callers.b]\ncertificates = ["c.internal"]',
            "access.toml:5: caller 'b' field 'certificates': 'c.internal' is listed for 'a' too",
        ),
        (
            f'[callers.a]\ntokens = ["{token_digest_line("t")}"]\n'
            f'[callers.b]\ncertificates = ["b"]\ntokens = ["{token_digest_line("t")}"]',
            f"access.toml:5: caller 'b' field 'tokens': {token_digest_line('t')} is listed",
        ),
        (
            f'[callers.a]\ntokens = ["{token_digest_line("t")}", "{token_digest_line("t")}"]',
            "access.toml:2: caller 'a' field 'tokens': sha256:",
        ),
    ],
)
def test_problems_are_refused_at_their_line(source: str, message: str) -> None:
    """Each problem is an AccessError naming the file, line and caller."""
    assert message in load_error(source)


def test_a_token_pasted_by_mistake_is_not_repeated() -> None:
    """The error for a raw token in `tokens` does not quote it (it would reach the log)."""
    assert "plain-secret-token" not in load_error('[callers.a]\ntokens = ["plain-secret-token"]')


def test_an_empty_file_lets_only_open_methods_through() -> None:
    """A file without callers still checks: only health and reflection answer."""
    empty = rules("")
    assert empty.admit(HEALTH, "health", None, None) is UNIDENTIFIED
    with pytest.raises(UnknownCaller):
        empty.admit(READ, "group-state.read", None, None)


def test_a_good_token_stays_good_and_a_wrong_one_stays_refused() -> None:
    """A token found good is the same caller at every call (remembered), and a wrong token
    sent after it is refused every time."""
    access = rules()
    for _ in range(3):
        assert access.admit(WRITE, "group-state.write", f"Bearer {ADAPTER_TOKEN}", None).name == (
            "adapter"
        )
        with pytest.raises(UnknownCaller):
            access.admit(WRITE, "group-state.write", f"Bearer {ADAPTER_TOKEN}x", None)
    without = rules(EXAMPLE.replace(token_digest_line(ADAPTER_TOKEN), token_digest_line("new")))
    with pytest.raises(UnknownCaller):
        without.admit(WRITE, "group-state.write", f"Bearer {ADAPTER_TOKEN}", None)
