"""The checks of each rule kind, through policies loaded from TOML (no grpc, no store)."""

from __future__ import annotations

import ipaddress
from asyncio import run
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from policy_service.engine.address_ranges import AddressRanges, parse_address
from policy_service.engine.banned_words import BannedWords, fold
from policy_service.engine.policy import (
    CreationRequest,
    Effect,
    Outcome,
    Policy,
    RuleResult,
)
from policy_service.engine.policy_file import parse_policy
from policy_service.engine.rate_limit import Acquisition, InMemoryRateCounter
from policy_service.errors import StoreUnavailable

APP = 1400000000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
REFUSAL = Outcome(Effect.DENY, 10150, "no")


def one_rule(kind: str, body: str, base_dir: Path | None = None, shadow: bool = False) -> Policy:
    """A policy of one rule 'r' of the kind, refusing with 10150 "no", then default allow."""
    source = (
        f'version = 1\n[[rules]]\nid = "r"\nkind = "{kind}"\nshadow = {str(shadow).lower()}\n'
        f'error_code = 10150\nerror_info = "no"\n{body}\n'
    )
    return parse_policy(source.encode(), "p.toml", base_dir)


def req(**fields: Any) -> CreationRequest:
    """A creation request of the test application."""
    return CreationRequest(APP, **fields)


def refuses(policy: Policy, request: CreationRequest, **options: Any) -> bool:
    """True when rule 'r' refuses the request with its outcome, False when the default allows."""
    decision = run(policy.decide(request, **options))
    if decision.rule_id == "default":
        assert decision.outcome == Outcome(Effect.ALLOW)
        assert decision.errors == ()
        return False
    assert (decision.rule_id, decision.outcome) == ("r", REFUSAL)
    return True


class UnavailableCounter:
    """A rate counter whose store is down: every call raises StoreUnavailable."""

    async def acquire(
        self, bucket: str, *, window_ms: int, limit: int, now_ms: int, force: bool = False
    ) -> Acquisition:
        """Fails."""
        raise StoreUnavailable("connection refused")

    async def count_slots(self, bucket: str, *, window_ms: int, now_ms: int) -> int:
        """Fails."""
        raise StoreUnavailable("connection refused")

    async def release(self, slot: int) -> None:
        """Fails."""
        raise StoreUnavailable("connection refused")

    async def prune_slots(self, before_ms: int) -> int:
        """Fails."""
        raise StoreUnavailable("connection refused")


class ReleaseFailingCounter(InMemoryRateCounter):
    """An in-memory counter whose store goes down before a slot can be given back."""

    async def release(self, slot: int) -> None:
        """Fails."""
        raise StoreUnavailable("connection lost")


# quota


QUOTA = """
max_created = 3
max_created_by_type = { Private = 1, Meeting = 0 }
"""


@pytest.mark.parametrize(
    ("group_type", "created", "refused"),
    [
        ("Public", 2, False),
        ("Public", 3, True),
        ("Public", 40, True),
        ("", 3, True),
        ("Work", 0, False),
        ("Work", 1, True),
        ("Private", 1, True),
        ("Private", 0, False),
        ("Meeting", 0, True),
        ("ChatRoom", 0, True),
    ],
)
def test_quota_refuses_at_the_limit(group_type: str, created: int, refused: bool) -> None:
    """CreateGroupNum >= the type's quota refuses; max_created_by_type (old names too) wins."""
    request = req(group_type=group_type, create_group_num=created)
    assert refuses(one_rule("quota", QUOTA), request) is refused


@pytest.mark.parametrize(("when_unknown", "refused"), [("allow", False), ("deny", True)])
def test_quota_when_create_group_num_is_unknown(when_unknown: str, refused: bool) -> None:
    """Without CreateGroupNum the quota allows or refuses as when_unknown says."""
    policy = one_rule("quota", f'max_created = 3\nwhen_unknown = "{when_unknown}"')
    assert refuses(policy, req(group_type="Public")) is refused
    if refused:
        assert run(policy.decide(req(group_type="Public"))).reason == "CreateGroupNum omitted"


