"""Properties of the webhook endpoint through falcon.testing, over generated queries and bodies.

Each example builds its own app (webhook_app) instead of using the function-scoped fixtures,
which Hypothesis would share between examples.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import falcon.testing
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from adapter.app import create_app
from adapter.group_creation import COMMAND as BEFORE
from adapter.group_state import (
    GROUP_DESTROYED,
    GROUP_FULL,
    MEMBER_EXIT,
    NEW_MEMBER_JOIN,
)
from adapter.payload import MAX_EVENT_TIME_MS
from adapter.settings import AdapterSettings
from adapter.signature import compute_sign
from adapter.source import Address, Network, client_address, parse_networks
from adapter.spool import Spool
from tests.adapter.chat import APP, FakePolicyClient, answer
from tests.chat_samples import OK

COMMANDS = (BEFORE, GROUP_FULL, MEMBER_EXIT, GROUP_DESTROYED, NEW_MEMBER_JOIN)
# The fields Chat documents for each command (CallbackCommand aside).
FIELDS = {
    BEFORE: (
        "Operator_Account",
        "Owner_Account",
        "Type",
        "Name",
        "CreateGroupNum",
        "MemberList",
        "EventTime",
    ),
    GROUP_FULL: ("GroupId", "TopicId", "EventTime"),
    MEMBER_EXIT: ("GroupId", "Type", "ExitType", "Operator_Account", "ExitMemberList", "EventTime"),
    GROUP_DESTROYED: ("GroupId", "Type", "Owner_Account", "Name", "MemberList", "EventTime"),
    NEW_MEMBER_JOIN: (
        "GroupId",
        "Type",
        "JoinType",
        "Operator_Account",
        "NewMemberList",
        "EventTime",
    ),
}
MEMBER_LISTS = {
    BEFORE: "MemberList",
    MEMBER_EXIT: "ExitMemberList",
    GROUP_DESTROYED: "MemberList",
    NEW_MEMBER_JOIN: "NewMemberList",
}
QUERY_KEYS = ("SdkAppid", "CallbackCommand", "contenttype", "ClientIP", "OptPlatform")
AUTH_KEYS = ("Sign", "RequestTime")
TOKEN = "tok"
TOLERANCE_S = 60
PROXIES = parse_networks(["127.0.0.0/8", "192.168.0.0/16", "fd00::/8"])
ALLOWED = parse_networks(["10.0.0.0/8", "2001:db8::/32"])
PROPERTY = settings(max_examples=200, deadline=None, database=None)


@contextmanager
def webhook_app(**overrides: Any) -> Iterator[tuple[falcon.testing.TestClient, FakePolicyClient]]:
    """A fresh app with a succeeding fake and its own spool, closed afterwards."""
    fake = FakePolicyClient()
    with tempfile.TemporaryDirectory() as directory:
        config = AdapterSettings(
            **{
                "sdk_app_ids": frozenset({APP}),
                "sdk_app_ids_configured": True,
                "data_dir": Path(directory),
                **overrides,
            }
        )
        spool = Spool(config.spool_path, config.spool_max_events)
        try:
            yield falcon.testing.TestClient(create_app(config, fake, spool, lambda: None)), fake
        finally:
            spool.close()


def post(
    client: falcon.testing.TestClient,
    query: Sequence[tuple[str, str]] | str,
    body: bytes,
    **kwargs: Any,
) -> falcon.testing.Result:
    """POST `body` to / with `query` (pairs, URL-encoded here, or a raw query string)."""
    query_string = query if isinstance(query, str) else urlencode(list(query))
    return client.simulate_post("/", query_string=query_string, body=body, **kwargs)


def assert_chat_answer(result: falcon.testing.Result) -> dict[str, object]:
    """No 5xx, Chat's three-field JSON, and a 4xx is FAIL with ErrorCode equal to the status."""
    event(f"status {result.status_code}")
    assert result.status_code < 500, result.text
    assert result.headers["content-type"] == "application/json"
    document = answer(result)
    assert isinstance(document["ErrorInfo"], str)
    if result.status_code >= 400:
        assert (document["ActionStatus"], document["ErrorCode"]) == ("FAIL", result.status_code)
    else:
        assert (result.status_code, document["ActionStatus"]) == (200, "OK")
    return document


