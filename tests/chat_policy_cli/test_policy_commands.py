"""`chat-policy policy check` and `chat-policy policy test`, in-process and as the real command."""

from __future__ import annotations

import datetime
import json
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from chat_policy_cli.main import main
from chat_policy_cli.policy_commands import DEFAULT_NOW_MS
from chat_policy_cli.times import parse_time_ms
from policy_service.engine.policy_file import load_policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_POLICY = ROOT / "examples" / "policy.toml"
EXAMPLE_CASES = ROOT / "examples" / "policy_cases.toml"
CHAT_POLICY = Path(sys.executable).with_name("chat-policy")

# A deny rule for Public groups, and a rate limit of 2 creations a minute per operator.
POLICY = """\
version = 1

[[rules]]
id = "no-public"
effect = "deny"
group_types = ["Public"]
error_code = 10101
error_info = "No public groups."

[[rules]]
id = "two-a-minute"
kind = "rate_limit"
limit = 2
window = "60s"
error_code = 10107
"""

# A policy whose only rule refuses groups created during 20:00-20:59 UTC.
EIGHT_PM_POLICY = """\
version = 1

[[rules]]
id = "not-at-eight"
effect = "deny"
when = 'time.getHours() == 20'
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `chat-policy ARGV...` in-process: its exit status, stdout and stderr."""
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write(directory: Path, name: str, text: str) -> Path:
    """Write a file into directory and return its path."""
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def cases_file(directory: Path, cases: str, policy: str = POLICY) -> Path:
    """A policy.toml and a cases.toml next to it that names it, with the cases given."""
    write(directory, "policy.toml", policy)
    return write(directory, "cases.toml", 'policy = "policy.toml"\n' + cases)


def test_check_prints_one_line_with_the_rule_count_and_revision(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A valid policy: exit 0 and `FILE: ok, N rules, revision sha256:...` on stdout."""
    status, out, err = run(capsys, "policy", "check", str(EXAMPLE_POLICY))

    revision = load_policy(EXAMPLE_POLICY).revision
    assert (status, err) == (0, "")
    assert out == f"{EXAMPLE_POLICY}: ok, 10 rules, revision {revision}\n"
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", revision)


def test_check_names_the_line_rule_and_field_of_an_invalid_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid policy: exit 1, and stderr says file:line, rule and field."""
    policy = write(
        tmp_path,
        "policy.toml",
        'version = 1\n[[rules]]\nid = "r1"\neffect = "deny"\nerror_code = 42\n',
    )

    status, out, err = run(capsys, "policy", "check", str(policy))

    assert (status, out) == (1, "")
    assert err == (
        f"{policy}:5: rule 'r1' field 'error_code': must be 1 or in [10100, 10200], got 42\n"
    )


def test_check_reports_a_missing_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A policy file that does not exist: exit 1 and one line naming it, no traceback."""
    missing = tmp_path / "nope.toml"

    status, out, err = run(capsys, "policy", "check", str(missing))

    assert (status, out) == (1, "")
    assert err == f"{missing}: cannot read: No such file or directory\n"


def test_check_warns_about_a_nullable_variable_read_without_a_null_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`when = 'create_group_num > 3'` loads (exit 0, the ok line), and stderr warns, as
    FILE:LINE: rule: ..., that the rule is skipped when Chat omits CreateGroupNum."""
    policy = write(
        tmp_path,
        "policy.toml",
        "version = 1\n\n[[rules]]\n"
        'id = "big-groups"\neffect = "deny"\nwhen = \'create_group_num > 3\'\n\n'
        "[[rules]]\n"
        'id = "small-groups-allowed"\nwhen = \'group_type == "Work" && create_group_num < 3\'\n',
    )

    status, out, err = run(capsys, "policy", "check", str(policy))

    assert status == 0
    assert out.startswith(f"{policy}: ok, 2 rules, revision sha256:")
    assert err.splitlines() == [
        f"{policy}:6: rule 'big-groups' field 'when': warning: create_group_num is read without"
        " a null check; it is null when Chat omits CreateGroupNum, and then this expression"
        " fails and the rule is skipped (so this deny rule refuses nothing). Guard the read:"
        " `create_group_num != null && ...`",
        f"{policy}:10: rule 'small-groups-allowed' field 'when': warning: create_group_num is"
        " read without a null check; it is null when Chat omits CreateGroupNum, and then this"
        " expression fails and the rule is skipped. Guard the read:"
        " `create_group_num != null && ...`",
    ]


@pytest.mark.parametrize(
    "when",
    [
        "create_group_num != null && create_group_num > 3",
        "create_group_num == null || create_group_num <= 3",
        "create_group_num != null ? create_group_num > 3 : false",
        "size(members) > 2 && (create_group_num == null || create_group_num > 3)",
        "create_group_num == 5 || create_group_num in [7, 8]",
        "type(create_group_num) == int",
        '"create_group_num > 3" == name',
        "members.exists(create_group_num, create_group_num > 'a')",
        "size(members) > 10",
    ],
)
def test_check_does_not_warn_about_guarded_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], when: str
) -> None:
    """A read behind a null check, a comparison null cannot fail, a name in a string or a
    macro's own variable: exit 0 and nothing on stderr."""
    policy = write(
        tmp_path, "policy.toml", f'version = 1\n[[rules]]\nid = "r"\nwhen = """{when}"""\n'
    )

    status, _, err = run(capsys, "policy", "check", str(policy))

    assert (status, err) == (0, "")