def test_quota_without_a_limit_for_the_type_allows() -> None:
    """A type without max_created_by_type entry and no max_created has no quota."""
    policy = one_rule("quota", 'max_created_by_type = { Work = 1 }\nwhen_unknown = "deny"')
    assert not refuses(policy, req(group_type="Public", create_group_num=1000))
    assert not refuses(policy, req(group_type="Public"))
    assert refuses(policy, req(group_type="Work", create_group_num=1))


def test_quota_reason_names_count_and_quota() -> None:
    """The refusal reason says how many groups exist and the quota."""
    decision = run(one_rule("quota", QUOTA).decide(req(group_type="Private", create_group_num=1)))
    assert decision.reason == "already created 1 Work groups (quota 1)"


# name


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("ab", True),
        ("abc", False),
        ("abcde", False),
        ("abcdef", True),
        ("读书会", False),  # 3 characters, 9 UTF-8 bytes
        ("读书会好友们", True),
        ("e\u0301" * 5, False),  # 10 code points, 5 characters after NFC
        ("e\u0301" * 6, True),
        ("\u1100\u1161" * 3, False),  # decomposed Hangul: 3 syllables after NFC
        ("😀😀😀", False),  # astral characters count once each
        ("", True),
    ],
)
def test_name_length_counts_characters_after_nfc(name: str, refused: bool) -> None:
    """min_length and max_length count characters of the NFC name, not bytes or code points."""
    policy = one_rule("name", "min_length = 3\nmax_length = 5")
    assert refuses(policy, req(name=name)) is refused


@pytest.mark.parametrize(
    ("name", "refused"),
    [("book-club", False), ("book club", True), ("Book", True), ("book!", True), ("a", False)],
)
def test_name_pattern_must_match_the_whole_name(name: str, refused: bool) -> None:
    """The pattern is matched against the whole name (fullmatch), not searched in it."""
    assert refuses(one_rule("name", "pattern = '[a-z-]+'"), req(name=name)) is refused


def test_name_pattern_alternatives_are_tried_for_the_whole_name() -> None:
    """A pattern 'a|ab' accepts "ab": fullmatch, not a prefix match followed by a check."""
    assert not refuses(one_rule("name", "pattern = 'a|ab'"), req(name="ab"))


def wide(text: str) -> str:
    """The text in full-width forms (ASCII letters to U+FF21.., space to U+3000)."""
    return "".join(
        chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in text
    )


BANNED = f'banned_words = ["free money", "casino", "Straße", "{wide("POKER")}"]'


@pytest.mark.parametrize(
    ("name", "word"),
    [
        ("Win free money now", "free money"),
        ("FREE MONEY", "free money"),
        (wide("FREE MONEY"), "free money"),  # full-width letters and space
        ("casino night", "casino"),
        (wide("casino"), "casino"),
        ("CaSiNo", "casino"),
        ("STRASSE 5", "Straße"),  # ß folds to "ss"
        ("strasse", "Straße"),
        ("straße", "Straße"),
        ("poker club", wide("POKER")),  # a full-width banned word matches ASCII
    ],
)
def test_banned_words_match_after_nfkc_and_case_folding(name: str, word: str) -> None:
    """A name containing a banned word in any case, width or ß/ss spelling is refused."""
    decision = run(one_rule("name", BANNED).decide(req(name=name)))
    assert (decision.rule_id, decision.reason) == ("r", f"name contains banned word {word!r}")


@pytest.mark.parametrize("name", ["freemoney", "free  money", "casin o", "Strase", "Book club"])
def test_names_without_banned_words_pass(name: str) -> None:
    """Near misses of a word or phrase are not refused."""
    assert not refuses(one_rule("name", BANNED), req(name=name))


