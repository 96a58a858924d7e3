"""The operator commands without a policy service: `sign`, argument and configuration errors,
the sample webhook bodies, output formatting, and `simulate` against the real adapter app
served over HTTP(S) in this process, with a fake policy client at its seam."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import wsgiref.simple_server
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
import uvicorn

from adapter import group_creation, group_state
from adapter.app import create_app
from adapter.group_creation import check_request
from adapter.group_state import record_request
from adapter.payload import parse_body
from adapter.policy_client import RecordRequest
from adapter.settings import DEMO_SDKAPPID, AdapterSettings, OnPolicyError
from adapter.signature import compute_sign
from adapter.spool import Spool
from adapter.webhook import Webhook
from chat_policy_cli import webhook_samples
from chat_policy_cli.decide_command import decision_lines
from chat_policy_cli.group_commands import list_lines, state_lines, watch_line
from chat_policy_cli.main import main
from chat_policy_cli.output import format_time
from chat_policy_cli.service_calls import rpc_error_line
from chat_policy_cli.webhook_commands import (
    parse_value,
    request_body,
    webhook_query,
    webhook_url,
)
from chatpolicy.v1 import creation_policy_service_pb2 as cpb
from chatpolicy.v1 import group_state_pb2 as spb
from chatpolicy.v1 import group_state_service_pb2 as gpb
from tests.adapter.chat import FakePolicyClient, FakeRpcError
from tests.waiting import wait_for

VECTOR_SIGN = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
APP = 1400000000
TOKEN = "a-callback-token"
OK_ANSWER = {"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}
SHORT_NAMES = [
    "BeforeCreateGroup",
    "AfterGroupFull",
    "AfterMemberExit",
    "AfterGroupDestroyed",
    "AfterNewMemberJoin",
]


@pytest.fixture(autouse=True)
def no_chat_policy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without CHAT_POLICY_* variables, so defaults are the documented ones."""
    for name in list(os.environ):
        if name.startswith("CHAT_POLICY_"):
            monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `chat-policy ARGV...` in-process: its exit status, stdout and stderr."""
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def simulate_signed(
    capsys: pytest.CaptureFixture[str], url: str, command: str, *extra: str
) -> tuple[int, str, str]:
    """Run `chat-policy simulate COMMAND --url URL` for APP signed with TOKEN, plus `extra`."""
    return run(
        capsys, "simulate", command, "--url", url, "--app", str(APP), "--token", TOKEN, *extra
    )


# --- sign ------------------------------------------------------------------------------------


def test_sign_prints_the_design_vector(capsys: pytest.CaptureFixture[str]) -> None:
    """Token xxxxyyyy at RequestTime 1669872112 prints DESIGN.md's Sign and nothing else."""
    assert run(capsys, "sign", "xxxxyyyy", "--time", "1669872112") == (0, VECTOR_SIGN + "\n", "")


def test_sign_json_adds_request_time_and_the_query_fragment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--json prints Sign, RequestTime and `&Sign=...&RequestTime=...` as one document."""
    status, out, _ = run(capsys, "sign", "xxxxyyyy", "--time", "1669872112", "--json")

    assert status == 0
    assert json.loads(out) == {
        "Sign": VECTOR_SIGN,
        "RequestTime": "1669872112",
        "query": f"&Sign={VECTOR_SIGN}&RequestTime=1669872112",
    }


def test_sign_defaults_to_now(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --time, RequestTime is the current Unix second, and Sign matches it."""
    before = int(time.time())
    status, out, _ = run(capsys, "sign", TOKEN, "--json")
    after = int(time.time())

    document = json.loads(out)
    assert status == 0
    assert before <= int(document["RequestTime"]) <= after
    assert document["Sign"] == compute_sign(TOKEN, document["RequestTime"])


