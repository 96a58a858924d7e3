"""CreationPolicyService over gRPC: explain, shadow, GetPolicy, hot reload, ListDecisions."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from chatpolicy.v1 import creation_policy_service_pb2 as pb
from policy_service.engine.decision_log import DecisionRecord
from policy_service.engine.policy_file import load_policy, parse_policy
from policy_service.engine.policy_reload import PolicyHolder
from policy_service.errors import StoreUnavailable
from policy_service.stores.store import open_store
from tests.policy_service.servers import APP, BrokenStore, Serve, Server, error_info
from tests.waiting import wait_for

POLICY = b"""version = 1
[[rules]]
id = "names"
kind = "name"
banned_words = ["casino"]
error_code = 10103
error_info = "Choose another name."

[[rules]]
id = "shadow-short-names"
shadow = true
effect = "deny"
when = "size(name) < 3"

[[rules]]
id = "cel-error"
effect = "deny"
when = "create_group_num > 3"

[[rules]]
id = "rate"
kind = "rate_limit"
limit = 2
window = "1h"
error_code = 10107
error_info = "Too fast."
"""

DENY_ALL = b"""version = 1
[default]
effect = "deny"
error_code = 10150
error_info = "Closed."
"""


def check(server: Server, **fields: object) -> pb.CheckGroupCreationResponse:
    """CheckGroupCreation for APP with the given fields."""
    response: pb.CheckGroupCreationResponse = server.creation.CheckGroupCreation(
        pb.CheckGroupCreationRequest(sdk_app_id=APP, **fields), timeout=5
    )
    return response


def list_decisions(server: Server, **fields: object) -> pb.ListDecisionsResponse:
    """One ListDecisions page."""
    response: pb.ListDecisionsResponse = server.creation.ListDecisions(
        pb.ListDecisionsRequest(**fields), timeout=5
    )
    return response


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """A policy file holding POLICY."""
    path = tmp_path / "policy.toml"
    path.write_bytes(POLICY)
    return path


def test_a_refusal_names_its_rule_and_reason(serve: Serve) -> None:
    """A banned word refuses with the rule's code, info, id and a reason naming the word."""
    server = serve(policy=parse_policy(POLICY))
    response = check(server, operator_account="a", name="Big CASINO night")
    assert response.decision == pb.DECISION_DENY
    assert (response.error_code, response.error_info) == (10103, "Choose another name.")
    assert response.rule_id == "names"
    assert response.reason == "name contains banned word 'casino'"
    assert list(response.evaluations) == []


def test_explain_lists_every_evaluated_rule(serve: Serve) -> None:
    """explain returns each evaluated rule's result, shadow hits and errors included."""
    server = serve(policy=parse_policy(POLICY))
    response = check(server, operator_account="a", name="ab", create_group_num=1, explain=True)
    assert response.decision == pb.DECISION_ALLOW
    assert [(e.rule_id, e.result) for e in response.evaluations] == [
        ("names", pb.RULE_RESULT_PASSED),
        ("shadow-short-names", pb.RULE_RESULT_SHADOW),
        ("cel-error", pb.RULE_RESULT_NOT_APPLICABLE),
        ("rate", pb.RULE_RESULT_PASSED),
    ]
    assert response.evaluations[1].effect == pb.DECISION_DENY
    assert response.evaluations[1].kind == "match"
    assert list(response.shadow_rule_ids) == ["shadow-short-names"]


def test_a_cel_runtime_error_skips_the_rule_and_is_reported(serve: Serve) -> None:
    """create_group_num > 3 on an absent CreateGroupNum (null) is an error: rule skipped."""
    server = serve(policy=parse_policy(POLICY))
    response = check(server, operator_account="a", name="abcdef", explain=True)
    assert response.decision == pb.DECISION_ALLOW
    assert list(response.error_rule_ids) == ["cel-error"]
    error = response.evaluations[2]
    assert error.result == pb.RULE_RESULT_ERROR
    assert error.reason.startswith("CEL error:")


def test_the_rate_limit_counts_in_the_store(serve: Serve) -> None:
    """Two creations an hour per operator: the third is refused, another operator is not."""
    server = serve(policy=parse_policy(POLICY))
    answers = [check(server, operator_account="a", name="group").decision for _ in range(3)]
    assert answers == [pb.DECISION_ALLOW, pb.DECISION_ALLOW, pb.DECISION_DENY]
    refused = check(server, operator_account="a", name="group")
    assert (refused.rule_id, refused.error_code) == ("rate", 10107)
    assert check(server, operator_account="b", name="group").decision == pb.DECISION_ALLOW