def test_test_shows_a_rule_that_could_not_be_evaluated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A case without create_group_num makes `create_group_num > 3` fail: the case passes
    (the deny rule is skipped), and the text output says so under it."""
    cases = cases_file(
        tmp_path,
        '[[cases]]\nname = "no CreateGroupNum"\n[cases.expect]\ndecision = "allow"\n'
        '[[cases]]\nname = "five"\n[cases.request]\ncreate_group_num = 5\n'
        '[cases.expect]\ndecision = "deny"\n',
        'version = 1\n[[rules]]\nid = "big-groups"\neffect = "deny"\n'
        "when = 'create_group_num > 3'\n",
    )

    status, out, err = run(capsys, "policy", "test", str(cases))

    lines = out.splitlines()
    assert (status, err) == (0, "")
    assert lines[0] == "ok   1 no CreateGroupNum"
    assert lines[1].startswith(
        "     error: rule 'big-groups' could not be evaluated and was skipped: CEL error: "
    )
    assert lines[2:] == ["ok   2 five", "2 passed, 0 failed"]


def test_the_example_cases_pass_and_cover_every_example_rule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """examples/policy_cases.toml passes against examples/policy.toml and names every rule."""
    status, out, err = run(capsys, "policy", "test", str(EXAMPLE_CASES))

    lines = out.splitlines()
    assert (status, err) == (0, "")
    assert all(line.startswith("ok   ") for line in lines[:-1])
    assert lines[-1] == f"{len(lines) - 1} passed, 0 failed"
    cases = tomllib.loads(EXAMPLE_CASES.read_text())["cases"]
    named = {c["expect"].get("rule") for c in cases}
    named |= {rule for c in cases for rule in c["expect"].get("shadow", [])}
    assert {rule.id for rule in load_policy(EXAMPLE_POLICY).rules} <= named
    assert "default" in named


def test_a_failing_case_exits_1_and_shows_expected_got_and_the_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A case the policy does not meet: a FAIL line, expected/got lines, rules; exit 1."""
    cases = cases_file(
        tmp_path,
        """
[[cases]]
name = "work groups are allowed"
request = { operator = "alice", group_type = "Work" }
expect = { decision = "allow", rule = "default", error_code = 0, shadow = [] }

[[cases]]
name = "public groups are allowed (wrong)"
request = { operator = "alice", group_type = "Public" }
expect = { decision = "allow", rule = "default" }
""",
    )

    status, out, err = run(capsys, "policy", "test", str(cases))

    assert (status, err) == (1, "")
    assert out.splitlines() == [
        "ok   1 work groups are allowed",
        "FAIL 2 public groups are allowed (wrong)",
        "     expected decision=allow rule=default",
        "     got      decision=deny rule=no-public error_code=10101 reason='matched'",
        "     rules evaluated:",
        "       no-public: decided (matched)",
        "1 passed, 1 failed",
    ]