def test_sign_reads_the_token_from_stdin_with_a_dash() -> None:
    """`sign -` reads the token from stdin (kept out of the process list and shell history)."""
    result = subprocess.run(
        [sys.executable, "-m", "chat_policy_cli.main", "sign", "-", "--time", "1669872112"],
        input="xxxxyyyy\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert (result.returncode, result.stdout, result.stderr) == (0, VECTOR_SIGN + "\n", "")


def test_sign_refuses_an_empty_token(capsys: pytest.CaptureFixture[str]) -> None:
    """An empty token signs nothing: exit 2 and one line saying so."""
    assert run(capsys, "sign", "", "--time", "1") == (
        2,
        "",
        "chat-policy sign: TOKEN must not be empty\n",
    )


# --- argument and configuration errors -----------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["groups"], "the following arguments are required: COMMAND"),
        (["groups", "get", "1400000000"], "the following arguments are required: GROUP"),
        (["groups", "get", "app", "@TGS#x"], "SdkAppid must be a whole number, got 'app'"),
        (["groups", "list", "-1"], "SdkAppid must be a whole number"),
        (["groups", "list", str(2**64)], "SdkAppid must be a whole number"),
        (["groups", "list", "1", "--limit", "0"], "must be a whole number >= 1, got '0'"),
        (["groups", "watch", "1", "--from", "-3"], "must be a whole number >= 0"),
        (["groups", "watch", "1", "--timeout", "3"], "unrecognized arguments: --timeout 3"),
        (["groups", "clear", "1"], "the following arguments are required: GROUP"),
        (["decide", "--type", "Public"], "the following arguments are required: --operator"),
        (["decide", "--operator", "a", "--timeout", "0"], "must be a number of seconds > 0"),
        (["decide", "--operator", "a", "--create-group-num", "x"], "must be a whole number >= 0"),
        (["sign", "t", "--time", "soon"], "must be Unix seconds, got 'soon'"),
        (["sign", "t", "--time", "1" * 13], "must be Unix seconds"),
        (["simulate", "AfterGroupFull"], "the following arguments are required: --url"),
        (["simulate", "X", "--url", "http://h/", "--set", "GroupId"], "must be KEY=VALUE"),
        (["simulate", "X", "--url", "http://h/", "--set", "=3"], "must be KEY=VALUE"),
        (["simulate", "X", "--url", "http://h/", "--timeout", "-1"], "seconds > 0"),
    ],
)
def test_bad_arguments_exit_2_with_a_usage_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse refuses bad arguments: exit 2, the usage and the problem on stderr."""
    with pytest.raises(SystemExit) as raised:
        main(argv)

    captured = capsys.readouterr()
    assert raised.value.code == 2
    assert captured.out == ""
    assert captured.err.startswith("usage: chat-policy ")
    assert message in captured.err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["groups", "get"], "1  the call failed: one line on stderr"),
        (["groups", "list"], "2  bad arguments or configuration"),
        (["groups", "watch"], "0  stopped with Ctrl-C (SIGINT) or SIGTERM"),
        (["groups", "clear"], "google.rpc.ErrorInfo reason"),
        (["decide"], "0  the service decided, whether it allows or denies"),
        (["decisions", "list"], "1  the call failed: one line on stderr"),
        (["policy", "show"], "2  bad arguments or configuration"),
        (["sign"], "2  bad arguments"),
        (["simulate"], "3  HTTP 200 with another ErrorCode: Chat would see a refusal"),
    ],
)
def test_help_documents_the_exit_statuses(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every operator command's --help lists its exit statuses."""
    with pytest.raises(SystemExit) as raised:
        main([*argv, "--help"])

    out = capsys.readouterr().out
    assert raised.value.code == 0
    assert "exit status:\n" in out
    assert says in out


def test_the_command_line_parser_does_not_load_grpc() -> None:
    """`chat-policy --help` stays fast: building the parser imports neither grpc nor
    protobuf; only running a command that calls the service does."""
    code = (
        "import sys; from chat_policy_cli.main import main\n"
        "try:\n    main(['groups', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('grpc', 'google.protobuf') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )

    assert result.stdout.splitlines()[-1] == "[]"


def test_an_unreadable_tls_file_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CHAT_POLICY_GRPC_TLS_CA that cannot be read: exit 2 and one line naming it."""
    missing = tmp_path / "ca.pem"
    monkeypatch.setenv("CHAT_POLICY_GRPC_TLS_CA", str(missing))

    status, out, err = run(capsys, "groups", "get", "1", "@TGS#x")

    assert (status, out) == (2, "")
    assert err == (
        f"chat-policy groups get: CHAT_POLICY_GRPC_TLS_CA={str(missing)!r}:"
        " No such file or directory\n"
    )


def test_a_bad_sdkappids_setting_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`decide` without --app reads CHAT_POLICY_SDKAPPIDS; a non-number there is exit 2."""
    monkeypatch.setenv("CHAT_POLICY_SDKAPPIDS", "demo")

    status, out, err = run(capsys, "decide", "--operator", "alice")

    assert (status, out) == (2, "")
    assert err == (
        "chat-policy decide: CHAT_POLICY_SDKAPPIDS: SdkAppid must be a whole number, got 'demo'\n"
    )


@pytest.mark.parametrize(
    ("url", "extra", "message"),
    [
        ("ftp://example.com/", [], "--url must be an http:// or https:// URL, got 'ftp://"),
        ("127.0.0.1:8080", [], "--url must be an http:// or https:// URL"),
        ("http://h/", ["--body", "/nonexistent/body.json"], "No such file or directory"),
    ],
)
def test_simulate_configuration_errors_exit_2(
    url: str, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A URL that is not http(s) or a --body that cannot be read: exit 2, nothing sent."""
    status, out, err = run(capsys, "simulate", "AfterGroupFull", "--url", url, *extra)

    assert (status, out) == (2, "")
    assert err.startswith("chat-policy simulate: ")
    assert message in err
    assert len(err.splitlines()) == 1


# --- sample bodies ---------------------------------------------------------------------------


def test_the_samples_cover_exactly_the_commands_the_adapter_handles() -> None:
    """webhook_samples' handled commands are the adapter's routing table's commands."""
    adapter_commands = {group_creation.COMMAND, *group_state.COMMANDS}
    assert set(webhook_samples.HANDLED_COMMANDS) == adapter_commands
    assert sorted(webhook_samples.SHORT_NAMES) == sorted(SHORT_NAMES)


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("BeforeCreateGroup", "Group.CallbackBeforeCreateGroup"),
        ("aftergroupfull", "Group.CallbackAfterGroupFull"),
        ("CallbackAfterMemberExit", "Group.CallbackAfterMemberExit"),
        ("Group.CallbackAfterGroupDestroyed", "Group.CallbackAfterGroupDestroyed"),
        ("group.callbackafternewmemberjoin", "Group.CallbackAfterNewMemberJoin"),
        ("Group.CallbackAfterSendMsg", "Group.CallbackAfterSendMsg"),
        ("C2C.CallbackAfterSendMsg", "C2C.CallbackAfterSendMsg"),
    ],
)
def test_commands_are_named_short_or_full_in_any_case(name: str, command: str) -> None:
    """Short and full names of handled commands resolve; other names are sent as given."""
    assert webhook_samples.resolve_command(name) == command