def test_banned_words_file_is_read_relative_to_the_policy_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """banned_words_file is found next to the policy; comments and blank lines are skipped."""
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "words.txt").write_text(
        "# words we never want\n\n  casino  \n# poker\nfree money\r\n\n", encoding="utf-8"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    policy = one_rule("name", 'banned_words_file = "lists/words.txt"', base_dir=tmp_path)
    assert refuses(policy, req(name="Casino royale"))
    assert refuses(policy, req(name="free money"))
    assert not refuses(policy, req(name="poker night"))
    assert not refuses(policy, req(name="# words we never want"))
    assert policy.sources == (tmp_path / "lists" / "words.txt",)


def test_banned_words_file_adds_to_the_inline_list(tmp_path: Path) -> None:
    """Inline banned_words and banned_words_file are both in force."""
    (tmp_path / "words.txt").write_text("casino\n", encoding="utf-8")
    policy = one_rule(
        "name", 'banned_words = ["lottery"]\nbanned_words_file = "words.txt"', base_dir=tmp_path
    )
    assert refuses(policy, req(name="lottery"))
    assert refuses(policy, req(name="casino"))


def test_name_checks_length_before_banned_words() -> None:
    """The reason is the first broken constraint: length, then pattern, then banned word."""
    policy = one_rule("name", "max_length = 3\npattern = '[a-z]+'\nbanned_words = ['x']")
    assert run(policy.decide(req(name="xxxx"))).reason == "name has 4 characters, more than 3"
    assert run(policy.decide(req(name="X"))).reason == "name does not match '[a-z]+'"
    assert run(policy.decide(req(name="x"))).reason == "name contains banned word 'x'"


# Besides a few ASCII letters, characters that case folding or NFKC changes, some into two:
# sharp s (both cases), long s, the fi and ff ligatures, the Kelvin sign, full-width s and S,
# a combining acute, precomposed e-acute, dotless i, capital I with dot, ideographic space.
WORD_CHARS = st.sampled_from(
    [
        *"abeAB sSKk",
        *"\u00df\u1e9e\u017f\ufb01\ufb00\u212a\uff53\uff33\u0301\u00e9\u0131\u0130\u3000",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    words=st.lists(st.text(WORD_CHARS, min_size=1, max_size=4), max_size=6),
    name=st.text(WORD_CHARS, max_size=12),
)
@example(words=["ß"], name="SS")
@example(words=["ﬁ"], name="FI")
def test_banned_word_matching_equals_naive_fold_and_substring(words: list[str], name: str) -> None:
    """BannedWords finds a word exactly when some folded word is a substring of the folded name."""
    folded_name = fold(name)
    folded_words = {fold(w).strip(): w for w in words if fold(w).strip()}
    found = BannedWords(words).first_in(fold(name))
    assert (found is not None) == any(f in folded_name for f in folded_words)
    if found is not None:
        assert found in words
        assert fold(found).strip() in folded_name


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20), st.text(max_size=20))
def test_banned_words_never_match_beyond_naive_on_any_text(word: str, name: str) -> None:
    """On arbitrary Unicode, a single word matches exactly when its folded form is in the name."""
    folded = fold(word).strip()
    assert (BannedWords([word]).first_in(fold(name)) is not None) == bool(
        folded and folded in fold(name)
    )


# members


MEMBERS = """
min_members = 1
max_members = 3
reject_duplicates = true
blocked_accounts = ["spammer"]
"""


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ((), "0 initial members, fewer than 1"),
        (("a", "b", "c", "d"), "4 initial members, more than 3"),
        (("a", "b", "a"), "member 'a' is listed twice"),
        (("a", "spammer"), "member 'spammer' is blocked"),
        (("a", "b", "c"), None),
        (("Spammer",), None),  # accounts are compared exactly
    ],
)
def test_members_size_duplicates_and_blocked_accounts(
    members: tuple[str, ...], reason: str | None
) -> None:
    """The member list is refused for its size, a duplicate or a blocked account, in that order."""
    decision = run(one_rule("members", MEMBERS).decide(req(member_accounts=members)))
    assert (decision.rule_id, decision.reason) == (
        ("r", reason) if reason else ("default", "no rule decided")
    )


def test_duplicates_pass_unless_rejected() -> None:
    """Without reject_duplicates a repeated member is not a refusal."""
    policy = one_rule("members", "max_members = 5")
    assert not refuses(policy, req(member_accounts=("a", "a")))


def test_blocked_members_file(tmp_path: Path) -> None:
    """blocked_accounts_file lists accounts, one a line, that may not be initial members."""
    (tmp_path / "blocked.txt").write_text("# spam\nspammer-1\n\nspammer-2\n", encoding="utf-8")
    policy = one_rule("members", 'blocked_accounts_file = "blocked.txt"', base_dir=tmp_path)
    assert refuses(policy, req(member_accounts=("alice", "spammer-2")))
    assert not refuses(policy, req(member_accounts=("alice", "# spam")))