# --- JSON encoding with numbers too long for json.dumps (Python's 4300-digit int limit) ---


@dataclass(frozen=True)
class HugeNumber:
    """A JSON number of `digits` nines, written into the body as is."""

    digits: int


_HUGE = re.compile(r'"\\u0000HUGE(\d+)\\u0000"')


def encode(document: object, ensure_ascii: bool = True) -> bytes:
    """JSON bytes of `document` with HugeNumbers written out.

    Lone surrogates become \\u escapes with `ensure_ascii`, else bytes that are not UTF-8.
    """
    text = json.dumps(
        document,
        ensure_ascii=ensure_ascii,
        default=lambda value: f"\x00HUGE{value.digits}\x00",
    )
    text = _HUGE.sub(lambda match: "9" * int(match[1]), text)
    return text.encode("utf-8", "surrogatepass")


# --- strategies ---

commands = st.one_of(st.sampled_from(COMMANDS), st.text())
# Text including lone surrogates, which JSON can carry as \ud800 escapes.
any_text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=20)
digit_strings = st.one_of(
    st.integers(min_value=0).map(str),
    st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
    st.text("0123456789", min_size=1),
)
query_values = st.one_of(
    st.text(),
    digit_strings,
    st.integers().map(str),
    st.text("0123456789+-. \u0661\u0662\uff11e", min_size=1),
)
query_pairs = st.lists(
    st.one_of(
        st.tuples(st.just("SdkAppid"), st.just(str(APP)) | query_values),
        st.tuples(st.just("CallbackCommand"), commands),
        st.tuples(st.sampled_from(QUERY_KEYS + AUTH_KEYS), query_values),
        st.tuples(st.text(), st.text()),
    ),
    max_size=10,
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=300, max_value=6000).map(HugeNumber),
    st.floats(),
    any_text,
    digit_strings,
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["Member_Account", "GroupId"]) | any_text, children, max_size=3
        )
    ),
    max_leaves=8,
)
members = st.lists(
    st.dictionaries(st.sampled_from(["Member_Account", "Role"]), json_values) | json_scalars,
    max_size=4,
)


def command_bodies(command: str) -> st.SearchStrategy[dict[str, object]]:
    """JSON objects of `command`'s documented fields (and maybe others), values of any type."""
    fields = FIELDS[command]
    keys = st.sampled_from((*fields, "CallbackCommand")) | any_text
    values = json_values | members | st.sampled_from(COMMANDS)
    return st.dictionaries(keys, values, max_size=len(fields) + 2)


# (command, body): a known command and a body shaped like its documented fields.
command_cases = st.sampled_from(COMMANDS).flatmap(
    lambda command: st.tuples(st.just(command), command_bodies(command))
)


def deep_nesting(depth: int) -> bytes:
    """`depth` nested arrays; past about 1000, deeper than the JSON decoder's recursion."""
    return b"[" * depth + b"]" * depth


arbitrary_bytes = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(str.encode),
    st.integers(min_value=1, max_value=20_000).map(deep_nesting),
    st.integers(min_value=1, max_value=6000).map(lambda n: b"9" * n),
)


# --- 1. no input yields a 5xx ---


@PROPERTY
@given(pairs=query_pairs, tokens=st.sampled_from([(), (TOKEN,)]))
@example(pairs=[("SdkAppid", "9" * 5000), ("CallbackCommand", GROUP_FULL)], tokens=())
@example(pairs=[("Sign", "a"), ("RequestTime", "9" * 400)], tokens=(TOKEN,))
@example(pairs=[("Sign", "a"), ("RequestTime", "9" * 5000)], tokens=(TOKEN,))
def test_no_query_string_gets_a_5xx(pairs: list[tuple[str, str]], tokens: tuple[str, ...]) -> None:
    """Any query parameters, auth on or off, get a 2xx/4xx in Chat's JSON shape."""
    with webhook_app(callback_tokens=tokens) as (client, _):
        assert_chat_answer(post(client, pairs, b'{"GroupId": "g"}'))