def webhook(command: str, body: bytes, received_ms: int = 0) -> Webhook:
    """The adapter's Webhook for a body, parsed by the adapter's own parser."""
    return Webhook(
        sdk_app_id=APP,
        command=command,
        body=parse_body(body),
        client_ip="127.0.0.1",
        opt_platform="iOS",
        request_id="r",
        received_ms=received_ms,
    )


def test_the_create_sample_is_chats_and_parses_as_a_creation_request() -> None:
    """BeforeCreateGroup's body is Chat's sample at now; the adapter reads every field."""
    now_ms = 1_700_000_000_123
    body = request_body("Group.CallbackBeforeCreateGroup", [], None, now_ms)

    request = check_request(webhook("Group.CallbackBeforeCreateGroup", body))

    assert json.loads(body)["EventTime"] == str(now_ms)  # quoted, as in Chat's samples
    assert request.operator_account == request.owner_account == "leckie"
    assert (request.group_type, request.name, request.create_group_num) == (
        "Public",
        "MyFirstGroup",
        123,
    )
    assert list(request.member_accounts) == ["bob", "peter"]
    assert request.event_time.ToMilliseconds() == now_ms


@pytest.mark.parametrize(
    ("command", "request_type"),
    [
        ("Group.CallbackAfterGroupFull", gpb.RecordGroupFullRequest),
        ("Group.CallbackAfterMemberExit", gpb.RecordMemberExitRequest),
        ("Group.CallbackAfterGroupDestroyed", gpb.RecordGroupDestroyedRequest),
    ],
)
def test_each_group_state_sample_parses_as_its_record_request(
    command: str, request_type: type[RecordRequest]
) -> None:
    """A group-state sample names a new @TGS# group at now, and every documented field has the
    type the adapter checks."""
    now_ms = 1_700_000_000_456
    body = request_body(command, [], None, now_ms)

    request = record_request(webhook(command, body, now_ms), AdapterSettings().max_event_ahead_s)

    assert isinstance(request, request_type)
    assert re.fullmatch(r"@TGS#SIM[A-Z0-9]{7}", request.group_id)
    assert request.event_time.ToMilliseconds() == now_ms
    assert list(json.loads(body))[:2] == ["CallbackCommand", "GroupId"]


def test_the_join_sample_is_checked_and_records_nothing() -> None:
    """AfterNewMemberJoin's sample passes the adapter's field checks; it is not recorded."""
    command = "Group.CallbackAfterNewMemberJoin"
    body = request_body(command, [], None, 1)

    assert record_request(webhook(command, body, 1), AdapterSettings().max_event_ahead_s) is None
    assert json.loads(body)["NewMemberList"] == [
        {"Member_Account": "jared"},
        {"Member_Account": "tommy"},
    ]


def test_another_command_gets_a_minimal_body() -> None:
    """A command the adapter does not handle is sent with its name and EventTime only."""
    body = request_body("Group.CallbackAfterSendMsg", [], None, 42)

    assert json.loads(body) == {"CallbackCommand": "Group.CallbackAfterSendMsg", "EventTime": "42"}


def test_each_sample_names_a_new_group() -> None:
    """Samples never name the same group twice, so simulations do not mix."""
    groups = {
        json.loads(request_body("Group.CallbackAfterGroupFull", [], None, 1))["GroupId"]
        for _ in range(1000)
    }

    assert len(groups) == 1000
    assert all(re.fullmatch(r"@TGS#SIM[A-Z0-9]{7}", group) for group in groups)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("3", 3),
        ("null", None),
        ('"3"', "3"),
        ("@TGS#x", "@TGS#x"),
        ("[1, 2]", [1, 2]),
        ('{"Member_Account": "bob"}', {"Member_Account": "bob"}),
        ("", ""),
        ("NaN", "NaN"),
        ("true", True),
    ],
)
def test_set_values_are_json_when_they_parse(raw: str, value: object) -> None:
    """--set VALUE is JSON if it parses as JSON (NaN does not), else the string itself."""
    assert parse_value(raw) == value