# owner


@pytest.mark.parametrize(
    ("operator", "owner", "refused"),
    [
        ("alice", "", False),
        ("alice", "alice", False),
        ("support-bot", "alice", False),
        ("bob", "alice", True),
        ("", "alice", True),
        ("Alice", "alice", True),
    ],
)
def test_owner_must_be_the_operator_unless_admin(operator: str, owner: str, refused: bool) -> None:
    """Creating a group owned by someone else is refused unless the operator is an admin."""
    policy = one_rule("owner", 'admins = ["support-bot"]')
    assert refuses(policy, req(operator_account=operator, owner_account=owner)) is refused


def test_owner_admins_file(tmp_path: Path) -> None:
    """admins_file names admins, one a line."""
    (tmp_path / "admins.txt").write_text("support-bot\n", encoding="utf-8")
    policy = one_rule("owner", 'admins_file = "admins.txt"', base_dir=tmp_path)
    assert not refuses(policy, req(operator_account="support-bot", owner_account="alice"))
    assert refuses(policy, req(operator_account="bob", owner_account="alice"))


# blocked


@pytest.mark.parametrize(
    ("check_owner", "operator", "owner", "refused"),
    [
        (False, "spammer", "", True),
        (False, "alice", "spammer", False),
        (True, "alice", "spammer", True),
        (True, "spammer", "alice", True),
        (True, "alice", "bob", False),
        (True, "alice", "", False),
    ],
)
def test_blocked_operator_and_owner(
    check_owner: bool, operator: str, owner: str, refused: bool
) -> None:
    """A blocked operator is refused; a blocked owner only with check_owner."""
    policy = one_rule(
        "blocked", f'accounts = ["spammer"]\ncheck_owner = {str(check_owner).lower()}'
    )
    assert refuses(policy, req(operator_account=operator, owner_account=owner)) is refused


def test_blocked_accounts_file(tmp_path: Path) -> None:
    """accounts_file is read relative to the policy file."""
    (tmp_path / "blocked.txt").write_text("spammer\n", encoding="utf-8")
    policy = one_rule("blocked", 'accounts_file = "blocked.txt"', base_dir=tmp_path)
    assert refuses(policy, req(operator_account="spammer"))
    assert not refuses(policy, req(operator_account="alice"))


# platform_types


PLATFORMS = """
[rules.allowed]
Web = ["Work", "ChatRoom"]
iOS = ["Work", "Public", "Meeting", "AVChatRoom", "Community"]
"""


@pytest.mark.parametrize(
    ("platform", "group_type", "refused"),
    [
        ("Web", "Public", True),
        ("web", "Public", True),
        ("WEB", "Work", False),
        ("Web", "Private", False),  # old name of a listed type
        ("Web", "Meeting", False),  # listed under its old name
        ("iOS", "Public", False),
        ("IOS", "Community", False),
        ("Android", "Public", False),  # not listed, no `other`: unrestricted
        ("", "Public", False),
    ],
)
def test_platform_types_without_other(platform: str, group_type: str, refused: bool) -> None:
    """A listed platform (any case) may create its types; unlisted ones are unrestricted."""
    policy = one_rule("platform_types", PLATFORMS)
    assert refuses(policy, req(opt_platform=platform, group_type=group_type)) is refused


@pytest.mark.parametrize(
    ("platform", "group_type", "refused"),
    [
        ("Android", "Public", True),
        ("Android", "Work", False),
        ("", "Public", True),
        ("", "Work", False),
        ("Web", "Public", True),
        ("iOS", "Public", False),
    ],
)
def test_platform_types_other_covers_unlisted_platforms(
    platform: str, group_type: str, refused: bool
) -> None:
    """`other` gives the types of every platform not listed, the empty platform included."""
    policy = one_rule("platform_types", 'other = ["Work"]\n' + PLATFORMS)
    assert refuses(policy, req(opt_platform=platform, group_type=group_type)) is refused


