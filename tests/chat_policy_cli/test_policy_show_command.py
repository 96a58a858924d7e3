"""`chat-policy policy show`'s text: the running policy, its latest reload and its rules
with their counts."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from chat_policy_cli.policy_show_command import policy_lines
from chatpolicy.v1 import creation_policy_service_pb2 as pb


def ts(ms: int) -> Timestamp:
    """A Timestamp at `ms` Unix milliseconds."""
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def test_the_policy_prints_its_rules_in_order_with_their_counts_and_the_default() -> None:
    """Every rule is listed in evaluation order, those that did nothing yet with zeros, and
    the default last; a policy never reloaded says so."""
    response = pb.GetPolicyResponse(
        policy_revision="sha256:0123456789abcdef",
        source="/etc/chat-policy/policy.toml",
        loaded_at=ts(1670574414123),
        rule_ids=["admins", "group-names", "night-time"],
        rule_stats=[
            pb.RuleStats(rule_id="default", decided=1200),
            pb.RuleStats(rule_id="group-names", decided=7, errors=1),
            pb.RuleStats(rule_id="night-time", shadow_hits=31),
        ],
    )

    assert policy_lines(response) == [
        "revision     sha256:0123456789abcdef",
        "source       /etc/chat-policy/policy.toml",
        "loaded at    2022-12-09T08:26:54.123Z",
        "last reload  none tried",
        "rules (counted in this replica since 2022-12-09T08:26:54.123Z):",
        "  RULE         DECIDED  SHADOW HITS  ERRORS",
        "  admins             0            0       0",
        "  group-names        7            0       1",
        "  night-time         0           31       0",
        "  default         1200            0       0",
    ]


def test_a_refused_reload_shows_when_and_why() -> None:
    """The latest reload's time, that it was refused, and the error."""
    response = pb.GetPolicyResponse(
        policy_revision="sha256:0123456789abcdef",
        source="policy.toml",
        loaded_at=ts(1670574414123),
        last_reload_at=ts(1670574500000),
        last_reload_error="policy.toml:3: rule 'x' field 'kind': unknown kind 'nope'",
    )

    lines = policy_lines(response)

    assert lines[3:5] == [
        "last reload   2022-12-09T08:28:20.000Z, refused, kept the revision above",
        "reload error  policy.toml:3: rule 'x' field 'kind': unknown kind 'nope'",
    ]
    assert lines[-1].split() == ["default", "0", "0", "0"]


def test_a_successful_reload_shows_when() -> None:
    """A reload that was taken in shows its time and ok, and no error line."""
    response = pb.GetPolicyResponse(
        policy_revision="sha256:0123456789abcdef",
        source="policy.toml",
        loaded_at=ts(1670574500000),
        last_reload_at=ts(1670574500000),
    )

    assert policy_lines(response)[3] == "last reload  2022-12-09T08:28:20.000Z, ok"
    assert not any(line.startswith("reload error") for line in policy_lines(response))