def test_set_overrides_top_level_fields_of_the_sample() -> None:
    """--set replaces or adds top-level fields; the rest of the sample stays."""
    body = request_body(
        "Group.CallbackAfterGroupFull",
        [("GroupId", "@TGS#mine"), ("TopicId", "@TGS#mine@TOPIC#t"), ("EventTime", 5)],
        None,
        1,
    )

    assert json.loads(body) == {
        "CallbackCommand": "Group.CallbackAfterGroupFull",
        "GroupId": "@TGS#mine",
        "TopicId": "@TGS#mine@TOPIC#t",
        "EventTime": 5,
    }


def test_body_file_is_sent_byte_for_byte_or_with_set_fields(tmp_path: Path) -> None:
    """--body sends the file's bytes as they are; with --set, its JSON object is changed."""
    raw = tmp_path / "raw.txt"
    raw.write_bytes(b"not json \xff")
    document = tmp_path / "body.json"
    document.write_text('{"CallbackCommand": "Group.CallbackAfterGroupFull", "GroupId": "g"}')

    assert request_body("Group.CallbackAfterGroupFull", [], str(raw), 1) == b"not json \xff"
    assert json.loads(request_body("X", [("GroupId", "h")], str(document), 1)) == {
        "CallbackCommand": "Group.CallbackAfterGroupFull",
        "GroupId": "h",
    }


def test_the_query_is_chats_in_chats_order() -> None:
    """SdkAppid, CallbackCommand, contenttype, ClientIP, OptPlatform, then Sign, RequestTime."""
    query = webhook_query(
        app=APP,
        command="Group.CallbackAfterGroupFull",
        client_ip="203.0.113.7",
        platform="Web",
        token="xxxxyyyy",
        now_s=1669872112,
    )

    assert query == (
        "SdkAppid=1400000000&CallbackCommand=Group.CallbackAfterGroupFull&contenttype=json"
        f"&ClientIP=203.0.113.7&OptPlatform=Web&Sign={VECTOR_SIGN}&RequestTime=1669872112"
    )


def test_without_token_or_optional_parameters_the_query_leaves_them_out() -> None:
    """No token: no Sign/RequestTime; empty ClientIP/OptPlatform: absent, as Chat may do."""
    query = webhook_query(app=1, command="C", client_ip="", platform="", token="", now_s=1)

    assert query == "SdkAppid=1&CallbackCommand=C&contenttype=json"


def test_the_query_is_added_to_a_url_that_has_one() -> None:
    """A callback URL with its own query keeps it; a fragment is dropped."""
    assert webhook_url("https://h.example/cb?x=1#f", "SdkAppid=1") == (
        "https://h.example/cb?x=1&SdkAppid=1"
    )
    assert webhook_url("http://h:8080", "SdkAppid=1") == "http://h:8080?SdkAppid=1"


# --- output formatting -----------------------------------------------------------------------


def ts(ms: int) -> Any:
    """A Timestamp at `ms` Unix milliseconds."""
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


FULL_STATE = spb.GroupState(
    sdk_app_id=APP,
    group_id="@TGS#2J4SZEAEL",
    full=True,
    full_since=ts(1670574414123),
    last_event_time=ts(1670574415000),
    full_event_count=3,
    last_event_kind=spb.GROUP_EVENT_KIND_FULL,
)


def test_times_are_rfc3339_utc_with_milliseconds() -> None:
    """Timestamps print as `YYYY-MM-DDTHH:MM:SS.mmmZ`; an unset one as `-`."""
    assert format_time(ts(1670574414123)) == "2022-12-09T08:26:54.123Z"
    assert format_time(ts(1670574414000)) == "2022-12-09T08:26:54.000Z"
    assert format_time(ts(0)) == "-"


def test_a_state_prints_as_aligned_key_value_lines() -> None:
    """`groups get` prints every field of the state in words."""
    assert state_lines(FULL_STATE) == [
        "app           1400000000",
        "group         @TGS#2J4SZEAEL",
        "topic         -",
        "full          yes, since 2022-12-09T08:26:54.123Z",
        "full events   3",
        "last event    full at 2022-12-09T08:26:55.000Z",
        "destroyed     no",
        "clear reason  -",
    ]