def test_every_expectation_key_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong error_code, rule, shadow list or reason substring each fails its case."""
    expectations = [
        'decision = "deny", error_code = 10102',
        'decision = "deny", rule = "two-a-minute"',
        'decision = "deny", shadow = ["no-public"]',
        'decision = "deny", reason_contains = "banned"',
        'decision = "allow"',
    ]
    cases = cases_file(
        tmp_path,
        "".join(
            f'[[cases]]\nname = "c{i}"\nrequest = {{ group_type = "Public" }}\n'
            f"expect = {{ {expectation} }}\n"
            for i, expectation in enumerate(expectations)
        ),
    )

    status, out, _ = run(capsys, "policy", "test", str(cases))

    assert status == 1
    assert out.splitlines()[-1] == "0 passed, 5 failed"
    assert "     expected decision=deny shadow=[no-public]" in out.splitlines()
    assert "got      decision=deny rule=no-public error_code=10101 shadow=[] reason=" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            'policy = "policy.toml"\npolicies = 1\n',
            "cases.toml:2: key 'policies': unknown key (expected one of cases, policy)",
            id="unknown-top-level-key",
        ),
        pytest.param(
            'policy = "policy.toml"\n[[cases]]\nname = "a"\n[cases.expect]\ndecision = "allow"\n'
            '[[cases]]\nname = "b"\n[cases.request]\ngroup_type = "Work"\n'
            'operater = "alice"\n[cases.expect]\ndecision = "allow"\n',
            "cases.toml:10: case 2 'b' key 'request.operater': unknown key (expected one of"
            " client_ip, create_group_num, event_time, group_type, members, name, operator,"
            " owner, platform, sdk_app_id)",
            id="unknown-request-key",
        ),
        pytest.param(
            'policy = "policy.toml"\n[[cases]]\nname = "a"\n[cases.request]\ngroup_type = "Work"\n'
            '[cases.request.extra]\nx = 1\n[cases.expect]\ndecision = "allow"\n',
            "cases.toml:6: case 1 'a' key 'request.extra': unknown key (expected one of"
            " client_ip, create_group_num, event_time, group_type, members, name, operator,"
            " owner, platform, sdk_app_id)",
            id="table-in-request",
        ),
        pytest.param(
            'policy = "policy.toml"\n[[cases]]\nname = "a"\n[cases.expect]\ndecision = "refuse"\n',
            "cases.toml:5: case 1 'a' key 'expect.decision': must be 'allow' or 'deny',"
            " got 'refuse'",
            id="bad-decision",
        ),
        pytest.param(
            'policy = "policy.toml"\n[[cases]]\nname = "a"\n[cases.expect]\nrule = "x"\n',
            "cases.toml:4: case 1 'a' key 'expect.decision': is required",
            id="missing-decision",
        ),
        pytest.param(
            'policy = "policy.toml"\n[[cases]]\nname = "a"\nrepeat = 0\n'
            'expect = { decision = "allow" }\n',
            "cases.toml:4: case 1 'a' key 'repeat': must be an integer >= 1, got 0",
            id="bad-repeat",
        ),
        pytest.param(
            'policy = "policy.toml"\n[[cases]]\nname = "a"\nnow = "2026-01-01 noon"\n'
            'expect = { decision = "allow" }\n',
            "cases.toml:4: case 1 'a' key 'now': must be an RFC 3339 time with an offset"
            " ('2026-01-01T12:00:00Z') or Unix milliseconds, got '2026-01-01 noon'",
            id="bad-now",
        ),
        pytest.param(
            'policy = "policy.toml"\n[[cases]]\nexpect = { decision = "allow" }\n',
            "cases.toml:2: case 1 key 'name': is required",
            id="missing-name",
        ),
        pytest.param(
            'policy = "policy.toml"\n',
            "cases.toml: key 'cases': must be one or more [[cases]] tables",
            id="no-cases",
        ),
        pytest.param(
            '[[cases]]\nname = "a"\nexpect = { decision = "allow" }\n',
            'cases.toml: no policy to test: set `policy = "FILE"` in it or pass --policy FILE',
            id="missing-policy",
        ),
    ],
)
def test_an_invalid_cases_file_exits_2_naming_the_case_and_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    message: str,
) -> None:
    """A cases file that cannot be used: exit 2, nothing on stdout, one precise message."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "policy.toml", POLICY)
    write(tmp_path, "cases.toml", text)

    status, out, err = run(capsys, "policy", "test", "cases.toml")

    assert (status, out, err) == (2, "", message + "\n")


def test_an_invalid_or_missing_policy_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The policy the cases name is invalid or missing: exit 2 with the policy's error."""
    cases = cases_file(
        tmp_path, '[[cases]]\nname = "a"\nexpect = { decision = "allow" }\n', policy="version = 2\n"
    )

    invalid = run(capsys, "policy", "test", str(cases))
    missing = run(capsys, "policy", "test", str(cases), "--policy", str(tmp_path / "nope.toml"))

    assert invalid == (2, "", f"{tmp_path / 'policy.toml'}:1: field 'version': must be 1, got 2\n")
    assert missing == (2, "", f"{tmp_path / 'nope.toml'}: cannot read: No such file or directory\n")


