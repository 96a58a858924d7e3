"""`decide` (dry by default, --live), `policy show` and `decisions list` as an operator runs
them against a real `chat-policy service` on a free port."""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from chat_policy_shared.channel import ChannelSecurity, open_channel
from chatpolicy.v1 import creation_policy_service_pb2 as pb
from chatpolicy.v1 import creation_policy_service_pb2_grpc as rpc
from tests.e2e.deployment import Deployment
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

APP = 1400000000
OTHER_APP = 1400000777
RATE_LIMITED = """version = 1

[[rules]]
id = "names"
kind = "name"
banned_words = ["casino"]
error_code = 10103
error_info = "Choose another name."

[[rules]]
id = "one-an-hour"
kind = "rate_limit"
limit = 1
window = "1h"
error_code = 10107
error_info = "Too fast."
"""


def succeeded(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The result, once it is known to have exited 0 without a word on stderr."""
    assert (result.returncode, result.stderr) == (0, ""), result.stdout + result.stderr
    return result


def as_json(deployment: Deployment, *args: str) -> Any:
    """`chat-policy ARGS... --json`, which must succeed, as data."""
    return json.loads(succeeded(deployment.command(*args, "--json")).stdout)


def listed(deployment: Deployment, *filters: str) -> list[dict[str, Any]]:
    """`decisions list --all` with the filters: the decisions, newest first."""
    decisions: list[dict[str, Any]] = as_json(deployment, "decisions", "list", "--all", *filters)[
        "decisions"
    ]
    return decisions


def service_lines(deployment: Deployment) -> list[dict[str, Any]]:
    """The service's JSON log lines so far."""
    return [
        json.loads(line) for line in deployment.log("service").splitlines() if line.startswith("{")
    ]


@pytest.fixture
def rate_limited(deployment: Deployment, tmp_path: Path) -> Deployment:
    """The service running RATE_LIMITED from a file: one creation an hour per operator."""
    policy = tmp_path / "policy.toml"
    policy.write_text(RATE_LIMITED)
    deployment.env["CHAT_POLICY_POLICY_FILE"] = str(policy)
    deployment.start_service()
    return deployment


def test_decide_is_a_dry_run_unless_live(rate_limited: Deployment) -> None:
    """Dry runs take no slot of a limit of 1, are marked on the service's log line and are
    neither listed nor counted; --live takes the slot and is listed; then a dry run says
    deny."""
    deployment = rate_limited
    for _ in range(3):
        dry = succeeded(deployment.command("decide", "--operator", "alice"))
        assert dry.stdout.splitlines()[0] == "decision     allow"
        assert "dry run" in dry.stdout
        assert "evaluations:" in dry.stdout
    dry_document = as_json(deployment, "decide", "--operator", "alice")
    assert (dry_document["decision"], dry_document["dry_run"]) == ("DECISION_ALLOW", True)

    live = as_json(deployment, "decide", "--operator", "alice", "--live")
    assert (live["decision"], live["dry_run"]) == ("DECISION_ALLOW", False)
    refused = succeeded(deployment.command("decide", "--operator", "alice"))
    assert refused.stdout.splitlines()[:4] == [
        "decision     deny",
        "error_code   10107",
        "error_info   Too fast.",
        "rule         one-an-hour",
    ]
    assert "dry run" in refused.stdout
    assert as_json(deployment, "decide", "--operator", "alice", "--live")["rule_id"] == (
        "one-an-hour"
    )

    wait_for(lambda: len(listed(deployment)) == 2, 20, "the two live decisions to be listed")
    newest, oldest = listed(deployment)
    assert oldest["decision_id"] == live["decision_id"]
    assert (newest["decision"], newest["rule_id"]) == ("DECISION_DENY", "one-an-hour")
    stats = as_json(deployment, "policy", "show")["rule_stats"]
    # uint64 fields are strings in protobuf's JSON mapping.
    assert [(s["rule_id"], s["decided"]) for s in stats] == [
        ("default", "1"),
        ("one-an-hour", "1"),
    ]
    decided = {
        line["decision_id"]: line.get("dry_run")
        for line in service_lines(deployment)
        if "decision_id" in line
    }
    assert decided[dry_document["decision_id"]] is True
    assert decided[live["decision_id"]] is False


def test_policy_show_describes_the_running_policy_and_follows_a_reload(
    rate_limited: Deployment, tmp_path: Path
) -> None:
    """`policy show` names the revision `policy check` computes, the file and the rules in
    order; after the file changes, the new revision; after an invalid change, the error."""
    deployment = rate_limited
    policy = tmp_path / "policy.toml"
    checked = succeeded(deployment.command("policy", "check", str(policy))).stdout
    revision = checked.split("revision ")[1].strip()

    lines = succeeded(deployment.command("policy", "show")).stdout.splitlines()
    assert lines[:2] == [f"revision     {revision}", f"source       {policy}"]
    assert lines[3] == "last reload  none tried"
    assert [line.split()[0] for line in lines[-3:]] == ["names", "one-an-hour", "default"]
    shown = as_json(deployment, "policy", "show")
    assert (shown["policy_revision"], shown["rule_ids"]) == (revision, ["names", "one-an-hour"])

    policy.write_text(RATE_LIMITED.replace('"casino"', '"casino", "poker"'))
    wait_for(
        lambda: as_json(deployment, "policy", "show")["policy_revision"] != revision,
        20,
        "the service to reload the changed policy",
    )
    reloaded = succeeded(deployment.command("policy", "show")).stdout.splitlines()
    new_revision = succeeded(deployment.command("policy", "check", str(policy))).stdout
    assert reloaded[0] == f"revision     {new_revision.split('revision ')[1].strip()}"
    assert reloaded[3].endswith(", ok")

    policy.write_text("version = 1\n[[rules]]\nid = 'x'\nkind = 'nope'\n")
    wait_for(
        lambda: as_json(deployment, "policy", "show")["last_reload_error"] != "",
        20,
        "the service to refuse the invalid policy",
    )
    refused = succeeded(deployment.command("policy", "show")).stdout.splitlines()
    assert refused[0].split() == reloaded[0].split()
    assert refused[3].endswith(", refused, kept the revision above")
    assert refused[4].startswith("reload error  ")


def test_decisions_list_filters_and_pages(deployment: Deployment, tmp_path: Path) -> None:
    """More decisions than a page holds are listed page after page, newest first, each once;
    every filter keeps only its matches."""
    policy = tmp_path / "policy.toml"
    policy.write_text(RATE_LIMITED.split('[[rules]]\nid = "one-an-hour"')[0])
    deployment.env["CHAT_POLICY_POLICY_FILE"] = str(policy)
    deployment.start_service()
    with open_channel(deployment.grpc_target, ChannelSecurity.from_env(deployment.env)) as channel:
        stub = rpc.CreationPolicyServiceStub(channel)
        for number in range(1000):
            stub.CheckGroupCreation(
                pb.CheckGroupCreationRequest(sdk_app_id=APP, operator_account=f"u{number}"),
                timeout=5,
            )
        refused = stub.CheckGroupCreation(
            pb.CheckGroupCreationRequest(sdk_app_id=APP, operator_account="bob", name="casino"),
            timeout=5,
        )
        other = stub.CheckGroupCreation(
            pb.CheckGroupCreationRequest(sdk_app_id=OTHER_APP, operator_account="bob"),
            timeout=5,
        )
    wait_for(lambda: len(listed(deployment)) == 1002, 20, "1,002 decisions to be listed")

    every = listed(deployment)
    assert len({d["decision_id"] for d in every}) == 1002
    times = [datetime.datetime.fromisoformat(d["decided_at"]) for d in every]
    assert times == sorted(times, reverse=True)
    assert [d["decision_id"] for d in every[:2]] == [other.decision_id, refused.decision_id]

    text = succeeded(deployment.command("decisions", "list", "--limit", "1001")).stdout
    lines = text.splitlines()
    assert len(lines) == 1 + 1001 + 1
    assert lines[0].split()[:3] == ["DECIDED", "AT", "APP"]
    assert lines[-1] == "1001 decisions shown; there are more: --all lists every one"
    assert as_json(deployment, "decisions", "list", "--limit", "3")["next_page_token"] != ""

    ids = lambda *filters: [d["decision_id"] for d in listed(deployment, *filters)]  # noqa: E731
    assert ids("--operator", "bob") == [other.decision_id, refused.decision_id]
    assert ids("--decision", "deny") == [refused.decision_id]
    assert ids("--rule", "names") == [refused.decision_id]
    assert ids("--app", str(OTHER_APP)) == [other.decision_id]
    assert ids("--id", refused.decision_id) == [refused.decision_id]
    assert len(ids("--decision", "allow", "--app", str(APP))) == 1000
    # Both bounds are inclusive: each keeps one end of the listing, the middle one in both.
    middle = every[500]
    since, until = ids("--since", middle["decided_at"]), ids("--until", middle["decided_at"])
    every_id = [d["decision_id"] for d in every]
    assert since == every_id[: len(since)] and until == every_id[-len(until) :]
    assert middle["decision_id"] in since and middle["decision_id"] in until
    assert len(since) < 1002 and len(until) < 1002
    refused_row = succeeded(
        deployment.command("decisions", "list", "--id", refused.decision_id)
    ).stdout.splitlines()
    # (The caller column is checked where the store keeps callers.)
    assert refused_row[1].split()[1:5] == [str(APP), "bob", "deny", "names"]
    assert refused_row[1].endswith("name contains banned word 'casino'")
    assert refused_row[-1] == "1 decision"