def test_full_groups_print_as_a_table_with_a_count() -> None:
    """`groups list`: a header, a row per group (topic after the group), and a count line."""
    topic = spb.GroupState(
        sdk_app_id=7,
        group_id="@TGS#c",
        topic_id="@TGS#c@TOPIC#t",
        full=True,
        full_since=ts(1670574416000),
        last_event_time=ts(1670574416000),
        full_event_count=12,
    )

    assert list_lines([FULL_STATE, topic], more=False) == [
        "FULL SINCE                APP         FULL EVENTS  LAST EVENT                GROUP",
        "2022-12-09T08:26:54.123Z  1400000000            3  2022-12-09T08:26:55.000Z"
        "  @TGS#2J4SZEAEL",
        "2022-12-09T08:26:56.000Z  7                    12  2022-12-09T08:26:56.000Z"
        "  @TGS#c topic @TGS#c@TOPIC#t",
        "2 full groups",
    ]
    assert list_lines([FULL_STATE], more=True)[-1] == (
        "1 full group shown; there are more: --all lists every one"
    )
    assert list_lines([], more=False) == ["no full groups"]


@pytest.mark.parametrize(
    ("state", "summary"),
    [
        (FULL_STATE, "full since 2022-12-09T08:26:54.123Z (3 full events)"),
        (
            spb.GroupState(
                group_id="g",
                last_event_time=ts(1000),
                last_event_kind=spb.GROUP_EVENT_KIND_MEMBER_EXIT,
            ),
            "not full: a member left at 1970-01-01T00:00:01.000Z",
        ),
        (
            spb.GroupState(
                group_id="g",
                destroyed=True,
                last_event_time=ts(1000),
                last_event_kind=spb.GROUP_EVENT_KIND_DESTROYED,
            ),
            "destroyed at 1970-01-01T00:00:01.000Z",
        ),
        (
            spb.GroupState(
                group_id="g",
                last_event_time=ts(1000),
                last_event_kind=spb.GROUP_EVENT_KIND_CLEARED,
                clear_reason="limit raised",
            ),
            "not full: cleared at 1970-01-01T00:00:01.000Z (limit raised)",
        ),
    ],
)
def test_a_watched_change_is_one_line(state: spb.GroupState, summary: str) -> None:
    """`groups watch`: sequence, change time, app, group and the state in words."""
    change = gpb.GroupStateChange(sequence=42, group_state=state, change_time=ts(1670574420000))

    line = watch_line(change, as_json=False)

    assert line == (
        f"42  2022-12-09T08:27:00.000Z  {state.sdk_app_id}  {state.group_id}  {summary}"
    )


def test_a_watched_change_in_json_is_one_line_with_proto_field_names() -> None:
    """`groups watch --json`: one compact JSON object per change, every field present."""
    change = gpb.GroupStateChange(
        sequence=42, group_state=FULL_STATE, change_time=ts(1670574420000), forgotten=True
    )

    line = watch_line(change, as_json=True)

    document = json.loads(line)
    assert "\n" not in line
    assert document["sequence"] == "42"  # uint64 is a string in protobuf's JSON
    assert document["forgotten"] is True
    assert document["group_state"]["group_id"] == "@TGS#2J4SZEAEL"
    assert document["group_state"]["full_since"] == "2022-12-09T08:26:54.123Z"
    assert document["group_state"]["destroyed"] is False
    assert document["group_state"]["topic_id"] == ""
    watch_forgotten = watch_line(change, as_json=False)
    assert watch_forgotten.endswith("(3 full events) (forgotten)")


def test_a_decision_prints_with_its_evaluations() -> None:
    """`decide --explain`: the decision's fields, the shadow rules, then a row per rule."""
    response = cpb.CheckGroupCreationResponse(
        decision=cpb.DECISION_DENY,
        error_code=10101,
        error_info="Public groups can only be created from the mobile apps.",
        rule_id="public-groups-from-the-apps",
        reason="platform 'Web' may not create 'Public' groups",
        policy_revision="sha256:0123456789abcdef",
        decision_id="18eaafcc29feb14f",
        shadow_rule_ids=["night"],
        evaluations=[
            cpb.RuleEvaluation(
                rule_id="admins", kind="match", result=cpb.RULE_RESULT_NOT_APPLICABLE
            ),
            cpb.RuleEvaluation(
                rule_id="public-groups-from-the-apps",
                kind="platform_types",
                result=cpb.RULE_RESULT_DECIDED,
                reason="platform 'Web' may not create 'Public' groups",
            ),
        ],
    )

    assert decision_lines(response) == [
        "decision      deny",
        "error_code    10101",
        "error_info    Public groups can only be created from the mobile apps.",
        "rule          public-groups-from-the-apps",
        "reason        platform 'Web' may not create 'Public' groups",
        "revision      sha256:0123456789abcdef",
        "decision id   18eaafcc29feb14f",
        "shadow rules  night",
        "evaluations:",
        "  admins                       match           not applicable",
        "  public-groups-from-the-apps  platform_types  decided"
        "         platform 'Web' may not create 'Public' groups",
    ]


