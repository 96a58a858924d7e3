"""Policy evaluation: rule order, scopes, the default, explain, shadow rules and CEL conditions."""

from __future__ import annotations

import datetime
from asyncio import run
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy_service.engine.policy import (
    CreationRequest,
    Decision,
    Effect,
    Outcome,
    Policy,
    RuleEvaluation,
    RuleResult,
)
from policy_service.engine.policy_file import PolicyError, parse_policy
from policy_service.engine.rate_limit import InMemoryRateCounter

APP = 1400000000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def policy(source: str) -> Policy:
    """Parse a policy given as TOML text."""
    return parse_policy(source.encode(), "p.toml")


def req(**fields: Any) -> CreationRequest:
    """A creation request of the test application."""
    return CreationRequest(APP, **fields)


def verdict(decision: Decision) -> tuple[str, Effect, int]:
    """The deciding rule, the effect and the error code of a decision."""
    return decision.rule_id, decision.outcome.effect, decision.outcome.error_code


def results(decision: Decision) -> list[tuple[str, RuleResult]]:
    """The rules an explained decision evaluated, with their results, in order."""
    return [(e.rule_id, e.result) for e in decision.evaluations]


SCOPES = """
version = 1
[default]
effect = "deny"
error_code = 10150
error_info = "closed"

[[rules]]
id = "admins"
operator_accounts = ["root"]

[[rules]]
id = "no-web-public"
effect = "deny"
error_code = 10101
error_info = "use the app"
group_types = ["Public"]
opt_platforms = ["web"]

[[rules]]
id = "work-groups"
group_types = ["Private"]

[[rules]]
id = "meetings"
effect = "deny"
group_types = ["Meeting"]

[[rules]]
id = "mobile"
opt_platforms = ["iOS", "ANDROID"]
when = "name != 'closed'"
"""


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (req(operator_account="root", group_type="Public", opt_platform="Web"), "admins"),
        (req(operator_account="Root", group_type="Public", opt_platform="Web"), "no-web-public"),
        (req(group_type="Public", opt_platform="WEB"), "no-web-public"),
        (req(group_type="Work"), "work-groups"),
        (req(group_type="Private"), "work-groups"),
        (req(group_type="ChatRoom"), "meetings"),
        (req(group_type="Meeting", opt_platform="iOS"), "meetings"),
        (req(group_type="Public", opt_platform="android"), "mobile"),
        (req(group_type="Public", opt_platform="ios", name="closed"), "default"),
        (req(group_type="Public", opt_platform="Windows"), "default"),
        (req(group_type="Public"), "default"),
    ],
)
def test_first_rule_whose_scope_matches_decides(request_: CreationRequest, expected: str) -> None:
    """Scope keys AND together: operators exact, platforms any case, old type names, `when`."""
    assert run(policy(SCOPES).decide(request_)).rule_id == expected


def test_match_rules_decide_with_their_outcome() -> None:
    """A deny match rule refuses with its code and info; an allow one allows with code 0."""
    scoped = policy(SCOPES)
    refused = run(scoped.decide(req(group_type="Public", opt_platform="Web")))
    assert refused.outcome == Outcome(Effect.DENY, 10101, "use the app")
    assert refused.reason == "matched"
    assert run(scoped.decide(req(group_type="Work"))).outcome == Outcome(Effect.ALLOW)
    assert run(scoped.decide(req(group_type="Meeting"))).outcome == Outcome(Effect.DENY, 1, "")


def test_default_deny_carries_its_code_and_info() -> None:
    """When no rule decides, a deny default refuses with its own code and info."""
    decision = run(policy(SCOPES).decide(req(group_type="Public")))
    assert decision.outcome == Outcome(Effect.DENY, 10150, "closed")
    assert (decision.rule_id, decision.reason) == ("default", "no rule decided")


def test_default_is_allow_when_left_out() -> None:
    """A policy without [default] allows what no rule decides."""
    decision = run(policy("version = 1").decide(req(group_type="Public")))
    assert (decision.outcome, decision.rule_id) == (Outcome(Effect.ALLOW), "default")


def test_allow_match_short_circuits_later_denies() -> None:
    """An allow match rule decides at once: later deny rules of any kind are not evaluated."""
    source = """
    version = 1
    [[rules]]
    id = "trusted"
    operator_accounts = ["bot"]

    [[rules]]
    id = "blocked"
    kind = "blocked"
    accounts = ["bot"]

    [[rules]]
    id = "deny-all"
    effect = "deny"
    """
    decision = run(policy(source).decide(req(operator_account="bot"), explain=True))
    assert verdict(decision) == ("trusted", Effect.ALLOW, 0)
    assert results(decision) == [("trusted", RuleResult.DECIDED)]
    assert verdict(run(policy(source).decide(req(operator_account="eve")))) == (
        "deny-all",
        Effect.DENY,
        1,
    )