# Printable raw query strings, often after valid parameters (without the '?' falcon refuses).
raw_query_strings = st.tuples(
    st.sampled_from(["", f"SdkAppid={APP}&CallbackCommand={GROUP_FULL}&"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E)),
).map(lambda parts: "".join(parts).lstrip("?"))


@PROPERTY
@given(query_string=raw_query_strings)
@example(query_string=f"SdkAppid={APP}&CallbackCommand={GROUP_FULL}&SdkAppid=%ff%fe")
def test_no_raw_query_string_gets_a_5xx(query_string: str) -> None:
    """Any printable raw query string (bad escapes, stray & and =) gets Chat's JSON, no 5xx."""
    with webhook_app() as (client, _):
        assert_chat_answer(post(client, query_string, b'{"GroupId": "g"}'))


@PROPERTY
@given(command=commands, body=arbitrary_bytes)
@example(command=BEFORE, body=b"9" * 5000)
@example(command=BEFORE, body=deep_nesting(10_000))
def test_no_body_bytes_get_a_5xx(command: str, body: bytes) -> None:
    """Any body bytes under any command get a 2xx/4xx in Chat's JSON shape."""
    with webhook_app() as (client, _):
        assert_chat_answer(
            post(client, [("SdkAppid", str(APP)), ("CallbackCommand", command)], body)
        )


@PROPERTY
@given(command=commands, document=json_values, ensure_ascii=st.booleans())
@example(command=BEFORE, document=HugeNumber(5000), ensure_ascii=True)
def test_no_json_value_gets_a_5xx(command: str, document: object, ensure_ascii: bool) -> None:
    """Any JSON value as the body, under any command, gets a 2xx/4xx in Chat's JSON shape."""
    with webhook_app() as (client, _):
        query = [("SdkAppid", str(APP)), ("CallbackCommand", command)]
        assert_chat_answer(post(client, query, encode(document, ensure_ascii)))


@PROPERTY
@given(case=command_cases)
@example(case=(BEFORE, {"Name": "\ud800"}))
@example(case=(BEFORE, {"MemberList": [{"Member_Account": "\udc00"}]}))
@example(case=(BEFORE, {"CreateGroupNum": "9" * 5000}))
@example(case=(GROUP_FULL, {"GroupId": "\ud800"}))
@example(case=(GROUP_FULL, {"GroupId": "g", "TopicId": "\udfff"}))
@example(case=(GROUP_FULL, {"GroupId": "g", "EventTime": "9" * 5000}))
def test_no_command_shaped_body_gets_a_5xx(case: tuple[str, dict[str, object]]) -> None:
    """A body of a known command's fields with values of any JSON type gets no 5xx."""
    command, document = case
    with webhook_app() as (client, fake):
        query = [("SdkAppid", str(APP)), ("CallbackCommand", command)]
        result = post(client, query, encode(document))
        assert_chat_answer(result)
        if result.status_code != 200:
            assert fake.calls == []


# --- 2. authentication ---


def valid_bodies(command: str) -> st.SearchStrategy[dict[str, object]]:
    """Well-formed bodies of `command`: every documented field optional but GroupId."""
    # Short text without NUL is within every field's limit (chat_policy_shared/field_limits.py).
    keepable = st.characters(codec="utf-8", exclude_characters="\x00")
    texts = st.text(keepable, max_size=20)
    member_list = st.lists(
        st.fixed_dictionaries({}, optional={"Member_Account": texts, "Role": texts}), max_size=4
    )
    # Up to 2023-11-14: never ahead of the clock (CHAT_POLICY_MAX_EVENT_AHEAD_S).
    event_times = st.integers(min_value=0, max_value=1_700_000_000_000)
    optional: dict[str, st.SearchStrategy[object]] = {
        "EventTime": event_times | event_times.map(str),
        "CallbackCommand": st.just(command),
    }
    for field in FIELDS[command]:
        if field not in optional:
            optional[field] = texts
    if command in MEMBER_LISTS:
        optional[MEMBER_LISTS[command]] = member_list
    if command == BEFORE:
        counts = st.integers(min_value=0, max_value=2**63 - 1)
        optional["CreateGroupNum"] = counts | counts.map(str)
    required = {} if command == BEFORE else {"GroupId": st.text(keepable, min_size=1, max_size=20)}
    optional.pop("GroupId", None)
    return st.fixed_dictionaries(required, optional=optional)