def test_an_rpc_error_is_one_line_with_its_reason_and_the_target_when_unreachable() -> None:
    """Code, details and reason; UNAVAILABLE and DEADLINE_EXCEEDED also name the target."""
    not_found = {
        "code": "NOT_FOUND",
        "details": "group '@TGS#x' of SdkAppid 1 is not known",
        "reason": "ERROR_REASON_GROUP_NOT_FOUND",
    }
    unavailable = {"code": "UNAVAILABLE", "details": "failed to connect to all addresses"}

    assert rpc_error_line(not_found, "t:1") == (
        "NOT_FOUND: group '@TGS#x' of SdkAppid 1 is not known (ERROR_REASON_GROUP_NOT_FOUND)"
    )
    assert rpc_error_line(unavailable, "t:1") == (
        "UNAVAILABLE: failed to connect to all addresses (target t:1)"
    )
    assert rpc_error_line({"code": "DEADLINE_EXCEEDED", "details": ""}, "t:1") == (
        "DEADLINE_EXCEEDED: (no details) (target t:1)"
    )


# --- simulate against the real adapter app, over HTTP and HTTPS ------------------------------


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Adapter:
    """The adapter app served on a free loopback port, with its fake policy client."""

    url: str
    fake: FakePolicyClient


@pytest.fixture
def serve_adapter(tmp_path: Path) -> Iterator[Any]:
    """Start the real adapter app (tokens on, SdkAppid APP, and `overrides` of its settings)
    under uvicorn over HTTP, or HTTPS with a given server context; stopped after the test."""
    servers: list[tuple[uvicorn.Server, threading.Thread, Spool]] = []

    def start(
        tls: ssl.SSLContext | None = None, host: str = "127.0.0.1", **overrides: Any
    ) -> Adapter:
        settings = AdapterSettings(
            **{
                "sdk_app_ids": frozenset({APP}),
                "sdk_app_ids_configured": True,
                "callback_tokens": (TOKEN,),
                "data_dir": tmp_path / f"adapter{len(servers)}",
                **overrides,
            }
        )
        fake = FakePolicyClient()
        spool = Spool(settings.spool_path, settings.spool_max_events)
        config = uvicorn.Config(
            create_app(settings, fake, spool, lambda: None),
            lifespan="off",
            access_log=False,
            log_config=None,
        )
        config.load()
        config.ssl = tls  # uvicorn makes its own context from files; this one is made already
        listener = socket.create_server(("127.0.0.1", 0))
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=asyncio.run, args=(server.serve(sockets=[listener]),), daemon=True
        )
        thread.start()
        wait_for(lambda: server.started, 10, "uvicorn to serve")
        servers.append((server, thread, spool))
        scheme = "https" if tls is not None else "http"
        return Adapter(f"{scheme}://{host}:{listener.getsockname()[1]}/", fake)

    yield start
    for server, thread, spool in servers:
        server.should_exit = True
        thread.join()
        spool.close()