def test_the_policy_option_overrides_the_cases_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--policy FILE is tested instead of the policy the cases file names."""
    cases = cases_file(
        tmp_path,
        '[[cases]]\nname = "public"\nrequest = { group_type = "Public" }\n'
        'expect = { decision = "allow", rule = "default" }\n',
    )
    allow_all = write(tmp_path, "allow.toml", "version = 1\n")

    assert run(capsys, "policy", "test", str(cases))[0] == 1
    assert run(capsys, "policy", "test", str(cases), "--policy", str(allow_all))[0] == 0


def test_a_cases_file_may_start_with_a_byte_order_mark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cases file saved with a UTF-8 byte order mark (as some Windows editors do) is read
    like one without, as a policy file is."""
    cases = cases_file(
        tmp_path, '[[cases]]\nname = "public"\nexpect = { decision = "allow", rule = "default" }\n'
    )
    cases.write_text(cases.read_text(encoding="utf-8"), encoding="utf-8-sig")

    status, out, err = run(capsys, "policy", "test", str(cases))

    assert (status, out, err) == (0, "ok   1 public\n1 passed, 0 failed\n", "")


def test_json_output_has_the_counts_and_each_decision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints one JSON document with the counts, expectations and decisions."""
    cases = cases_file(
        tmp_path,
        """
[[cases]]
name = "public is refused"
request = { group_type = "Public" }
expect = { decision = "deny", error_code = 10101 }

[[cases]]
name = "public is allowed (wrong)"
request = { group_type = "Public" }
expect = { decision = "allow" }
""",
    )

    status, out, _ = run(capsys, "policy", "test", str(cases), "--json")

    document = json.loads(out)
    assert status == 1
    assert (document["passed"], document["failed"]) == (1, 1)
    first, second = document["cases"]
    assert (first["index"], first["name"], first["passed"]) == (1, "public is refused", True)
    assert first["expected"] == {"decision": "deny", "error_code": 10101}
    assert second["passed"] is False
    assert second["got"] == {
        "decision": "deny",
        "error_code": 10101,
        "rule": "no-public",
        "reason": "matched",
        "shadow": [],
        "evaluations": [{"rule": "no-public", "result": "decided", "reason": "matched"}],
    }


def test_a_rate_limit_is_tested_as_a_sequence_of_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cases share one counter: a limit reached in one case refuses the next, until the
    window passes; refused requests and other operators do not count."""
    cases = cases_file(
        tmp_path,
        """
[[cases]]
name = "a refused public group does not count"
now = 1000000
request = { operator = "alice", group_type = "Public" }
expect = { decision = "deny", rule = "no-public" }

[[cases]]
name = "two in a minute are allowed"
now = 1000000
repeat = 2
request = { operator = "alice", group_type = "Work" }
expect = { decision = "allow" }

[[cases]]
name = "the third is refused"
now = 1059999
request = { operator = "alice", group_type = "Work" }
expect = { decision = "deny", rule = "two-a-minute", error_code = 10107 }

[[cases]]
name = "bob is counted apart"
now = 1059999
request = { operator = "bob", group_type = "Work" }
expect = { decision = "allow" }

[[cases]]
name = "a minute later alice may create again"
now = 1060000
repeat = 2
request = { operator = "alice", group_type = "Work" }
expect = { decision = "allow" }

[[cases]]
name = "a third at once is refused, which this case does not expect"
now = 1060000
repeat = 3
request = { operator = "alice", group_type = "Work" }
expect = { decision = "allow" }
""",
    )

    status, out, _ = run(capsys, "policy", "test", str(cases))

    lines = out.splitlines()
    assert status == 1
    assert lines[:6] == [
        "ok   1 a refused public group does not count",
        "ok   2 two in a minute are allowed",
        "ok   3 the third is refused",
        "ok   4 bob is counted apart",
        "ok   5 a minute later alice may create again",
        "FAIL 6 a third at once is refused, which this case does not expect",
    ]
    assert "     at request 1 of 3" in lines
    assert lines[-1] == "5 passed, 1 failed"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01T00:00:00Z", 1767225600000),
        ("2026-01-01T20:00:00Z", 1767225600000 + 20 * 3600000),
        ("2026-01-02T04:00:00+08:00", 1767225600000 + 20 * 3600000),
        ("2026-01-01t00:00:00.25z", 1767225600250),
        ("2026-01-01T00:00:00.123456789-00:30", 1767225600000 + 1800000 + 123),
        (datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), 1767225600000),
        (1767225600000, 1767225600000),
        (0, 0),
    ],
)
def test_times_are_read_as_rfc3339_or_unix_milliseconds(value: object, expected: int) -> None:
    """`now` and `event_time` accept RFC 3339 with an offset, TOML offset times and integers."""
    assert parse_time_ms(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-01",
        "2026-01-01T00:00:00",
        "2026-02-30T00:00:00Z",
        "1767225600000",
        datetime.datetime(2026, 1, 1),
        datetime.date(2026, 1, 1),
        -1,
        True,
        1.5,
    ],
)
def test_other_times_are_refused(value: object) -> None:
    """A time without an offset, an impossible date, a string of digits or a float is refused."""
    with pytest.raises(ValueError, match=r"must be an RFC 3339 time|not a valid time"):
        parse_time_ms(value)