def test_platform_types_reason_names_platform_and_type() -> None:
    """The reason says which type may not come from which platform."""
    policy = one_rule("platform_types", 'other = ["Work"]')
    assert run(policy.decide(req(group_type="Public"))).reason == (
        "Public groups may not be created from unknown platform"
    )
    assert run(policy.decide(req(group_type="Public", opt_platform="Mac"))).reason == (
        "Public groups may not be created from Mac"
    )


# client_ip


@pytest.mark.parametrize(
    ("client_ip", "refused"),
    [
        ("10.1.2.3", False),
        ("10.9.0.1", True),  # in the allowed /8 but in the denied /16
        ("192.0.2.1", True),
        ("203.0.113.7", False),  # a bare address is a /32
        ("203.0.113.8", True),
        ("2001:db8::1", False),
        ("2001:db8:ffff::1", True),  # denied /48 inside the allowed /32
        ("2001:db9::1", True),
        ("::ffff:10.1.2.3", False),  # IPv4-mapped IPv6 is the IPv4 address
        ("::ffff:10.9.0.1", True),
        ("::ffff:192.0.2.1", True),
    ],
)
def test_client_ip_allow_and_deny_networks(client_ip: str, refused: bool) -> None:
    """The address must be in allow_cidrs and outside deny_cidrs, IPv4 and IPv6 alike."""
    policy = one_rule(
        "client_ip",
        'allow_cidrs = ["10.0.0.0/8", "203.0.113.7", "2001:db8::/32"]\n'
        'deny_cidrs = ["10.9.0.0/16", "2001:db8:ffff::/48"]',
    )
    assert refuses(policy, req(client_ip=client_ip)) is refused


@pytest.mark.parametrize("client_ip", ["", "not-an-ip", "300.1.1.1", "10.0.0.0/8", "::g"])
@pytest.mark.parametrize(("when_missing", "refused"), [("allow", False), ("deny", True)])
def test_client_ip_missing_or_invalid(client_ip: str, when_missing: str, refused: bool) -> None:
    """A missing or unparsable ClientIP passes or fails as when_missing says."""
    policy = one_rule(
        "client_ip", f'deny_cidrs = ["192.0.2.0/24"]\nwhen_missing = "{when_missing}"'
    )
    assert refuses(policy, req(client_ip=client_ip)) is refused


@pytest.mark.parametrize("client_ip", ["192.0.2.5", "::ffff:192.0.2.5"])
def test_client_ip_networks_written_as_ipv4_mapped_ipv6_match(client_ip: str) -> None:
    """A denied network written in IPv4-mapped form (::ffff:a.b.c.d/120) denies its addresses."""
    policy = one_rule("client_ip", 'deny_cidrs = ["::ffff:192.0.2.0/120"]')
    assert refuses(policy, req(client_ip=client_ip))


def networks(version: int) -> st.SearchStrategy[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Networks near the start of a small address block, so that they overlap often."""
    base = int(ipaddress.ip_address("10.0.0.0" if version == 4 else "2001:db8::"))
    bits = 32 if version == 4 else 128
    return st.builds(
        lambda offset, prefix: ipaddress.ip_network((base + offset, prefix), strict=False),
        st.integers(0, 1023),
        st.integers(bits - 10, bits),
    )


def addresses(version: int) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Addresses in and around the block networks() draws from."""
    base = int(ipaddress.ip_address("10.0.0.0" if version == 4 else "2001:db8::"))
    return st.integers(-4, 2048).map(lambda offset: ipaddress.ip_address(base + offset))


@settings(max_examples=300, deadline=None)
@given(
    v4=st.lists(networks(4), max_size=8),
    v6=st.lists(networks(6), max_size=8),
    address=st.one_of(addresses(4), addresses(6)),
)
def test_address_ranges_membership_equals_any_network(
    v4: list[ipaddress.IPv4Network],
    v6: list[ipaddress.IPv6Network],
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    """An address is in AddressRanges exactly when some of its networks contains it."""
    nets = [*v4, *v6]
    ranges = AddressRanges(str(n) for n in nets)
    parsed = parse_address(str(address))
    assert parsed is not None
    expected = any(address in n for n in nets if n.version == address.version)
    if address.version == 6 and address.ipv4_mapped is not None:  # compared as IPv4
        expected = any(address.ipv4_mapped in n for n in nets if n.version == 4) or any(
            address in n and n.subnet_of(ipaddress.IPv6Network("::ffff:0:0/96"))
            for n in nets
            if n.version == 6
        )
    assert (parsed in ranges) == expected


def test_address_ranges_refuse_host_bits() -> None:
    """A network with host bits set is a ValueError, not silently widened."""
    with pytest.raises(ValueError, match="host bits"):
        AddressRanges(["10.0.0.1/8"])


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1 ", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("", None),
        ("192.0.2", None),
    ],
)
def test_parse_address(text: str, parsed: str | None) -> None:
    """Addresses are parsed with IPv4-mapped IPv6 as IPv4; anything else is None."""
    address = parse_address(text)
    expected = None
    if parsed is not None:
        ip = ipaddress.ip_address(parsed)
        expected = (ip.version, int(ip))
    assert address == expected