@pytest.mark.parametrize("name", SHORT_NAMES)
def test_simulate_sends_each_handled_command_and_shows_the_answer(
    name: str, serve_adapter: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each handled command, signed with the token: the adapter answers 200 with ErrorCode 0
    (exit 0), and the output shows what was sent, the status, the request ID and the answer."""
    adapter = serve_adapter()

    status, out, err = simulate_signed(capsys, adapter.url, name)

    lines = out.splitlines()
    command = webhook_samples.resolve_command(name)
    assert (status, err) == (0, "")
    assert lines[0].startswith(f"> POST {adapter.url}?SdkAppid={APP}&CallbackCommand={command}&")
    assert "&Sign=" in lines[0] and "&RequestTime=" in lines[0]
    assert json.loads(lines[1].removeprefix("> "))["CallbackCommand"] == command
    assert re.fullmatch(r"< HTTP 200 OK, X-Request-ID [0-9a-f]{32}", lines[2])
    assert json.loads(lines[3].removeprefix("< ")) == OK_ANSWER
    outcome = {"BeforeCreateGroup": "allowed", "AfterNewMemberJoin": "acknowledged"}
    assert lines[4:] == [f"ok: ErrorCode 0 ({outcome.get(name, 'recorded')}; signature checked)"]
    recorded = name != "AfterNewMemberJoin"
    assert len(adapter.fake.calls) == (1 if recorded else 0)


def test_simulate_exits_3_when_chat_would_see_a_refusal(
    serve_adapter: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A creation the policy refuses is HTTP 200 with the refusal's ErrorCode: exit 3."""
    adapter = serve_adapter()
    adapter.fake.creation = cpb.CheckGroupCreationResponse(
        decision=cpb.DECISION_DENY, error_code=10101, error_info="No public groups."
    )

    status, out, _ = simulate_signed(
        capsys,
        adapter.url,
        "BeforeCreateGroup",
        "--platform",
        "Web",
        "--set",
        "Name=Book club",
    )

    ((request, _),) = adapter.fake.calls
    assert status == 3
    assert out.splitlines()[-2:] == [
        '< {"ActionStatus":"OK","ErrorCode":10101,"ErrorInfo":"No public groups."}',
        "refused: ErrorCode 10101, ErrorInfo 'No public groups.'",
    ]
    assert (request.opt_platform, request.name, request.client_ip) == (
        "Web",
        "Book club",
        "127.0.0.1",
    )


def test_simulate_signs_with_the_first_configured_token_and_app_by_default(
    serve_adapter: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --token and --app, the first of CHAT_POLICY_CALLBACK_TOKENS and of
    CHAT_POLICY_SDKAPPIDS are used, as a local `scripts/run` is configured."""
    adapter = serve_adapter()
    monkeypatch.setenv("CHAT_POLICY_CALLBACK_TOKENS", f" {TOKEN} , old-token")
    monkeypatch.setenv("CHAT_POLICY_SDKAPPIDS", f"{APP},1400000001")

    status, out, _ = run(capsys, "simulate", "AfterGroupFull", "--url", adapter.url, "--json")

    document = json.loads(out)
    assert status == 0
    assert f"?SdkAppid={APP}&" in document["request"]["url"]
    assert document["response"]["http_status"] == 200
    assert document["response"]["answer"] == OK_ANSWER
    assert re.fullmatch(r"[0-9a-f]{32}", document["response"]["request_id"])
    assert document["outcome"] == "ok"


def test_simulate_with_the_wrong_token_shows_the_401_answer_and_exits_1(
    serve_adapter: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Sign the adapter refuses: HTTP 401 with its FAIL answer shown, exit 1."""
    adapter = serve_adapter()

    status, out, _ = run(
        capsys, "simulate", "AfterGroupFull", "--url", adapter.url, "--token", "wrong"
    )

    assert status == 1
    assert re.fullmatch(r"< HTTP 401 Unauthorized, X-Request-ID [0-9a-f]{32}", out.splitlines()[2])
    assert out.splitlines()[3:] == [
        '< {"ActionStatus":"FAIL","ErrorCode":401,'
        '"ErrorInfo":"webhook signature rejected: Sign does not match"}',
        "failed: HTTP 401 (unauthenticated)",
    ]
    assert adapter.fake.calls == []


def test_simulate_uses_the_demo_app_without_configuration(
    serve_adapter: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --app and CHAT_POLICY_SDKAPPIDS the demo SdkAppid is sent."""
    adapter = serve_adapter()

    status, out, _ = run(capsys, "simulate", "AfterGroupFull", "--url", adapter.url, "--json")

    document = json.loads(out)
    assert f"?SdkAppid={DEMO_SDKAPPID}&" in document["request"]["url"]
    assert "Sign=" not in document["request"]["url"]  # no token configured: unsigned
    assert (status, document["response"]["http_status"]) == (1, 401)


DOWN = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")


@pytest.mark.parametrize(
    ("command", "settings", "outcome", "line"),
    [
        (
            "BeforeCreateGroup",
            {},
            "fail-open",
            "failed: the policy service could not decide; the adapter allowed it by"
            " CHAT_POLICY_ON_POLICY_ERROR=allow (fail-open)",
        ),
        (
            "BeforeCreateGroup",
            {"on_policy_error": OnPolicyError.DENY},
            "fail-closed",
            "failed: the policy service could not decide; the adapter refused it by"
            " CHAT_POLICY_ON_POLICY_ERROR=deny (fail-closed)",
        ),
        (
            "AfterGroupFull",
            {},
            "spooled",
            "failed: the adapter spooled the event: the policy service is away (the adapter"
            " replays it when the service is back)",
        ),
    ],
)
def test_simulate_fails_when_the_adapter_answered_without_the_policy_service(
    serve_adapter: Any,
    capsys: pytest.CaptureFixture[str],
    command: str,
    settings: dict[str, Any],
    outcome: str,
    line: str,
) -> None:
    """An answer the adapter gave while the policy service was down (fail-open, fail-closed,
    spooled) is no working setup, whatever its ErrorCode: exit 1 with a line saying so."""
    adapter = serve_adapter(**settings)
    adapter.fake.error = DOWN

    status, out, _ = simulate_signed(capsys, adapter.url, command)
    json_status, json_out, _ = simulate_signed(capsys, adapter.url, command, "--json")

    document = json.loads(json_out)
    assert (status, out.splitlines()[-1]) == (1, line)
    assert (json_status, document["outcome"], document["verdict"]) == (1, "failed", [line])
    assert document["response"]["outcome"] == outcome
    assert document["response"]["signature"] == "checked"


def test_simulate_with_a_token_fails_when_the_adapter_checks_no_signatures(
    serve_adapter: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token sent to an adapter without CHAT_POLICY_CALLBACK_TOKENS tested nothing: exit 1
    saying so, although the webhook itself was recorded."""
    adapter = serve_adapter(callback_tokens=())

    status, out, _ = simulate_signed(capsys, adapter.url, "AfterGroupFull", "--json")

    document = json.loads(out)
    assert status == 1
    assert document["response"]["answer"] == OK_ANSWER
    assert (document["response"]["outcome"], document["response"]["signature"]) == (
        "recorded",
        "unchecked",
    )
    assert document["verdict"] == [
        "failed: the adapter does not check signatures (CHAT_POLICY_CALLBACK_TOKENS is unset"
        " there), so the token was not tested"
    ]
    assert len(adapter.fake.calls) == 1


def test_simulate_without_a_token_is_ok_with_an_adapter_that_checks_no_signatures(
    serve_adapter: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unsigned against an adapter that checks no signatures: exit 0, the last line says
    signatures are unchecked."""
    adapter = serve_adapter(callback_tokens=())

    status, out, _ = run(
        capsys, "simulate", "AfterGroupFull", "--url", adapter.url, "--app", str(APP)
    )

    assert (status, out.splitlines()[-1]) == (0, "ok: ErrorCode 0 (recorded; signature unchecked)")


@pytest.mark.parametrize(
    ("answer", "status", "line"),
    [
        (OK_ANSWER, 0, "ok: ErrorCode 0"),
        ({**OK_ANSWER, "ErrorCode": 10101}, 3, "refused: ErrorCode 10101, ErrorInfo ''"),
    ],
)
def test_simulate_judges_an_answer_without_the_headers_by_its_error_code(
    capsys: pytest.CaptureFixture[str], answer: dict[str, object], status: int, line: str
) -> None:
    """An answer without X-Chat-Policy-Outcome and X-Chat-Policy-Signature (an older adapter,
    a proxy) is judged by its status and ErrorCode alone, signed or not."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(answer).encode()]

    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        got, out, _ = simulate_signed(capsys, url, "BeforeCreateGroup", "--json")
    finally:
        server.shutdown()
        thread.join()
        server.server_close()

    document = json.loads(out)
    assert (got, document["verdict"]) == (status, [line])
    assert (document["response"]["outcome"], document["response"]["signature"]) == (None, None)


@pytest.fixture
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """A certificate authority the system trusts for this test (SSL_CERT_FILE)."""
    authority = trustme.CA()
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    return authority


def test_simulate_speaks_https_with_the_system_cas(
    ca: trustme.CA, serve_adapter: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """An https:// URL whose certificate chains to a CA the system trusts works."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    adapter = serve_adapter(tls=context, host="localhost")

    status, out, _ = simulate_signed(capsys, adapter.url, "AfterGroupFull")

    assert status == 0
    assert out.splitlines()[-1] == "ok: ErrorCode 0 (recorded; signature checked)"
    assert len(adapter.fake.calls) == 1


def test_simulate_refuses_a_certificate_the_system_does_not_trust(
    ca: trustme.CA, serve_adapter: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A certificate from an unknown CA: exit 1, one line saying it failed verification."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost").configure_cert(context)
    adapter = serve_adapter(tls=context, host="localhost")

    status, out, err = run(capsys, "simulate", "AfterGroupFull", "--url", adapter.url)

    assert (status, out) == (1, "")
    assert err.startswith(f"chat-policy simulate: cannot reach {adapter.url}: ")
    assert "CERTIFICATE_VERIFY_FAILED" in err
    assert len(err.splitlines()) == 1


def test_simulate_gives_up_after_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    """A server that accepts the connection but never answers: exit 1 after --timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/cb"
        started = time.monotonic()

        status, out, err = run(
            capsys, "simulate", "AfterGroupFull", "--url", url, "--timeout", "0.3"
        )

        assert time.monotonic() - started < 5
    assert (status, out) == (1, "")
    assert err == f"chat-policy simulate: no answer from {url} within 0.3s\n"


def test_simulate_says_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    """A refused connection: exit 1 and one line, no traceback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"

    status, out, err = run(capsys, "simulate", "AfterGroupFull", "--url", url, "--json")

    assert status == 1
    assert json.loads(out)["error"] == f"cannot reach {url}: Connection refused"
    assert err == f"chat-policy simulate: cannot reach {url}: Connection refused\n"


def test_simulate_notes_a_command_the_adapter_ignores(
    serve_adapter: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any other command is sent with a minimal body and acknowledged: exit 0, with a note."""
    adapter = serve_adapter()

    status, out, err = simulate_signed(capsys, adapter.url, "Group.CallbackAfterSendMsg")

    assert status == 0
    assert "does not act on 'Group.CallbackAfterSendMsg'" in err
    assert out.splitlines()[-1] == "ok: ErrorCode 0 (ignored; signature checked)"
    assert adapter.fake.calls == []


def test_simulate_sends_a_body_file_as_it_is(
    tmp_path: Path, serve_adapter: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """--body sends the file: a body that is not JSON gets the adapter's 400, exit 1."""
    adapter = serve_adapter()
    body = tmp_path / "body.txt"
    body.write_text("not json\nat all\n")

    status, out, _ = simulate_signed(
        capsys,
        adapter.url,
        "AfterGroupFull",
        "--body",
        str(body),
    )

    lines = out.splitlines()
    assert status == 1
    assert lines[1:3] == ["> not json", "> at all"]
    assert lines[3].startswith("< HTTP 400 Bad Request")
    assert json.loads(lines[4].removeprefix("< "))["ErrorCode"] == 400
    assert lines[5] == "failed: HTTP 400 (malformed_request)"
