"""Page tokens the service did not issue are INVALID_ARGUMENT/ERROR_REASON_INVALID_PAGE_TOKEN
through the gRPC API, whatever their form, on both stores; never INTERNAL or a store error."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from chatpolicy.v1 import creation_policy_service_pb2 as cpb
from chatpolicy.v1 import group_state_service_pb2 as pb
from policy_service.api.page_tokens import MAX_PAGE_TOKEN_CHARS
from tests.policy_service.servers import APP, Serve, Server, error_info, full_event
from tests.policy_service.stores import fresh_url
from tests.waiting import wait_for


def forged(document: str) -> str:
    """A token as the service writes one (unpadded URL-safe base64) of any text."""
    return base64.urlsafe_b64encode(document.encode()).decode().rstrip("=")


def fields(*values: object) -> str:
    """A well-formed token of these fields, in the service's JSON."""
    return forged(json.dumps(list(values), separators=(",", ":")))


# Version 2 of the full-groups token: filters (app, duration), full_since, app, group, topic.
FULL_GROUPS_TOKENS = {
    "deep_nesting": forged("[" * 5000),
    "nested_field": forged('[2,0,0,1,[[[1]]],"g",""]'),
    "object": forged('{"version":2}'),
    "full_since_beyond_64_bits": fields(2, 0, 0, 2**70, APP, "g", ""),
    "sdk_app_id_beyond_64_bits": fields(2, 0, 0, 1000, 2**70, "g", ""),
    "negative_beyond_64_bits": fields(2, 0, 0, -(2**70), APP, "g", ""),
    "huge_number": forged(f'[2,0,0,{"9" * 5000},1,"g",""]'),
    "float": fields(2, 0, 0, 1000.0, APP, "g", ""),
    "bool": fields(2, 0, 0, True, APP, "g", ""),
    "nul_in_group": fields(2, 0, 0, 1000, APP, "g\x00", ""),
    "lone_surrogate": forged('[2,0,0,1000,1400000000,"\\ud800",""]'),
    "too_few_fields": fields(2, 0, 0),
    "trailing_text": forged('[2,0,0,1000,1400000000,"g",""]]'),
    "too_long": "A" * (MAX_PAGE_TOKEN_CHARS + 1),
    "not_base64": "!!!",
    "not_utf8": base64.urlsafe_b64encode(b"\xff\xfe").decode(),
}
# Version 2 of the decisions token: the filters' digest, decided_at, decision_id; each of
# these is made from the digest of an issued token.
DECISIONS_TOKENS: dict[str, Callable[[str], str]] = {
    "deep_nesting": lambda digest: forged("[" * 5000),
    "decided_at_beyond_64_bits": lambda digest: fields(2, digest, 2**70, "d"),
    "nul_in_decision_id": lambda digest: fields(2, digest, 1000, "d\x00"),
    "nested_field": lambda digest: forged(f'[2,"{digest}",[1],"d"]'),
    "too_long": lambda digest: "A" * (MAX_PAGE_TOKEN_CHARS + 1),
}


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path, serve: Serve) -> Server:
    """A service on each store, holding two full groups and two decisions, so that a page
    token that got as far as a store query would be used."""
    started = serve(store=fresh_url(request.param, request, tmp_path))
    for n in range(2):
        started.groups.RecordGroupFull(full_event(f"@TGS#{n}", 1000 + n), timeout=5)
        started.creation.CheckGroupCreation(
            cpb.CheckGroupCreationRequest(sdk_app_id=APP, operator_account="alice"), timeout=5
        )
    wait_for(
        lambda: (
            len(started.creation.ListDecisions(cpb.ListDecisionsRequest(), timeout=5).decisions)
            == 2
        )
    )
    return started


def assert_invalid_page_token(call: Callable[..., object], request: object) -> None:
    """The call fails with INVALID_ARGUMENT and the page-token reason."""
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert error_info(raised.value).reason == "ERROR_REASON_INVALID_PAGE_TOKEN"


@pytest.mark.parametrize("token", FULL_GROUPS_TOKENS.values(), ids=FULL_GROUPS_TOKENS.keys())
def test_a_forged_full_groups_token_is_an_invalid_page_token(server: Server, token: str) -> None:
    """ListFullGroups with a token the service did not issue is INVALID_PAGE_TOKEN."""
    assert_invalid_page_token(
        server.groups.ListFullGroups, pb.ListFullGroupsRequest(page_token=token)
    )


@pytest.mark.parametrize("make", DECISIONS_TOKENS.values(), ids=DECISIONS_TOKENS.keys())
def test_a_forged_decisions_token_is_an_invalid_page_token(
    server: Server, make: Callable[[str], str]
) -> None:
    """ListDecisions with a token the service did not issue is INVALID_PAGE_TOKEN."""
    issued = server.creation.ListDecisions(cpb.ListDecisionsRequest(page_size=1), timeout=5)
    padded = issued.next_page_token + "=" * (-len(issued.next_page_token) % 4)
    digest = json.loads(base64.urlsafe_b64decode(padded))[1]
    assert_invalid_page_token(
        server.creation.ListDecisions, cpb.ListDecisionsRequest(page_token=make(digest))
    )


def test_issued_tokens_of_ids_at_their_limit_walk_every_page(serve: Serve, tmp_path: Path) -> None:
    """Tokens the service issues for groups and topics with IDs of 256 bytes that JSON
    escapes the most (control characters) are accepted: a walk of one group per page sees
    every group."""
    server = serve(store=f"sqlite:///{tmp_path / 'ids.db'}")
    ids = [chr(n) * 256 for n in range(1, 4)]
    for n, group_id in enumerate(ids):
        event = full_event(group_id, 1000 + n)
        event.topic_id = "\x1f" * 256
        server.groups.RecordGroupFull(event, timeout=5)
    walked, token = [], ""
    while True:
        page = server.groups.ListFullGroups(
            pb.ListFullGroupsRequest(page_size=1, page_token=token), timeout=5
        )
        walked += [state.group_id for state in page.group_states]
        assert len(page.next_page_token) <= MAX_PAGE_TOKEN_CHARS
        if not (token := page.next_page_token):
            break
    assert walked == ids