# rate_limit


RATE = 'limit = 2\nwindow = "1m"'


def test_rate_limit_refuses_once_the_window_is_full() -> None:
    """With limit 2 the third creation in the window is refused, with a reason."""
    policy, counter = one_rule("rate_limit", RATE), InMemoryRateCounter()
    alice = req(operator_account="alice")
    assert [refuses(policy, alice, counter=counter, now_ms=T0 + i) for i in range(3)] == [
        False,
        False,
        True,
    ]
    decision = run(policy.decide(alice, counter=counter, now_ms=T0 + 3))
    assert decision.reason == "operator 'alice' reached 2 creations in 60s"


def test_rate_limit_window_slides_with_now_ms() -> None:
    """A creation stops counting one window after it, not at a fixed window boundary."""
    policy, counter = one_rule("rate_limit", RATE), InMemoryRateCounter()
    alice = req(operator_account="alice")
    assert not refuses(policy, alice, counter=counter, now_ms=T0)
    assert not refuses(policy, alice, counter=counter, now_ms=T0 + 30_000)
    assert refuses(policy, alice, counter=counter, now_ms=T0 + 59_999)
    assert not refuses(policy, alice, counter=counter, now_ms=T0 + 60_000)
    assert refuses(policy, alice, counter=counter, now_ms=T0 + 89_999)
    assert not refuses(policy, alice, counter=counter, now_ms=T0 + 90_000)


def test_rate_limit_counts_per_operator_and_application() -> None:
    """Each operator of each SdkAppid has a bucket of its own."""
    policy, counter = one_rule("rate_limit", 'limit = 1\nwindow = "1h"'), InMemoryRateCounter()
    assert not refuses(policy, req(operator_account="alice"), counter=counter, now_ms=T0)
    assert refuses(policy, req(operator_account="alice"), counter=counter, now_ms=T0)
    assert not refuses(policy, req(operator_account="bob"), counter=counter, now_ms=T0)
    other_app = CreationRequest(APP + 1, operator_account="alice")
    assert not refuses(policy, other_app, counter=counter, now_ms=T0)


def test_rate_limit_per_owner_falls_back_to_the_operator() -> None:
    """per = "owner" counts the owner's groups whoever creates them, else the operator's."""
    policy = one_rule("rate_limit", 'limit = 1\nwindow = "1h"\nper = "owner"')
    counter = InMemoryRateCounter()
    for_carol = req(operator_account="alice", owner_account="carol")
    assert not refuses(policy, for_carol, counter=counter, now_ms=T0)
    by_bob = req(operator_account="bob", owner_account="carol")
    assert refuses(policy, by_bob, counter=counter, now_ms=T0)
    assert run(policy.decide(by_bob, counter=counter, now_ms=T0)).reason.startswith("owner 'carol'")
    assert not refuses(policy, req(operator_account="alice"), counter=counter, now_ms=T0)
    assert refuses(policy, req(operator_account="alice"), counter=counter, now_ms=T0)


def test_rate_limit_per_operator_ignores_the_owner() -> None:
    """per = "operator" counts one operator's creations for several owners together."""
    policy, counter = one_rule("rate_limit", 'limit = 1\nwindow = "1h"'), InMemoryRateCounter()
    assert not refuses(policy, req(operator_account="a", owner_account="x"), counter=counter)
    assert refuses(policy, req(operator_account="a", owner_account="y"), counter=counter)