valid_cases = st.sampled_from(COMMANDS).flatmap(
    lambda command: st.tuples(st.just(command), valid_bodies(command))
)


def is_fresh(request_time: str, now_s: float, margin_s: int) -> bool:
    """True when `request_time` is ASCII Unix seconds within the tolerance less `margin_s`."""
    if not (request_time.isascii() and request_time.isdigit()) or len(request_time) > 18:
        return False
    return abs(int(request_time) - now_s) <= TOLERANCE_S - margin_s


fresh_offsets = st.integers(min_value=-(TOLERANCE_S - 10), max_value=TOLERANCE_S - 10)
stale_offsets = st.integers(min_value=TOLERANCE_S + 10, max_value=10**12).flatmap(
    lambda offset: st.sampled_from([offset, -offset])
)


@st.composite
def unauthenticated(draw: st.DrawFn) -> dict[str, str]:
    """Sign and RequestTime (either may be missing) that do not authenticate with TOKEN now."""
    now_s = int(time.time())
    request_time = draw(
        st.one_of(
            (fresh_offsets | stale_offsets).map(lambda offset: str(now_s + offset)),
            query_values,
            st.just(""),
        )
    )
    kind = draw(
        st.sampled_from(["text", "hex", "wrong token", "other time", "one char off", "stale"])
    )
    if kind == "stale":
        # The right Sign for a RequestTime too far from now.
        request_time = str(now_s + draw(stale_offsets))
        sign = compute_sign(TOKEN, request_time)
    elif kind == "text":
        sign = draw(st.text())
    elif kind == "hex":
        sign = draw(st.text("0123456789abcdefABCDEF", min_size=62, max_size=66))
    elif kind == "wrong token":
        sign = compute_sign(draw(st.text().filter(lambda token: token != TOKEN)), request_time)
    elif kind == "other time":
        sign = compute_sign(TOKEN, str(now_s + draw(fresh_offsets)))
    else:
        right = compute_sign(TOKEN, request_time)
        index = draw(st.integers(min_value=0, max_value=63))
        # Draw a shift, not a digit filtered by `right`: what is drawn must not depend on the
        # clock, or hypothesis sees a different strategy when it replays an example.
        shift = draw(st.integers(min_value=1, max_value=15))
        replacement = f"{(int(right[index], 16) + shift) % 16:x}"
        sign = right[:index] + replacement + right[index + 1 :]
    authentic = sign.lower() == compute_sign(TOKEN, request_time) and is_fresh(
        request_time, now_s, margin_s=-5
    )
    if authentic:
        # "other time" may draw the very second of RequestTime; that one is not a counterexample.
        sign = "0" * 64
    params = {"Sign": sign, "RequestTime": request_time}
    missing = draw(st.sampled_from([(), ("Sign",), ("RequestTime",), AUTH_KEYS]))
    return {key: value for key, value in params.items() if key not in missing}


@PROPERTY
@given(
    credentials=unauthenticated(),
    case=command_cases | valid_cases | st.tuples(commands, st.just({"GroupId": "g"})),
    sdk_app_id=st.just(str(APP)) | query_values,
    extra=st.lists(st.tuples(st.sampled_from(QUERY_KEYS) | st.text(), st.text()), max_size=3),
)
@example(
    credentials={"Sign": "a", "RequestTime": "9" * 400},
    case=(GROUP_FULL, {"GroupId": "g"}),
    sdk_app_id=str(APP),
    extra=[],
)
def test_no_unauthenticated_webhook_reaches_the_service(
    credentials: dict[str, str],
    case: tuple[str, dict[str, object]],
    sdk_app_id: str,
    extra: list[tuple[str, str]],
) -> None:
    """Without the right Sign for a fresh RequestTime the answer is 401 and nothing is called.

    With no source allowlist, the signature is the first check (before SdkAppid, command and
    body), so no other refusal can come first: the status is exactly 401.
    """
    command, body = case
    extra = [(key, value) for key, value in extra if key not in (*AUTH_KEYS, "SdkAppid")]
    query = [*extra, ("SdkAppid", sdk_app_id), ("CallbackCommand", command)]
    query += list(credentials.items())
    with webhook_app(callback_tokens=(TOKEN,)) as (client, fake):
        result = post(client, query, encode(body))
        reply = assert_chat_answer(result)
        assert (result.status_code, reply["ErrorCode"]) == (401, 401)
        assert fake.calls == []