def test_a_refused_creation_does_not_count_against_the_rate_limit(serve: Serve) -> None:
    """Creations refused by an earlier rule leave the operator's rate budget untouched."""
    server = serve(policy=parse_policy(POLICY))
    for _ in range(5):
        assert check(server, operator_account="a", name="casino").decision == pb.DECISION_DENY
    answers = [check(server, operator_account="a", name="group").decision for _ in range(2)]
    assert answers == [pb.DECISION_ALLOW, pb.DECISION_ALLOW]


def test_an_unreachable_store_lets_a_rate_limited_creation_through(serve: Serve) -> None:
    """on_store_error defaults to allow: the rule is skipped and named in error_rule_ids."""
    server = serve(store=BrokenStore(StoreUnavailable("down")), policy=parse_policy(POLICY))
    response = check(server, operator_account="a", name="group", create_group_num=1)
    assert response.decision == pb.DECISION_ALLOW
    assert list(response.error_rule_ids) == ["rate"]


def test_get_policy_describes_the_running_policy(serve: Serve, policy_file: Path) -> None:
    """GetPolicy gives the revision every decision carries, the source and the rule ids."""
    server = serve(policy=policy_file)
    described = server.creation.GetPolicy(pb.GetPolicyRequest(), timeout=5)
    assert described.policy_revision == check(server, name="group").policy_revision
    assert described.policy_revision.startswith("sha256:")
    assert described.source == str(policy_file)
    assert list(described.rule_ids) == ["names", "shadow-short-names", "cel-error", "rate"]
    assert described.last_reload_error == ""
    assert not described.HasField("last_reload_at")


def test_a_changed_policy_file_is_reloaded(serve: Serve, policy_file: Path) -> None:
    """Rewriting the file switches decisions and the revision, with no restart."""
    server = serve(policy=policy_file)
    before = check(server, name="group")
    assert before.decision == pb.DECISION_ALLOW
    policy_file.write_bytes(DENY_ALL)
    wait_for(lambda: check(server, name="group").decision == pb.DECISION_DENY)
    after = check(server, name="group")
    assert after.policy_revision == parse_policy(DENY_ALL).revision != before.policy_revision
    assert (after.error_code, after.rule_id) == (10150, "default")
    described = server.creation.GetPolicy(pb.GetPolicyRequest(), timeout=5)
    assert described.policy_revision == after.policy_revision
    assert described.HasField("last_reload_at")


def test_an_invalid_policy_is_refused_and_the_last_good_one_kept(
    serve: Serve, policy_file: Path
) -> None:
    """A broken file on reload keeps the running revision; GetPolicy says what is wrong."""
    server = serve(policy=policy_file)
    revision = check(server, name="group").policy_revision
    policy_file.write_bytes(POLICY.replace(b'window = "1h"', b'window = "1 hour"'))

    def refused() -> bool:
        return bool(server.creation.GetPolicy(pb.GetPolicyRequest(), timeout=5).last_reload_error)

    wait_for(refused)
    described = server.creation.GetPolicy(pb.GetPolicyRequest(), timeout=5)
    assert described.policy_revision == revision
    assert "rule 'rate' field 'window'" in described.last_reload_error
    assert f"{policy_file}:" in described.last_reload_error
    assert check(server, name="Casino").decision == pb.DECISION_DENY
    policy_file.write_bytes(DENY_ALL)
    wait_for(lambda: not refused())
    assert check(server, name="group").error_code == 10150


def test_reloads_never_fail_or_mix_in_flight_decisions(serve: Serve, policy_file: Path) -> None:
    """While the file flips between two policies and a broken one, every call succeeds and
    each decision is the one its reported revision makes."""
    server = serve(policy=policy_file)
    allow_revision = parse_policy(POLICY).revision
    deny_revision = parse_policy(DENY_ALL).revision
    stop = threading.Event()
    operators = itertools.count()
    seen: list[tuple[str, int]] = []
    failures: list[BaseException] = []

    def hammer() -> None:
        try:
            while not stop.is_set():
                response = check(server, name="group", operator_account=f"op{next(operators)}")
                seen.append((response.policy_revision, response.decision))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for content in [DENY_ALL, b"version = [", POLICY, DENY_ALL, POLICY] * 2:
        policy_file.write_bytes(content)
        time.sleep(0.15)
    stop.set()
    for thread in threads:
        thread.join()
    assert failures == []
    assert {revision for revision, _ in seen} == {allow_revision, deny_revision}
    expected = {allow_revision: pb.DECISION_ALLOW, deny_revision: pb.DECISION_DENY}
    assert all(decision == expected[revision] for revision, decision in seen)