def test_rate_limit_without_operator_is_not_counted() -> None:
    """A request naming neither operator nor owner has nobody to count and passes."""
    policy, counter = one_rule("rate_limit", 'limit = 1\nwindow = "1h"'), InMemoryRateCounter()
    assert [refuses(policy, req(), counter=counter, now_ms=T0) for _ in range(3)] == [False] * 3


def test_dry_runs_take_no_slot_but_see_the_slots_taken() -> None:
    """With limit 1, dry runs allow again and again and the live request after them is still
    allowed; once it took the slot, a dry run is refused as the next live request is."""
    policy, counter = one_rule("rate_limit", 'limit = 1\nwindow = "1h"'), InMemoryRateCounter()
    alice = req(operator_account="alice")
    for _ in range(3):
        assert not refuses(policy, alice, counter=counter, now_ms=T0, dry_run=True)
    assert not refuses(policy, alice, counter=counter, now_ms=T0)
    dry = run(policy.decide(alice, counter=counter, now_ms=T0 + 1, dry_run=True))
    assert (dry.rule_id, dry.outcome) == ("r", REFUSAL)
    assert dry.reason == "operator 'alice' reached 1 creations in 3600s"
    assert refuses(policy, alice, counter=counter, now_ms=T0 + 2)


def test_a_dry_run_is_explained_without_being_asked() -> None:
    """A dry run lists every evaluated rule, as explain does."""
    policy, counter = one_rule("rate_limit", RATE), InMemoryRateCounter()
    decision = run(policy.decide(req(operator_account="a"), counter=counter, dry_run=True))
    assert [(e.rule_id, e.result) for e in decision.evaluations] == [("r", RuleResult.PASSED)]


def test_a_shadow_rate_limit_in_a_dry_run_reports_and_takes_no_slot() -> None:
    """A shadow limit, which takes a slot even over its limit when live, takes none in a dry
    run, and still reports when it would have refused."""
    policy = one_rule("rate_limit", 'limit = 1\nwindow = "1h"', shadow=True)
    counter = InMemoryRateCounter()
    alice = req(operator_account="alice")
    dry = run(policy.decide(alice, counter=counter, now_ms=T0, dry_run=True))
    assert dry.shadow_hits == ()
    live = run(policy.decide(alice, counter=counter, now_ms=T0))
    assert live.shadow_hits == ()
    dry = run(policy.decide(alice, counter=counter, now_ms=T0, dry_run=True))
    assert [h.rule_id for h in dry.shadow_hits] == ["r"]
    assert run(counter.count_slots("r:1400000000:alice", window_ms=3_600_000, now_ms=T0)) == 1


LIMIT_THEN_NAME = """version = 1
[[rules]]
id = "rate"
kind = "rate_limit"
limit = 1
window = "1h"

[[rules]]
id = "names"
kind = "name"
banned_words = ["casino"]
"""


def test_refusal_by_a_later_rule_gives_the_slot_back() -> None:
    """A creation refused after the rate limit counted it does not use up the limit."""
    policy, counter = parse_policy(LIMIT_THEN_NAME.encode()), InMemoryRateCounter()
    refused = run(
        policy.decide(req(operator_account="a", name="casino"), counter=counter, now_ms=T0)
    )
    assert refused.rule_id == "names"
    first = run(policy.decide(req(operator_account="a", name="ok"), counter=counter, now_ms=T0))
    second = run(policy.decide(req(operator_account="a", name="ok"), counter=counter, now_ms=T0))
    assert (first.rule_id, first.outcome.effect) == ("default", Effect.ALLOW)
    assert (second.rule_id, second.outcome.effect) == ("rate", Effect.DENY)


def test_default_deny_gives_the_slot_back() -> None:
    """A creation refused by a deny default does not count against the rate limit either."""
    policy = parse_policy(
        b'version = 1\n[default]\neffect = "deny"\n[[rules]]\nid = "rate"\nkind = "rate_limit"\n'
        b'limit = 1\nwindow = "1h"\n[[rules]]\nid = "ok"\nwhen = "name == \'ok\'"\n'
    )
    counter = InMemoryRateCounter()
    assert run(policy.decide(req(operator_account="a"), counter=counter)).rule_id == "default"
    assert run(policy.decide(req(operator_account="a", name="ok"), counter=counter)).rule_id == "ok"
    assert (
        run(policy.decide(req(operator_account="a", name="ok"), counter=counter)).rule_id == "rate"
    )