@PROPERTY
@given(
    case=valid_cases,
    offset_s=fresh_offsets,
    tokens=st.sampled_from([(TOKEN,), (TOKEN, "old"), ("old", TOKEN)]),
    upper=st.booleans(),
)
def test_signed_webhook_reaches_the_service_once(
    case: tuple[str, dict[str, object]], offset_s: int, tokens: tuple[str, ...], upper: bool
) -> None:
    """A valid body signed for a fresh RequestTime is answered OK and reaches the service once.

    Group.CallbackAfterNewMemberJoin is the exception: it is acknowledged and never recorded.
    """
    command, body = case
    with webhook_app(callback_tokens=tokens) as (client, fake):
        request_time = str(int(time.time()) + offset_s)
        sign = compute_sign(TOKEN, request_time)
        query = [
            ("SdkAppid", str(APP)),
            ("CallbackCommand", command),
            ("RequestTime", request_time),
        ]
        query.append(("Sign", sign.upper() if upper else sign))
        result = post(client, query, encode(body, ensure_ascii=False))
        assert (result.status_code, result.content) == (200, OK)
        assert len(fake.calls) == (0 if command == NEW_MEMBER_JOIN else 1)


# --- 3. source addresses ---


def reference_parse(text: str) -> Address | None:
    """An address as the reference reads it: stripped, IPv4-mapped IPv6 as IPv4."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def reference_client(peer: str, forwarded_for: str) -> Address | None:
    """The client: walk from the peer leftwards through X-Forwarded-For while hops are proxies."""
    chain = [peer, *reversed(forwarded_for.split(","))] if forwarded_for else [peer]
    client = None
    for hop in chain:
        client = reference_parse(hop)
        if client is None or not any(client in network for network in PROXIES):
            return client
    return client


def rendered(address: Address, mapped: bool, padding: str) -> str:
    """`address` as text, maybe as IPv4-mapped IPv6, with whitespace around it."""
    text = f"::ffff:{address}" if mapped and address.version == 4 else str(address)
    return padding + text + padding


addresses = st.one_of(
    *(st.ip_addresses(network=str(network)) for network in (*PROXIES, *ALLOWED)),
    st.ip_addresses(),
)
hops = st.one_of(
    st.builds(rendered, addresses, st.booleans(), st.sampled_from(["", " ", "  "])),
    st.sampled_from(["", "unknown", "not-an-address", "10.0.0.1:8080", "[::1]", "_hidden"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=",")),
)
forwarded_for_headers = st.lists(hops, max_size=6).map(",".join) | st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E)
)
GROUP_FULL_QUERY = [("SdkAppid", str(APP)), ("CallbackCommand", GROUP_FULL)]


@PROPERTY
@given(
    forwarded_for=forwarded_for_headers,
    proxies=st.sampled_from([(), PROXIES[1:], ALLOWED]),
)
def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    forwarded_for: str, proxies: tuple[Network, ...]
) -> None:
    """From falcon.testing's default peer 127.0.0.1, not a trusted proxy, no header gets in."""
    with webhook_app(allowed_sources=ALLOWED, trusted_proxies=proxies) as (client, fake):
        headers = {"X-Forwarded-For": forwarded_for}
        result = post(client, GROUP_FULL_QUERY, b'{"GroupId": "g"}', headers=headers)
        document = assert_chat_answer(result)
        assert result.status_code == 403
        assert "source 127.0.0.1" in str(document["ErrorInfo"])
        assert fake.calls == []