def test_a_reload_request_loads_a_change_that_polling_cannot_see(
    serve: Serve, policy_file: Path
) -> None:
    """request_reload (what SIGHUP calls) reloads a file whose inode, size and mtime are the
    same as before, which the poll takes for unchanged."""
    server = serve(policy=policy_file)
    stat = policy_file.stat()
    policy_file.write_bytes(DENY_ALL.ljust(len(POLICY), b" "))
    os.utime(policy_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    time.sleep(0.3)  # several polls
    assert check(server, name="group").decision == pb.DECISION_ALLOW
    server.service.policy_watcher.request_reload()
    wait_for(lambda: check(server, name="group").decision == pb.DECISION_DENY)


def test_decisions_are_recorded_and_listed_newest_first(serve: Serve) -> None:
    """Each decision appears in ListDecisions with its request, outcome and reason."""
    server = serve(policy=parse_policy(POLICY))
    first = check(server, operator_account="alice", name="casino royale", member_accounts=["b"])
    second = check(server, operator_account="bob", name="group", create_group_num=2)
    wait_for(lambda: len(list_decisions(server).decisions) == 2)
    newest, oldest = list_decisions(server).decisions
    assert (newest.decision_id, oldest.decision_id) == (second.decision_id, first.decision_id)
    assert oldest.request.operator_account == "alice"
    assert list(oldest.request.member_accounts) == ["b"]
    assert not oldest.request.HasField("create_group_num")
    assert newest.request.create_group_num == 2
    assert (oldest.decision, oldest.rule_id, oldest.error_code) == (
        pb.DECISION_DENY,
        "names",
        10103,
    )
    assert oldest.reason == first.reason
    assert oldest.policy_revision == first.policy_revision
    assert newest.decided_at.ToMilliseconds() >= oldest.decided_at.ToMilliseconds()


def test_list_decisions_filters_and_pages(serve: Serve) -> None:
    """Filters by operator and decision, and pages through every match exactly once."""
    server = serve(policy=parse_policy(POLICY))
    ids = [check(server, operator_account="a", name=f"g{i}").decision_id for i in range(5)]
    check(server, operator_account="b", name="casino")
    wait_for(lambda: len(list_decisions(server).decisions) == 6)
    denied = list_decisions(server, decision=pb.DECISION_DENY).decisions
    assert [(d.request.operator_account, d.rule_id) for d in denied] == [
        ("b", "names"),
        ("a", "rate"),
        ("a", "rate"),
        ("a", "rate"),
    ]
    listed: list[str] = []
    token = ""
    while True:
        page = list_decisions(server, operator_account="a", page_size=2, page_token=token)
        listed += [d.decision_id for d in page.decisions]
        token = page.next_page_token
        if not token:
            break
    assert listed == ids[::-1]
    one = list_decisions(server, decision_id=ids[2]).decisions
    assert [d.decision_id for d in one] == [ids[2]]


def test_a_page_token_is_bound_to_its_filters(serve: Serve) -> None:
    """A token used with other filters is INVALID_ARGUMENT with the page-token reason."""
    server = serve(policy=parse_policy(POLICY))
    for i in range(3):
        check(server, operator_account="a", name=f"g{i}")
    wait_for(lambda: len(list_decisions(server).decisions) == 3)
    token = list_decisions(server, page_size=1).next_page_token
    with pytest.raises(grpc.RpcError) as raised:
        list_decisions(server, page_size=1, page_token=token, operator_account="a")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).reason == "ERROR_REASON_INVALID_PAGE_TOKEN"


def test_get_policy_counts_decisions_shadow_hits_and_errors_per_rule(serve: Serve) -> None:
    """rule_stats counts what each rule did in this replica: decided, would have, failed."""
    server = serve(policy=parse_policy(POLICY))
    check(server, operator_account="a", name="casino")
    check(server, operator_account="a", name="ab", create_group_num=1)
    check(server, operator_account="b", name="ok")
    stats = server.creation.GetPolicy(pb.GetPolicyRequest(), timeout=5).rule_stats
    assert [(s.rule_id, s.decided, s.shadow_hits, s.errors) for s in stats] == [
        ("cel-error", 0, 0, 1),
        ("default", 2, 0, 0),
        ("names", 1, 0, 0),
        ("shadow-short-names", 0, 2, 0),
    ]