def test_now_is_the_clock_and_event_time_overrides_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CEL's `time` is `event_time` when given, else `now`, else 2026-01-01T00:00:00Z."""
    cases = cases_file(
        tmp_path,
        """
[[cases]]
name = "the default clock is midnight"
expect = { decision = "allow" }

[[cases]]
name = "now at eight"
now = "2026-01-01T20:00:00Z"
expect = { decision = "deny", rule = "not-at-eight" }

[[cases]]
name = "now at eight as a TOML date-time"
now = 2026-01-01T21:30:00+01:00
expect = { decision = "deny", rule = "not-at-eight" }

[[cases]]
name = "event time at eight, in milliseconds"
now = "2026-01-01T12:00:00Z"
request = { event_time = 1767297600000 }
expect = { decision = "deny", rule = "not-at-eight" }

[[cases]]
name = "event time at noon wins over now at eight"
now = "2026-01-01T20:00:00Z"
request = { event_time = "2026-01-01T12:00:00Z" }
expect = { decision = "allow" }
""",
        policy=EIGHT_PM_POLICY,
    )

    status, out, err = run(capsys, "policy", "test", str(cases))

    assert (status, err) == (0, "")
    assert out.splitlines()[-1] == "5 passed, 0 failed"
    assert DEFAULT_NOW_MS == 1767225600000


def test_the_console_script_runs_the_example_cases() -> None:
    """The installed `chat-policy policy test examples/policy_cases.toml` exits 0."""
    result = subprocess.run(
        [str(CHAT_POLICY), "policy", "test", "examples/policy_cases.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (result.returncode, result.stderr) == (0, "")
    assert re.search(r"^\d+ passed, 0 failed$", result.stdout, re.MULTILINE)
    assert "FAIL" not in result.stdout


def output_cut_after_one_line(argv: list[str]) -> tuple[int, str]:
    """Run `chat-policy ARGV...`, read one line of its stdout and close the pipe, as `| head -1`
    does; its exit status and stderr. The output must be larger than a pipe holds (64 KiB),
    so that the command always writes after the close."""
    process = subprocess.Popen(
        [str(CHAT_POLICY), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    return process.wait(timeout=60), stderr


def test_a_closed_pipe_ends_policy_test_quietly_with_141(tmp_path: Path) -> None:
    """`policy test --json ... | head -1`: the reader goes after one line of ~1 MB; the
    command exits 141 (128 + SIGPIPE) with nothing on stderr, every time."""
    cases = '[[cases]]\nname = "{}"\n[cases.expect]\ndecision = "allow"\n'
    path = cases_file(tmp_path, "".join(cases.format(i) for i in range(3000)), "version = 1\n")

    status, stderr = output_cut_after_one_line(["policy", "test", "--json", str(path)])

    assert (status, stderr) == (141, "")


def test_a_closed_pipe_ends_an_operator_command_quietly_with_141(tmp_path: Path) -> None:
    """`simulate --json --body BIG ... | head -1` (nothing listening: the JSON still shows the
    ~1 MB body sent) exits 141 with nothing on stderr: the JSON comes first, and the line
    saying why it failed is not written once the reader is gone."""
    body = write(tmp_path, "body.json", json.dumps({"Name": "x" * 1_000_000}))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/"

    status, stderr = output_cut_after_one_line(
        ["simulate", "AfterGroupFull", "--url", url, "--body", str(body), "--json"]
    )

    assert (status, stderr) == (141, "")