def test_a_failed_give_back_leaves_the_refusal_standing() -> None:
    """When the slot cannot be given back the request is still refused, without an exception."""
    policy = parse_policy(LIMIT_THEN_NAME.encode())
    decision = run(
        policy.decide(req(operator_account="a", name="casino"), counter=ReleaseFailingCounter())
    )
    assert (decision.rule_id, decision.outcome.effect) == ("names", Effect.DENY)


def test_rate_limit_store_failure_skips_the_rule_when_allowed() -> None:
    """on_store_error = "allow": the rule is skipped and reported in decision.errors."""
    policy = one_rule("rate_limit", RATE + '\non_store_error = "allow"')
    decision = run(
        policy.decide(req(operator_account="a"), counter=UnavailableCounter(), explain=True)
    )
    assert (decision.rule_id, decision.outcome.effect) == ("default", Effect.ALLOW)
    assert [(e.rule_id, e.result) for e in decision.errors] == [("r", RuleResult.ERROR)]
    assert "rate-limit store unavailable: connection refused" in decision.errors[0].reason
    assert decision.evaluations == decision.errors


def test_rate_limit_store_failure_refuses_when_denied() -> None:
    """on_store_error = "deny": the store failing refuses the creation with the rule's outcome."""
    policy = one_rule("rate_limit", RATE + '\non_store_error = "deny"')
    decision = run(policy.decide(req(operator_account="a"), counter=UnavailableCounter()))
    assert (decision.rule_id, decision.outcome) == ("r", REFUSAL)
    assert decision.reason == "rate-limit store unavailable: connection refused"
    assert decision.errors == ()


def test_rate_limit_without_a_counter_is_an_error() -> None:
    """Deciding without a counter skips the rate limit and reports it as an error."""
    decision = run(one_rule("rate_limit", RATE).decide(req(operator_account="a")))
    assert decision.rule_id == "default"
    assert [(e.rule_id, e.result) for e in decision.errors] == [("r", RuleResult.ERROR)]


def test_shadow_rate_limit_counts_over_the_limit_and_only_reports() -> None:
    """A shadow limit never refuses, reports when over, and counts the creations it let through."""
    policy = one_rule("rate_limit", 'limit = 2\nwindow = "30s"', shadow=True)
    counter = InMemoryRateCounter()
    alice = req(operator_account="alice")
    hits = []
    for offset_s in (0, 10, 20, 35):
        decision = run(policy.decide(alice, counter=counter, now_ms=T0 + offset_s * 1000))
        assert (decision.rule_id, decision.outcome.effect) == ("default", Effect.ALLOW)
        hits.append([(h.rule_id, h.result) for h in decision.shadow_hits])
    # At 35 s the creations of 10 s and 20 s are still in the window: the one the shadow
    # rule would have refused (20 s) was made, so it counts.
    assert hits == [[], [], [("r", RuleResult.SHADOW)], [("r", RuleResult.SHADOW)]]


def test_shadow_rate_limit_store_failure_is_an_error_not_a_refusal() -> None:
    """A shadow limit whose store fails with on_store_error deny is only a shadow hit."""
    policy = one_rule("rate_limit", RATE + '\non_store_error = "deny"', shadow=True)
    decision = run(policy.decide(req(operator_account="a"), counter=UnavailableCounter()))
    assert (decision.rule_id, decision.outcome.effect) == ("default", Effect.ALLOW)
    assert [h.rule_id for h in decision.shadow_hits] == ["r"]


def test_in_memory_counter_prunes_old_slots() -> None:
    """prune_slots deletes slots stamped before the time and says how many."""
    counter = InMemoryRateCounter()
    for now in (1, 2, 3):
        run(counter.acquire("b", window_ms=100, limit=10, now_ms=now))
    assert run(counter.prune_slots(3)) == 2
    assert run(counter.acquire("b", window_ms=100, limit=10, now_ms=4)).count_before == 1