INTERLEAVED = """
version = 1
[[rules]]
id = "untyped-x"
effect = "deny"
when = "name == 'x'"

[[rules]]
id = "public-ok"
group_types = ["Public"]
when = "name != 'z'"

[[rules]]
id = "untyped-y"
effect = "deny"
when = "name == 'y' || name == 'z'"

[[rules]]
id = "work-and-public"
effect = "deny"
group_types = ["Work", "Public"]

[[rules]]
id = "untyped-last"
effect = "deny"
error_code = 10199
"""


@pytest.mark.parametrize(
    ("group_type", "name", "expected"),
    [
        ("Public", "x", "untyped-x"),
        ("Public", "y", "public-ok"),
        ("Public", "z", "untyped-y"),
        ("Public", "", "public-ok"),
        ("Work", "x", "untyped-x"),
        ("Private", "y", "untyped-y"),
        ("Work", "", "work-and-public"),
        ("Meeting", "y", "untyped-y"),
        ("Meeting", "", "untyped-last"),
        ("", "", "untyped-last"),
        ("Unknown", "x", "untyped-x"),
    ],
)
def test_typed_and_untyped_rules_keep_file_order(group_type: str, name: str, expected: str) -> None:
    """Rules indexed by group type are still tried in file order among the untyped ones."""
    decided = run(policy(INTERLEAVED).decide(req(group_type=group_type, name=name)))
    assert decided.rule_id == expected


def test_explain_lists_every_evaluated_rule_up_to_the_decider() -> None:
    """explain gives each rule's result in order, and nothing after the rule that decided."""
    source = """
    version = 1
    [[rules]]
    id = "not-for-me"
    operator_accounts = ["root"]

    [[rules]]
    id = "names"
    kind = "name"
    max_length = 30

    [[rules]]
    id = "would-refuse"
    shadow = true
    effect = "deny"
    error_code = 10110

    [[rules]]
    id = "broken"
    effect = "deny"
    when = "create_group_num > 3"

    [[rules]]
    id = "no-avchat"
    kind = "platform_types"
    other = ["Work"]
    error_code = 10101

    [[rules]]
    id = "after-the-decider"
    effect = "deny"
    """
    decision = run(policy(source).decide(req(group_type="Public", name="club"), explain=True))
    assert decision.evaluations == (
        RuleEvaluation("not-for-me", "match", RuleResult.NOT_APPLICABLE, Effect.ALLOW),
        RuleEvaluation("names", "name", RuleResult.PASSED, Effect.DENY),
        RuleEvaluation("would-refuse", "match", RuleResult.SHADOW, Effect.DENY, "matched"),
        decision.errors[0],
        RuleEvaluation(
            "no-avchat",
            "platform_types",
            RuleResult.DECIDED,
            Effect.DENY,
            "Public groups may not be created from unknown platform",
        ),
    )
    assert (decision.errors[0].rule_id, decision.errors[0].result) == ("broken", RuleResult.ERROR)
    assert decision.shadow_hits == (decision.evaluations[2],)
    assert verdict(decision) == ("no-avchat", Effect.DENY, 10101)


def test_without_explain_there_are_no_evaluations_but_hits_and_errors_remain() -> None:
    """A decision not explained lists no evaluations, yet reports shadow hits and errors."""
    source = """
    version = 1
    [[rules]]
    id = "shadow"
    shadow = true
    effect = "deny"

    [[rules]]
    id = "broken"
    when = "create_group_num > 3"
    """
    decision = run(policy(source).decide(req()))
    assert decision.evaluations == ()
    assert [h.rule_id for h in decision.shadow_hits] == ["shadow"]
    assert [e.rule_id for e in decision.errors] == ["broken"]


def test_decision_ids_are_unique() -> None:
    """Every decision, even of the same request, has its own 32-hex-digit id."""
    scoped = policy(SCOPES)
    ids = {run(scoped.decide(req(group_type="Work"))).decision_id for _ in range(500)}
    assert len(ids) == 500
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_decisions_carry_the_policy_revision() -> None:
    """Each decision names the revision of the policy that made it."""
    scoped = policy(SCOPES)
    assert run(scoped.decide(req())).policy_revision == scoped.revision


# shadow


