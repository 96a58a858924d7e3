"""The operator commands as an operator runs them (`python -m chat_policy_cli.main ...`) against
a real deployment: `chat-policy service` and `chat-policy adapter` on free ports, callback
token on, shared by the tests of this module."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from bench.processes import free_port
from tests.e2e.deployment import Deployment, new_deployment

pytestmark = pytest.mark.e2e

APP = 1400187352
TOKEN = "operator-test-token"
EXAMPLE_POLICY = Path(__file__).parents[2] / "examples" / "policy.toml"
OK_ANSWER = {"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}
CLI = [sys.executable, "-m", "chat_policy_cli.main"]
OUTCOMES = {
    "BeforeCreateGroup": "allowed",
    "AfterNewMemberJoin": "acknowledged",
    "Group.CallbackAfterSendMsg": "ignored",
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One deployment (service and adapter, token and SdkAppid configured, the default
    policy) for every test of this module; each test uses groups of its own."""
    tmp_path = tmp_path_factory.mktemp("operator-commands")
    deployment = new_deployment(
        tmp_path,
        CHAT_POLICY_HTTP_WORKERS="1",
        CHAT_POLICY_SDKAPPIDS=str(APP),
        CHAT_POLICY_CALLBACK_TOKENS=TOKEN,
    )
    try:
        deployment.start_service()
        deployment.start_adapter()
        yield deployment
    finally:
        deployment.stop_all()


def url(deployment: Deployment) -> str:
    """The adapter's callback URL."""
    return f"http://127.0.0.1:{deployment.http_port}/"


def simulate_full(deployment: Deployment, group_id: str) -> None:
    """Chat says the group is full, through the adapter."""
    result = deployment.command(
        "simulate",
        "AfterGroupFull",
        "--url",
        url(deployment),
        "--set",
        f"GroupId={group_id}",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    """Nothing on stderr looks like a Python traceback."""
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        "BeforeCreateGroup",
        "AfterGroupFull",
        "AfterMemberExit",
        "AfterGroupDestroyed",
        "AfterNewMemberJoin",
        "Group.CallbackAfterSendMsg",
    ],
)
def test_simulate_gets_ok_for_every_command(shared: Deployment, command: str) -> None:
    """Each handled command, and one the adapter ignores, signed with the configured token:
    HTTP 200, an X-Request-ID, ErrorCode 0, what the adapter did and that it checked the
    signature; exit 0."""
    result = shared.command("simulate", command, "--url", url(shared), "--json")

    document = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert document["response"]["http_status"] == 200
    assert re.fullmatch(r"[0-9a-f]{32}", document["response"]["request_id"])
    assert document["response"]["answer"] == OK_ANSWER
    assert document["response"]["signature"] == "checked"
    assert document["response"]["outcome"] == OUTCOMES.get(command, "recorded")
    assert f"SdkAppid={APP}&" in document["request"]["url"]
    assert "&Sign=" in document["request"]["url"]


def test_simulate_prints_status_request_id_and_answer(shared: Deployment) -> None:
    """The text output: what was sent, `HTTP 200 OK, X-Request-ID ...`, the answer, ok."""
    result = shared.command("simulate", "BeforeCreateGroup", "--url", url(shared))

    lines = result.stdout.splitlines()
    assert result.returncode == 0
    assert lines[0].startswith(f"> POST {url(shared)}?SdkAppid={APP}&CallbackCommand=Group.")
    assert re.fullmatch(r"< HTTP 200 OK, X-Request-ID [0-9a-f]{32}", lines[2])
    assert lines[3:] == [
        f"< {json.dumps(OK_ANSWER, separators=(',', ':'))}",
        "ok: ErrorCode 0 (allowed; signature checked)",
    ]


def test_simulate_with_a_wrong_token_shows_the_adapters_refusal(shared: Deployment) -> None:
    """A token the adapter does not have: its 401 answer is shown and the exit status is 1."""
    result = shared.command("simulate", "AfterGroupFull", "--url", url(shared), "--token", "wrong")

    lines = result.stdout.splitlines()
    assert result.returncode == 1
    assert re.fullmatch(r"< HTTP 401 Unauthorized, X-Request-ID [0-9a-f]{32}", lines[2])
    assert json.loads(lines[3].removeprefix("< ")) == {
        "ActionStatus": "FAIL",
        "ErrorCode": 401,
        "ErrorInfo": "webhook signature rejected: Sign does not match",
    }
    assert lines[4] == "failed: HTTP 401 (unauthenticated)"
    no_traceback(result)