@PROPERTY
@given(
    peer=st.builds(
        rendered,
        st.one_of(*(st.ip_addresses(network=str(network)) for network in PROXIES)),
        st.booleans(),
        st.just(""),
    ),
    forwarded_for=forwarded_for_headers,
)
def test_client_is_the_rightmost_address_that_is_not_a_trusted_proxy(
    peer: str, forwarded_for: str
) -> None:
    """Behind trusted proxies the client is the reference's; only an allowed one gets through."""
    # HTTP delivers a field value without the whitespace around it (RFC 9110, 5.5).
    delivered = forwarded_for.strip(" ")
    expected = reference_client(peer, delivered)
    assert client_address(peer, delivered, PROXIES) == expected
    with webhook_app(allowed_sources=ALLOWED, trusted_proxies=PROXIES) as (client, fake):
        headers = {"X-Forwarded-For": forwarded_for}
        result = post(
            client, GROUP_FULL_QUERY, b'{"GroupId": "g"}', headers=headers, remote_addr=peer
        )
        document = assert_chat_answer(result)
        if expected is not None and any(expected in network for network in ALLOWED):
            assert (result.status_code, len(fake.calls)) == (200, 1)
        else:
            assert result.status_code == 403
            assert f"source {expected or 'unknown'}" in str(document["ErrorInfo"])
            assert fake.calls == []


# --- 4. event times ---

event_times = st.integers(min_value=0, max_value=MAX_EVENT_TIME_MS - 1)


@PROPERTY
@given(event_time=event_times, quoted=st.booleans())
@example(event_time=0, quoted=False)
@example(event_time=0, quoted=True)
@example(event_time=MAX_EVENT_TIME_MS - 1, quoted=False)
@example(event_time=MAX_EVENT_TIME_MS - 1, quoted=True)
def test_event_time_in_range_reaches_the_service_exactly(event_time: int, quoted: bool) -> None:
    """An EventTime in [0, year 10000), as a number or quoted, is sent as that many ms (with
    CHAT_POLICY_MAX_EVENT_AHEAD_S reaching past year 10000)."""
    with webhook_app(max_event_ahead_s=MAX_EVENT_TIME_MS // 1000) as (client, fake):
        value: object = str(event_time) if quoted else event_time
        result = post(client, GROUP_FULL_QUERY, encode({"GroupId": "g", "EventTime": value}))
        assert (result.status_code, result.content) == (200, OK)
        [(request, _)] = fake.calls
        assert request.event_time.ToMilliseconds() == event_time


def _not_a_valid_quoted_time(text: str) -> bool:
    """False for the ASCII digit strings that read as an EventTime in range."""
    if not (text.isascii() and text.isdigit()):
        return True
    return len(text.lstrip("0")) > 15 or int(text) >= MAX_EVENT_TIME_MS


out_of_range = st.integers(max_value=-1) | st.integers(min_value=MAX_EVENT_TIME_MS)
bad_event_times = st.one_of(
    out_of_range,
    out_of_range.map(str),
    st.integers(min_value=15, max_value=6000).map(lambda n: "9" * n),
    # Up to Python's 4300-digit limit: longer JSON numbers fail the body, not the field.
    st.integers(min_value=16, max_value=4300).map(HugeNumber),
    st.floats(),
    st.booleans(),
    any_text.filter(_not_a_valid_quoted_time),
    st.tuples(
        st.text("0123456789"), st.sampled_from(" +-.e\u0661\uff11"), st.text("0123456789")
    ).map("".join),
    st.lists(event_times, min_size=0, max_size=2),
    st.dictionaries(st.text(max_size=3), event_times, max_size=2),
)


@PROPERTY
@given(event_time=bad_event_times)
@example(event_time=MAX_EVENT_TIME_MS)
@example(event_time=-1)
@example(event_time=1.0)
@example(event_time=True)
@example(event_time="9" * 5000)
def test_event_time_out_of_range_or_of_another_type_is_400_naming_it(event_time: object) -> None:
    """Any other EventTime (null aside, which reads as absent) is 400 naming it, unsent."""
    with webhook_app() as (client, fake):
        result = post(client, GROUP_FULL_QUERY, encode({"GroupId": "g", "EventTime": event_time}))
        document = assert_chat_answer(result)
        assert result.status_code == 400
        assert "EventTime" in str(document["ErrorInfo"])
        assert fake.calls == []