SHADOW_FIRST = """
version = 1
[[rules]]
id = "shadow-deny"
shadow = true
effect = "deny"
error_code = 10120
group_types = ["Public"]

[[rules]]
id = "shadow-allow"
shadow = true
operator_accounts = ["bot"]

[[rules]]
id = "real-deny"
effect = "deny"
error_code = 10121
when = "name == 'bad'"
"""


def test_shadow_deny_is_reported_but_never_decides() -> None:
    """A shadow rule that would refuse is a shadow hit; the default then allows."""
    decision = run(policy(SHADOW_FIRST).decide(req(group_type="Public")))
    assert verdict(decision) == ("default", Effect.ALLOW, 0)
    assert decision.shadow_hits == (
        RuleEvaluation("shadow-deny", "match", RuleResult.SHADOW, Effect.DENY, "matched"),
    )


def test_evaluation_continues_past_shadow_rules_to_the_real_decider() -> None:
    """Shadow rules (deny or allow) that would decide do not stop a later real rule."""
    decision = run(
        policy(SHADOW_FIRST).decide(req(group_type="Public", operator_account="bot", name="bad"))
    )
    assert verdict(decision) == ("real-deny", Effect.DENY, 10121)
    assert [(h.rule_id, h.effect) for h in decision.shadow_hits] == [
        ("shadow-deny", Effect.DENY),
        ("shadow-allow", Effect.ALLOW),
    ]


def test_shadow_rule_not_in_scope_is_no_hit() -> None:
    """A shadow rule whose scope does not match is not a shadow hit."""
    assert run(policy(SHADOW_FIRST).decide(req(group_type="Work"))).shadow_hits == ()


@pytest.mark.parametrize(
    ("kind", "body", "fields"),
    [
        ("match", 'effect = "deny"', {}),
        ("quota", "max_created = 1", {"create_group_num": 5}),
        ("name", "max_length = 2", {"name": "long"}),
        ("members", "max_members = 1", {"member_accounts": ("a", "b")}),
        ("owner", "admins = []", {"operator_account": "a", "owner_account": "b"}),
        ("blocked", 'accounts = ["a"]', {"operator_account": "a"}),
        ("platform_types", 'other = ["Work"]', {"group_type": "Public"}),
        ("client_ip", 'deny_cidrs = ["192.0.2.0/24"]', {"client_ip": "192.0.2.1"}),
        ("rate_limit", 'limit = 1\nwindow = "1h"', {"operator_account": "a"}),
    ],
)
def test_every_kind_can_be_shadowed(kind: str, body: str, fields: dict[str, Any]) -> None:
    """A shadow rule of any kind that fails its check is a shadow hit, and the default allows."""
    source = f'version = 1\n[[rules]]\nid = "s"\nkind = "{kind}"\nshadow = true\n{body}\n'
    counter = InMemoryRateCounter()
    shadowed = policy(source)
    if kind == "rate_limit":
        run(shadowed.decide(req(**fields), counter=counter, now_ms=T0))
    decision = run(shadowed.decide(req(**fields), counter=counter, now_ms=T0))
    assert verdict(decision) == ("default", Effect.ALLOW, 0)
    assert [(h.rule_id, h.kind, h.result) for h in decision.shadow_hits] == [
        ("s", kind, RuleResult.SHADOW)
    ]
    enforced = policy(source.replace("shadow = true", "shadow = false"))
    assert run(enforced.decide(req(**fields), counter=counter, now_ms=T0)).rule_id == "s"


# CEL


def cel_rule(expression: str) -> Policy:
    """A policy whose single deny rule 'c' applies when the CEL expression holds."""
    return policy(
        f"version = 1\n[[rules]]\nid = \"c\"\neffect = \"deny\"\nwhen = '''{expression}'''"
    )


@pytest.mark.parametrize(
    ("expression", "hit", "miss"),
    [
        ("sdk_app_id == 1400000000", req(), CreationRequest(1400000001)),
        ('operator == "alice"', req(operator_account="alice"), req(owner_account="alice")),
        ('owner == "alice"', req(owner_account="alice"), req(operator_account="alice")),
        ('group_type == "Work"', req(group_type="Private"), req(group_type="Public")),
        ('group_type == "Meeting"', req(group_type="ChatRoom"), req(group_type="Work")),
        ('name == "Book club"', req(name="Book club"), req(name="book club")),
        ("create_group_num == null", req(), req(create_group_num=0)),
        ("create_group_num == 4", req(create_group_num=4), req(create_group_num=3)),
        ('members == ["a", "b"]', req(member_accounts=("a", "b")), req(member_accounts=("b", "a"))),
        ("size(members) == 0", req(), req(member_accounts=("a",))),
        ('platform == "iOS"', req(opt_platform="iOS"), req(opt_platform="ios")),
        ('client_ip == "192.0.2.7"', req(client_ip="192.0.2.7"), req(client_ip="192.0.2.8")),
        (
            'time == timestamp("2026-03-01T12:30:00.250Z")',
            req(event_time_ms=1772368200250),
            req(event_time_ms=1772368200251),
        ),
        ("time.getHours() == 12", req(event_time_ms=1772368200250), req(event_time_ms=0)),
    ],
)
def test_cel_reads_every_documented_variable(
    expression: str, hit: CreationRequest, miss: CreationRequest
) -> None:
    """Each request variable reaches CEL with its documented value and type."""
    rule = cel_rule(expression)
    hit_decision, miss_decision = (
        run(rule.decide(hit, now_ms=T0)),
        run(rule.decide(miss, now_ms=T0)),
    )
    assert (hit_decision.rule_id, hit_decision.errors) == ("c", ())
    assert (miss_decision.rule_id, miss_decision.errors) == ("default", ())