@pytest.fixture(scope="module")
def adapter_alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """An adapter without CHAT_POLICY_CALLBACK_TOKENS whose policy service is not running."""
    deployment = new_deployment(
        tmp_path_factory.mktemp("adapter-alone"),
        CHAT_POLICY_HTTP_WORKERS="1",
        CHAT_POLICY_SDKAPPIDS=str(APP),
    )
    try:
        deployment.start_adapter()
        yield deployment
    finally:
        deployment.stop_all()


def test_simulate_fails_on_a_creation_the_adapter_allowed_without_the_service(
    adapter_alone: Deployment,
) -> None:
    """The policy service stopped: Chat would see ErrorCode 0, but only because the adapter
    failed open; simulate exits 1 and says so."""
    result = adapter_alone.command("simulate", "BeforeCreateGroup", "--url", url(adapter_alone))

    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stdout + result.stderr
    assert json.loads(lines[3].removeprefix("< ")) == OK_ANSWER
    assert lines[4:] == [
        "failed: the policy service could not decide; the adapter allowed it by"
        " CHAT_POLICY_ON_POLICY_ERROR=allow (fail-open)"
    ]
    no_traceback(result)


def test_simulate_fails_on_an_event_the_adapter_only_spooled(adapter_alone: Deployment) -> None:
    """The policy service stopped: a group-state event is spooled and answered ErrorCode 0;
    simulate exits 1 and says the event waits in the spool."""
    result = adapter_alone.command("simulate", "AfterGroupFull", "--url", url(adapter_alone))

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == (
        "failed: the adapter spooled the event: the policy service is away (the adapter"
        " replays it when the service is back)"
    )


def test_simulate_with_a_token_fails_against_an_adapter_that_checks_none(
    adapter_alone: Deployment,
) -> None:
    """--token to an adapter without CHAT_POLICY_CALLBACK_TOKENS: the webhook is answered
    ErrorCode 0, but no signature was checked; simulate exits 1 and says so."""
    result = adapter_alone.command(
        "simulate",
        "Group.CallbackAfterSendMsg",
        "--url",
        url(adapter_alone),
        "--token",
        "x",
        "--json",
    )

    document = json.loads(result.stdout)
    assert result.returncode == 1, result.stderr
    assert "&Sign=" in document["request"]["url"]
    assert document["response"]["answer"] == OK_ANSWER
    assert document["response"]["signature"] == "unchecked"
    assert document["verdict"] == [
        "failed: the adapter does not check signatures (CHAT_POLICY_CALLBACK_TOKENS is unset"
        " there), so the token was not tested"
    ]


def test_groups_get_shows_the_group_simulate_made_full(shared: Deployment) -> None:
    """After a simulated full webhook, `groups get` shows the group full with one event."""
    simulate_full(shared, "@TGS#OPGET")

    text = shared.command("groups", "get", str(APP), "@TGS#OPGET")
    as_json = shared.command("groups", "get", str(APP), "@TGS#OPGET", "--json")

    lines = text.stdout.splitlines()
    state = json.loads(as_json.stdout)["group_state"]
    assert (text.returncode, as_json.returncode) == (0, 0)
    assert lines[:2] == [f"app           {APP}", "group         @TGS#OPGET"]
    assert re.fullmatch(r"full          yes, since \d{4}-\d\d-\d\dT[\d:.]{12}Z", lines[3])
    assert lines[4:6] == ["full events   1", lines[5]]
    assert lines[5].startswith("last event    full at ")
    assert (state["full"], state["full_event_count"], state["group_id"]) == (
        True,
        "1",
        "@TGS#OPGET",
    )


