"""`chat-policy decisions list`: its filters as a ListDecisionsRequest, its table, and paging;
and how `decide` says a decision was a dry run."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from chat_policy_cli.decide_command import decision_lines
from chat_policy_cli.decision_commands import add_decision_arguments, list_lines, list_request
from chat_policy_cli.main import main
from chat_policy_cli.service_calls import collect_pages
from chatpolicy.v1 import creation_policy_service_pb2 as pb

APP = 1400000000


def parse(*argv: str) -> argparse.Namespace:
    """`decisions ARGV...` as its parser reads it."""
    parser = argparse.ArgumentParser(prog="chat-policy decisions")
    add_decision_arguments(parser)
    return parser.parse_args(list(argv))


def ts(ms: int) -> Timestamp:
    """A Timestamp at `ms` Unix milliseconds."""
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def test_every_filter_goes_into_the_request() -> None:
    """Each option sets its field of ListDecisionsRequest; times are read as RFC 3339."""
    args = parse(
        "list",
        "--app",
        str(APP),
        "--operator",
        "alice",
        "--decision",
        "deny",
        "--rule",
        "group-names",
        "--id",
        "18eab09cba8b5d68",
        "--caller",
        "ops-console",
        "--since",
        "2026-12-04T08:00:00+08:00",
        "--until",
        "2026-12-04T01:00:00.5Z",
    )

    request = list_request(args)

    assert request == pb.ListDecisionsRequest(
        sdk_app_id=APP,
        operator_account="alice",
        decision=pb.DECISION_DENY,
        rule_id="group-names",
        decision_id="18eab09cba8b5d68",
        caller="ops-console",
        decided_at_or_after=ts(1796342400000),
        decided_at_or_before=ts(1796346000500),
    )


def test_without_filters_the_request_keeps_everything() -> None:
    """No option: every app, both decisions, no time bounds."""
    request = list_request(parse("list"))

    assert request == pb.ListDecisionsRequest()
    assert not request.HasField("decided_at_or_after")
    assert list_request(parse("list", "--decision", "allow")).decision == pb.DECISION_ALLOW


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "2026-12-04"], "must be an RFC 3339 time with an offset"),
        (["--until", "1796342400000"], "must be an RFC 3339 time with an offset"),
        (["--decision", "maybe"], "invalid choice: 'maybe'"),
        (["--limit", "0"], "must be a whole number >= 1"),
        (["--app", "x"], "SdkAppid must be a whole number"),
    ],
)
def test_bad_filters_exit_2_with_a_usage_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A time without an offset, an unknown decision or a bad limit: exit 2, usage on stderr."""
    with pytest.raises(SystemExit) as raised:
        main(["decisions", "list", *argv])

    captured = capsys.readouterr()
    assert raised.value.code == 2
    assert captured.err.startswith("usage: chat-policy decisions list")
    assert message in captured.err


def record(number: int, **fields: object) -> pb.DecisionRecord:
    """A recorded allowed decision of alice's, `number` seconds into 2022-12-09T08:26:54Z."""
    defaults: dict[str, object] = {
        "decision_id": f"18eab09cba8b5d68{number:016x}",
        "decided_at": ts(1670574414000 + number * 1000),
        "request": pb.CheckGroupCreationRequest(sdk_app_id=APP, operator_account="alice"),
        "decision": pb.DECISION_ALLOW,
        "rule_id": "default",
        "reason": "no rule decided",
        "caller": "anonymous",
    }
    return pb.DecisionRecord(**{**defaults, **fields})


def test_decisions_print_as_a_table_with_a_count() -> None:
    """A row per decision, its reason last; a record without a caller shows `-`."""
    records = [
        record(
            2,
            decision=pb.DECISION_DENY,
            rule_id="group-names",
            reason="name contains banned word 'casino'",
            request=pb.CheckGroupCreationRequest(sdk_app_id=7, operator_account="bob"),
        ),
        record(1, caller=""),
    ]

    assert list_lines(records, more=False) == [
        "DECIDED AT                       APP  OPERATOR  DECISION  RULE         CALLER     ID"
        "                                REASON",
        "2022-12-09T08:26:56.000Z           7  bob       deny      group-names  anonymous  "
        "18eab09cba8b5d680000000000000002  name contains banned word 'casino'",
        "2022-12-09T08:26:55.000Z  1400000000  alice     allow     default      -          "
        "18eab09cba8b5d680000000000000001  no rule decided",
        "2 decisions",
    ]
    assert list_lines(records[:1], more=True)[-1] == (
        "1 decision shown; there are more: --all lists every one"
    )
    assert list_lines([], more=False) == ["no decisions"]


class Pages:
    """A listing of `total` numbers served `page_size` at most per page, as a service does."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sizes: list[int] = []

    def fetch(self, size: int, token: str) -> tuple[Sequence[int], str]:
        start = int(token or 0)
        self.sizes.append(size)
        end = min(start + size, self.total)
        return list(range(start, end)), (str(end) if end < self.total else "")


def test_paging_follows_the_tokens_to_the_last_page_or_the_limit() -> None:
    """Every page is fetched (1,000 at most per call) without a limit; with one, no more
    than it asks for, and the token to go on is kept."""
    every = Pages(2500)
    assert collect_pages(every.fetch, None) == (list(range(2500)), "")
    assert every.sizes == [1000, 1000, 1000]

    limited = Pages(2500)
    assert collect_pages(limited.fetch, 1001) == (list(range(1001)), "1001")
    assert limited.sizes == [1000, 1]

    exact = Pages(3)
    assert collect_pages(exact.fetch, 3) == ([0, 1, 2], "")


def test_a_dry_run_says_so() -> None:
    """`decide`'s output ends with a line saying the decision was a dry run, only for one."""
    response = pb.CheckGroupCreationResponse(
        decision=pb.DECISION_ALLOW,
        rule_id="default",
        policy_revision="sha256:0123456789abcdef",
        decision_id="18eaafcc29feb14f",
        reason="no rule decided",
        dry_run=True,
    )

    assert decision_lines(response)[-1] == (
        "dry run      yes: not recorded, no rate-limit slot taken (--live to act)"
    )
    response.dry_run = False
    assert not any(line.startswith("dry run") for line in decision_lines(response))