def test_cel_time_is_the_clock_without_event_time() -> None:
    """Without EventTime, `time` is the now_ms the decision is made at."""
    rule = cel_rule('time == timestamp("2026-01-01T00:00:00Z")')
    assert run(rule.decide(req(), now_ms=T0)).rule_id == "c"
    assert run(rule.decide(req(), now_ms=T0 + 1)).rule_id == "default"
    assert run(rule.decide(req(event_time_ms=T0 + 1), now_ms=T0)).rule_id == "default"


def test_cel_time_defaults_to_the_service_clock() -> None:
    """Deciding without now_ms uses the current time for `time`."""
    now = datetime.datetime.now(datetime.UTC)
    earlier, later = (
        (now + datetime.timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ") for m in (-5, 5)
    )
    rule = cel_rule(f'time > timestamp("{earlier}") && time < timestamp("{later}")')
    assert run(rule.decide(req())).rule_id == "c"
    assert run(rule.decide(req(), now_ms=T0)).rule_id == "default"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("name ==", "not valid CEL"),
        ("name == 'a' &&", "not valid CEL"),
        ("opt_platform == 'Web'", "Undefined variable"),
        ("size(member_accounts) > 1", "Undefined variable"),
        ("create_group_num", "must evaluate to a bool, got int"),
        ("name", "must evaluate to a bool, got str"),
        ("members", "must evaluate to a bool, got list"),
    ],
)
def test_bad_cel_is_a_load_error(expression: str, message: str) -> None:
    """Syntax errors, undefined variables and non-bool results refuse the policy at load."""
    source = f'version = 1\n\n[[rules]]\nid = "c"\nwhen = "{expression}"\n'
    with pytest.raises(PolicyError) as raised:
        policy(source)
    assert str(raised.value).startswith("p.toml:5: rule 'c' field 'when': ")
    assert message in str(raised.value)


def test_undefined_variable_error_lists_the_variables() -> None:
    """The error for an unknown variable lists the variables an expression may use."""
    with pytest.raises(PolicyError, match="client_ip, create_group_num, group_type, members"):
        cel_rule("opt_platform == 'Web'")


@pytest.mark.parametrize(
    ("expression", "fields"),
    [
        ("create_group_num > 3", {}),
        ('name.matches("[")', {"name": "x"}),
        ("name.matches(platform)", {"opt_platform": "(", "name": "x"}),
        ("members[0] == owner", {}),
        ("10 / create_group_num > 1", {"create_group_num": 0}),
        ("create_group_num * 4611686018427387904 > 0", {"create_group_num": 4}),
    ],
)
def test_cel_runtime_error_skips_the_rule_and_is_reported(
    expression: str, fields: dict[str, Any]
) -> None:
    """A condition that fails for a request skips its rule: ERROR in errors, the next rule runs."""
    source = (
        f"version = 1\n[[rules]]\nid = \"c\"\neffect = \"deny\"\nwhen = '''{expression}'''\n"
        '[[rules]]\nid = "next"\neffect = "deny"\nerror_code = 10111\n'
    )
    decision = run(policy(source).decide(req(**fields), explain=True))
    assert verdict(decision) == ("next", Effect.DENY, 10111)
    assert [(e.rule_id, e.result, e.effect) for e in decision.errors] == [
        ("c", RuleResult.ERROR, Effect.DENY)
    ]
    assert decision.errors[0].reason.startswith("CEL error: ")
    assert results(decision) == [("c", RuleResult.ERROR), ("next", RuleResult.DECIDED)]