def test_groups_get_of_an_unknown_group_is_one_line_with_the_reason(shared: Deployment) -> None:
    """NOT_FOUND: exit 1, one line with the code, the details and the ErrorInfo reason."""
    result = shared.command("groups", "get", str(APP), "@TGS#NEVER")

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"chat-policy groups get: NOT_FOUND: group '@TGS#NEVER' of SdkAppid {APP} is not"
        " known (ERROR_REASON_GROUP_NOT_FOUND)\n"
    )


def test_groups_list_lists_the_full_group(shared: Deployment) -> None:
    """`groups list` shows a simulated full group; --json pages through with --all."""
    simulate_full(shared, "@TGS#OPLIST")

    text = shared.command("groups", "list", str(APP))
    as_json = shared.command("groups", "list", str(APP), "--all", "--json")

    document = json.loads(as_json.stdout)
    rows = [line for line in text.stdout.splitlines() if line.endswith("  @TGS#OPLIST")]
    assert (text.returncode, as_json.returncode) == (0, 0)
    assert text.stdout.startswith("FULL SINCE ")
    assert len(rows) == 1
    assert re.search(r"full groups?$", text.stdout.splitlines()[-1])
    assert "@TGS#OPLIST" in [state["group_id"] for state in document["group_states"]]
    assert document["next_page_token"] == ""


def test_groups_list_pages_up_to_the_limit(shared: Deployment) -> None:
    """--limit caps the list and the last line says there are more."""
    simulate_full(shared, "@TGS#OPPAGE1")
    simulate_full(shared, "@TGS#OPPAGE2")

    result = shared.command("groups", "list", str(APP), "--limit", "1")

    lines = result.stdout.splitlines()
    assert result.returncode == 0
    assert len(lines) == 3
    assert lines[-1] == "1 full group shown; there are more: --all lists every one"


def test_groups_clear_clears_the_full_group(shared: Deployment) -> None:
    """`groups clear` makes a full group not full with the reason; again, it is unchanged."""
    simulate_full(shared, "@TGS#OPCLEAR")

    cleared = shared.command(
        "groups", "clear", str(APP), "@TGS#OPCLEAR", "--reason", "limit raised"
    )
    again = shared.command("groups", "clear", str(APP), "@TGS#OPCLEAR", "--json")
    state = json.loads(shared.command("groups", "get", str(APP), "@TGS#OPCLEAR", "--json").stdout)

    assert (cleared.returncode, again.returncode) == (0, 0)
    assert cleared.stdout.splitlines()[0] == "cleared: @TGS#OPCLEAR is not full any more"
    assert "clear reason  limit raised" in cleared.stdout.splitlines()
    assert json.loads(again.stdout)["applied"] is False
    assert state["group_state"]["full"] is False
    assert state["group_state"]["last_event_kind"] == "GROUP_EVENT_KIND_CLEARED"
    assert state["group_state"]["clear_reason"] == "limit raised"