def decisions_counted(rule: str, effect: str) -> float:
    """chat_policy_service_decisions_total for a rule and effect in this process, so far."""
    labels = {"rule": rule, "effect": effect}
    return REGISTRY.get_sample_value("chat_policy_service_decisions_total", labels) or 0.0


def test_a_dry_run_takes_no_rate_limit_slot(serve: Serve) -> None:
    """Dry runs are decided, explained and marked, and take no slot: with limit 2, two live
    creations are still allowed after many dry runs, and then a dry run is refused too."""
    server = serve(policy=parse_policy(POLICY))
    for _ in range(5):
        dry = check(server, operator_account="a", name="group", dry_run=True)
        assert (dry.decision, dry.dry_run) == (pb.DECISION_ALLOW, True)
        assert [e.rule_id for e in dry.evaluations] == [
            "names",
            "shadow-short-names",
            "cel-error",
            "rate",
        ]
    live = [check(server, operator_account="a", name="group") for _ in range(2)]
    assert [(r.decision, r.dry_run) for r in live] == [(pb.DECISION_ALLOW, False)] * 2
    assert list(live[0].evaluations) == []
    refused = check(server, operator_account="a", name="group", dry_run=True)
    assert (refused.decision, refused.rule_id, refused.dry_run) == (pb.DECISION_DENY, "rate", True)


def test_a_dry_run_is_neither_recorded_nor_counted(serve: Serve) -> None:
    """ListDecisions never lists a dry run, and neither GetPolicy's rule_stats nor the
    decision metrics count it."""
    server = serve(policy=parse_policy(POLICY))
    metric_before = decisions_counted("names", "deny")
    for _ in range(3):
        check(server, operator_account="a", name="casino", dry_run=True)
    live = check(server, operator_account="b", name="group", create_group_num=1)
    # Records are stored in the order decided: once the live one is listed, a dry run
    # recorded before it would be too.
    wait_for(lambda: len(list_decisions(server).decisions) == 1)
    assert [d.decision_id for d in list_decisions(server).decisions] == [live.decision_id]
    stats = server.creation.GetPolicy(pb.GetPolicyRequest(), timeout=5).rule_stats
    assert [(s.rule_id, s.decided) for s in stats] == [("default", 1)]
    assert decisions_counted("names", "deny") == metric_before


class KeptDecisions:
    """A store that also keeps every decision record appended to it, as it was given."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.appended: list[DecisionRecord] = []

    @classmethod
    async def open(cls, url: str) -> KeptDecisions:
        return cls(await open_store(url))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def append_decisions(self, records: Sequence[DecisionRecord]) -> None:
        self.appended += records
        await self._store.append_decisions(records)


def test_a_recorded_decision_carries_its_caller(serve: Serve) -> None:
    """The record of a decision names who asked: without an access file, "anonymous"."""
    server = serve(store=KeptDecisions.open, policy=parse_policy(POLICY))
    kept: KeptDecisions = server.store.target
    decided = check(server, operator_account="a", name="group")
    wait_for(lambda: len(kept.appended) == 1)
    assert [(r.decision_id, r.caller) for r in kept.appended] == [
        (decided.decision_id, "anonymous")
    ]


# A policy of one deny rule that reads create_group_num without a null check.
UNGUARDED_RULE = (
    'version = 1\n\n[[rules]]\nid = "{id}"\neffect = "deny"\n'
    "when = 'create_group_num > {count}'\n"
)


def test_a_policy_taken_in_logs_what_policy_check_warns_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The policy a replica starts with, and each one a reload swaps in, has its warnings
    (a rule reading create_group_num unguarded) logged at WARNING with its revision."""
    path = tmp_path / "policy.toml"
    path.write_text(UNGUARDED_RULE.format(id="big", count=3))
    with caplog.at_level(logging.WARNING, logger="policy_service.engine.policy_reload"):
        holder = PolicyHolder(path, load_policy(path))
        first_revision = holder.policy.revision
        started = [record.getMessage() for record in caplog.records]
        caplog.clear()
        path.write_text(UNGUARDED_RULE.format(id="huge", count=30))
        assert holder.reload()
        reloaded = [record.getMessage() for record in caplog.records]
    assert len(started) == 1
    assert started[0].startswith(f"policy {first_revision}: ")
    assert "rule 'big' field 'when': warning: create_group_num is read without" in started[0]
    assert len(reloaded) == 1
    assert reloaded[0].startswith(f"policy {holder.policy.revision}: ")
    assert "rule 'huge'" in reloaded[0]