@pytest.mark.parametrize(
    ("expression", "hit", "miss"),
    [
        ("10 / (create_group_num - 1) >= 5", {"create_group_num": 2}, {"create_group_num": 4}),
        (
            "members[1] == owner",
            {"member_accounts": ("a", "o"), "owner_account": "o"},
            {"member_accounts": ("o", "a"), "owner_account": "o"},
        ),
    ],
)
def test_cel_that_fails_on_the_load_sample_still_loads(
    expression: str, hit: dict[str, Any], miss: dict[str, Any]
) -> None:
    """An expression that happens to fail for the load-time sample request (a division by
    zero, an index out of range) loads, and is evaluated per request."""
    rule = cel_rule(expression)
    assert run(rule.decide(req(**hit))).rule_id == "c"
    assert run(rule.decide(req(**miss))).rule_id == "default"


def test_event_time_out_of_timestamp_range_is_a_rule_error() -> None:
    """An EventTime beyond year 9999 makes a `time` condition an error, not a crash."""
    decision = run(cel_rule("time.getFullYear() > 2000").decide(req(event_time_ms=10**16)))
    assert decision.rule_id == "default"
    assert [(e.rule_id, e.result) for e in decision.errors] == [("c", RuleResult.ERROR)]


@pytest.mark.parametrize(
    ("expression", "fields"),
    [
        ('name == "owner"', {"name": "owner"}),
        ('name.contains("members") && owner == "bob"', {"name": "members", "owner_account": "bob"}),
        ("name == 'it\"s' && operator == 'a'", {"name": 'it"s', "operator_account": "a"}),
        (
            'name == "say \\"owner\\"" && platform == "Web"',
            {"name": 'say "owner"', "opt_platform": "Web"},
        ),
        ('name == """a "b" c""" && client_ip == "x"', {"name": 'a "b" c', "client_ip": "x"}),
        ('name.endsWith(r"\\") || owner == "x"', {"name": "a", "owner_account": "x"}),
        (
            'members.exists(m, m == owner) && "time" != name',
            {"member_accounts": ("o",), "owner_account": "o"},
        ),
        ('has({"name": 1}.name) && sdk_app_id > 0', {}),
    ],
)
def test_string_literals_naming_variables_do_not_hide_variables(
    expression: str, fields: dict[str, Any]
) -> None:
    """Variables are found outside string literals, whatever the literals contain."""
    decision = run(cel_rule(expression).decide(req(**fields)))
    assert (decision.rule_id, decision.errors) == ("c", ())


def test_cel_applies_to_check_kinds_as_scope() -> None:
    """`when` on a check rule decides whether the check runs at all."""
    source = """
    version = 1
    [[rules]]
    id = "quota"
    kind = "quota"
    max_created = 1
    when = 'platform != "Web"'
    """
    scoped = policy(source)
    assert run(scoped.decide(req(create_group_num=5, opt_platform="iOS"))).rule_id == "quota"
    assert run(scoped.decide(req(create_group_num=5, opt_platform="Web"))).rule_id == "default"


@given(
    scopes=st.lists(
        st.tuples(
            st.sets(st.sampled_from(["Public", "Work", "Private", "Meeting"]), max_size=2),
            st.sets(st.sampled_from(["alice", "bob", "carol"]), max_size=2),
            st.booleans(),
        ),
        max_size=12,
    ),
    group_type=st.sampled_from(["Public", "Work", "Private", "Community", ""]),
    operator=st.sampled_from(["alice", "bob", "dave", ""]),
)
def test_the_rule_index_decides_as_walking_every_rule_does(
    scopes: list[tuple[set[str], set[str], bool]], group_type: str, operator: str
) -> None:
    """Indexed by type and operator, a policy decides exactly as a walk of all its rules."""
    rules = []
    for index, (types, operators, deny) in enumerate(scopes):
        rules.append(f'[[rules]]\nid = "r{index}"\neffect = "{"deny" if deny else "allow"}"')
        if types:
            rules.append(f"group_types = {sorted(types)!r}".replace("'", '"'))
        if operators:
            rules.append(f"operator_accounts = {sorted(operators)!r}".replace("'", '"'))
    policy = parse_policy(("version = 1\n" + "\n".join(rules)).encode())
    request = CreationRequest(1, operator_account=operator, group_type=group_type)
    indexed = run(policy.decide(request))
    walked = run(policy.decide(request, explain=True))
    assert (indexed.rule_id, indexed.outcome) == (walked.rule_id, walked.outcome)


def test_decision_ids_sort_in_the_order_decisions_were_made() -> None:
    """Decision ids made one after another sort in that order, even within a millisecond."""
    policy = parse_policy(b"version = 1\n")
    ids = [run(policy.decide(CreationRequest(APP))).decision_id for _ in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