class LineReader:
    """Reads a stream's lines in a thread, so a test can wait for the next one with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)

    def next(self, timeout_s: float = 20) -> str:
        """The next line; fails the test if none comes within timeout_s."""
        try:
            return self._lines.get(timeout=timeout_s)
        except queue.Empty:
            pytest.fail(f"no line within {timeout_s}s")

    def rest(self) -> list[str]:
        """Every line left, once the stream has ended."""
        self._thread.join(timeout=20)
        return list(self._lines.queue)


def test_groups_watch_prints_a_change_and_stops_cleanly_on_sigint(shared: Deployment) -> None:
    """`groups watch` prints a change made after it caught up; SIGINT ends it with exit 0, the
    sequence to resume from, and no traceback."""
    with subprocess.Popen(
        [*CLI, "groups", "watch", str(APP)],
        env=shared.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as watch:
        try:
            assert watch.stdout is not None and watch.stderr is not None
            out, err = LineReader(watch.stdout), LineReader(watch.stderr)
            assert err.next() == f"watching app {APP} from now; Ctrl-C stops\n"
            assert re.fullmatch(r"caught up at sequence \d+\n", err.next())

            simulate_full(shared, "@TGS#OPWATCH")
            line = out.next()
            watch.send_signal(signal.SIGINT)
            status = watch.wait(timeout=20)
            rest, more_out = err.rest(), out.rest()
        finally:
            if watch.poll() is None:
                watch.kill()

    time = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(
        rf"\d+  {time}  {APP}  @TGS#OPWATCH  full since {time} \(1 full event\)\n", line
    )
    assert status == 0
    assert len(rest) == 1, rest
    assert re.fullmatch(r"stopped at sequence (\d+): resume with --from \1\n", rest[0])
    assert more_out == []


def test_groups_watch_reports_a_stream_error_in_one_line(shared: Deployment) -> None:
    """A watch that cannot resume (a sequence ahead of the log): exit 1, one clear line."""
    result = shared.command("groups", "watch", str(APP), "--from", "999999999")

    errors = result.stderr.splitlines()
    assert (result.returncode, result.stdout) == (1, "")
    assert errors[0] == f"watching app {APP} after sequence 999999999; Ctrl-C stops"
    assert errors[1].startswith("chat-policy groups watch: watch failed: OUT_OF_RANGE: ")
    assert errors[1].endswith("(ERROR_REASON_SEQUENCE_AHEAD)")
    assert len(errors) == 2


def test_decide_allows_with_the_default_policy(shared: Deployment) -> None:
    """`decide` against the shipped default policy: allow, rule default, exit 0."""
    text = shared.command("decide", "--operator", "alice", "--type", "Public", "--name", "Books")
    as_json = shared.command("decide", "--operator", "alice", "--json")

    lines = text.stdout.splitlines()
    document = json.loads(as_json.stdout)
    assert (text.returncode, as_json.returncode) == (0, 0)
    assert lines[:4] == [
        "decision     allow",
        "error_code   0",
        "error_info   -",
        "rule         default",
    ]
    assert re.fullmatch(r"revision     sha256:[0-9a-f]{16}", lines[5])
    assert re.fullmatch(r"decision id  \S+", lines[6])
    assert (document["decision"], document["error_code"], document["rule_id"]) == (
        "DECISION_ALLOW",
        0,
        "default",
    )


def test_decide_denies_with_a_refusing_policy_and_still_exits_0(deployment: Deployment) -> None:
    """A service running examples/policy.toml refuses a public group from the web: decision
    deny with the rule's code and text, the evaluations with --explain, and exit 0."""
    deployment.env["CHAT_POLICY_POLICY_FILE"] = str(EXAMPLE_POLICY)
    deployment.start_service()

    result = deployment.command(
        "decide",
        "--app",
        str(APP),
        "--operator",
        "u2",
        "--type",
        "Public",
        "--name",
        "Book club",
        "--platform",
        "Web",
        "--members",
        "bob,carol",
        "--explain",
    )

    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert lines[:4] == [
        "decision     deny",
        "error_code   10101",
        "error_info   Public groups can only be created from the mobile apps.",
        "rule         public-groups-from-the-apps",
    ]
    assert "evaluations:" in lines
    evaluations = lines[lines.index("evaluations:") + 1 :]
    assert evaluations[0].split()[:3] == ["admins-may-create-anything", "match", "not"]
    assert evaluations[-1].split()[:3] == [
        "public-groups-from-the-apps",
        "platform_types",
        "decided",
    ]


@pytest.mark.parametrize(
    ("prog", "args"),
    [
        ("groups get", [str(APP), "@TGS#x"]),
        ("groups list", [str(APP)]),
        ("groups clear", [str(APP), "@TGS#x"]),
        ("groups watch", [str(APP)]),
        ("decide", ["--operator", "alice"]),
    ],
)
def test_an_unreachable_target_is_exit_1_and_one_line(
    shared: Deployment, prog: str, args: list[str]
) -> None:
    """Nothing listening at --target: exit 1, one UNAVAILABLE line naming the target, no
    traceback."""
    target = f"127.0.0.1:{free_port()}"

    result = shared.command(*prog.split(), *args, "--target", target)

    errors = [line for line in result.stderr.splitlines() if not line.startswith("watching ")]
    assert (result.returncode, result.stdout) == (1, "")
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"chat-policy {prog}: ")
    assert ": UNAVAILABLE: " in errors[0]
    assert errors[0].endswith(f"(target {target})")
    no_traceback(result)
