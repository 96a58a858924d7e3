"""Loading policy files: the shipped ones, list files, revisions, and errors with locations."""

from __future__ import annotations

import shutil
from asyncio import run
from pathlib import Path

import pytest

from policy_service.engine.policy import CreationRequest, Effect
from policy_service.engine.policy_file import PolicyError, load_policy, parse_policy

ROOT = Path(__file__).resolve().parent.parent.parent
APP = 1400000000


def load_error(source: str, base_dir: Path | None = None) -> PolicyError:
    """The PolicyError that parsing the TOML text as "p.toml" raises."""
    with pytest.raises(PolicyError) as raised:
        parse_policy(source.encode(), "p.toml", base_dir)
    return raised.value


def test_default_policy_allows_everything() -> None:
    """The shipped policy allows any creation under rule 'default' with a content revision."""
    policy = load_policy(None)
    assert policy.rules == ()
    decision = run(policy.decide(CreationRequest(1, group_type="AVChatRoom")))
    assert (decision.outcome.effect, decision.rule_id) == (Effect.ALLOW, "default")
    assert decision.policy_revision.startswith("sha256:")
    assert len(decision.policy_revision) == len("sha256:") + 16
    assert set(decision.policy_revision.removeprefix("sha256:")) <= set("0123456789abcdef")


def test_example_policy_loads_with_every_rule() -> None:
    """examples/policy.toml loads, with its rules in file order and its longest window."""
    policy = load_policy(ROOT / "examples" / "policy.toml")
    assert [rule.id for rule in policy.rules] == [
        "admins-may-create-anything",
        "blocked-accounts",
        "create-for-yourself",
        "group-names",
        "initial-members",
        "public-groups-from-the-apps",
        "public-group-quota",
        "no-audio-video-rooms",
        "night-time-communities",
        "creation-rate",
    ]
    assert policy.longest_window_ms == 3_600_000
    assert [rule.id for rule in policy.rules if rule.shadow] == ["night-time-communities"]


# revisions


def test_revision_follows_the_content() -> None:
    """The same text gives the same revision; any change to it gives another."""
    source = b'version = 1\n[[rules]]\nid = "a"\n'
    assert parse_policy(source).revision == parse_policy(source, "elsewhere.toml").revision
    assert parse_policy(source + b"\n").revision != parse_policy(source).revision
    assert parse_policy(source.replace(b'"a"', b'"b"')).revision != parse_policy(source).revision


def test_revision_changes_when_a_list_file_changes(tmp_path: Path) -> None:
    """Editing a list file the policy names changes the revision, though the policy is the same."""
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(
        'version = 1\n[[rules]]\nid = "names"\nkind = "name"\nbanned_words_file = "words.txt"\n'
    )
    words = tmp_path / "words.txt"
    words.write_text("casino\n")
    first = load_policy(policy_file)
    assert load_policy(policy_file).revision == first.revision
    words.write_text("casino\npoker\n")
    second = load_policy(policy_file)
    assert second.revision != first.revision
    assert second.sources == (words,)
    assert run(second.decide(CreationRequest(APP, name="poker"))).rule_id == "names"


def test_example_policy_with_a_list_file(tmp_path: Path) -> None:
    """The example policy, its blocked accounts moved to a file next to it, reads that file."""
    policy_file = tmp_path / "policy.toml"
    shutil.copy(ROOT / "examples" / "policy.toml", policy_file)
    (tmp_path / "blocked.txt").write_text("spammer-3\n")
    text = policy_file.read_text().replace(
        'accounts = ["spammer-1", "spammer-2"]', 'accounts_file = "blocked.txt"'
    )
    policy_file.write_text(text)
    decision = run(
        load_policy(policy_file).decide(CreationRequest(APP, operator_account="spammer-3"))
    )
    assert (decision.rule_id, decision.outcome.error_code) == ("blocked-accounts", 10100)


# errors, with their lines


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            'version = 1\n[[rules]]\nid = "a"\n\ncolour = "red"\n',
            "p.toml:5: rule 'a' field 'colour': unknown key (expected one of ",
        ),
        (
            'version = 1\n[[rules]]\nid = "a"\neffect = "deny"\nerror_code = 10201\n',
            "p.toml:5: rule 'a' field 'error_code': must be 1 or in [10100, 10200], got 10201",
        ),
        (
            'version = 1\n[[rules]]\nid = "r"\nkind = "rate_limit"\nlimit = 5\nwindow = "1w"\n',
            "p.toml:6: rule 'r' field 'window': must be seconds or like '90s', '10m', '1h', '1d',"
            " at most 31d; got '1w'",
        ),
        (
            'version = 1\n[[rules]]\nid = "ip"\nkind = "client_ip"\n'
            'deny_cidrs = ["192.0.2.0/24", "10.0.0.1/8"]\n',
            "p.toml:5: rule 'ip' field 'deny_cidrs': 10.0.0.1/8 has host bits set",
        ),
        (
            'version = 1\n[[rules]]\nid = "a"\n[[rules]]\nkind = "match"\nid = "a"\n',
            "p.toml:6: rule 'a' field 'id': is used by an earlier rule",
        ),
        (
            'version = 1\n[[rules]]\nid = "q"\nkind = "quota"\nmax_created = 1\neffect = "allow"\n',
            "p.toml:6: rule 'q' field 'effect': a quota rule can only deny",
        ),
        (
            'version = 1\n[[rules]]\nid = "ok"\n\n[[rules]]\nid = "n"\nkind = "name"\n'
            "error_code = 10103\n",
            "p.toml:5: rule 'n': a name rule must set one of banned_words, banned_words_file,"
            " max_length, min_length, pattern",
        ),
        (
            'version = 1\n[[rules]]\nid = "t"\neffect = "deny"\n'
            'group_types = ["Public", "Group"]\n',
            "p.toml:5: rule 't' field 'group_types': unknown group type 'Group' (known: ",
        ),
        (
            'version = 1\n[[rules]]\nid = "q"\nkind = "quota"\n'
            "max_created_by_type = { Work = 1, Club = 2 }\n",
            "p.toml:5: rule 'q' field 'max_created_by_type': unknown group type 'Club'",
        ),
        (
            'version = 1\n[[rules]]\nid = "p"\nkind = "platform_types"\n[rules.allowed]\n'
            'Web = ["Work"]\nMac = ["Bogus"]\n',
            "p.toml:7: rule 'p' field 'allowed.Mac': unknown group type 'Bogus'",
        ),
        (
            'version = 1\n[[rules]]\nid = "n"\nkind = "name"\nmax_length = 9\n'
            "[rules.allowed.Mac]\nWork = 1\n",
            "p.toml:6: rule 'n' field 'allowed': unknown key (expected one of ",
        ),
        (
            'version = 1\n[default]\neffect = "deny"\nerror_code = 7\n',
            "p.toml:4: rule 'default' field 'error_code': must be 1 or in [10100, 10200], got 7",
        ),
        ('version = 1\n[[rules]]\nid = "a"\nwhen = "x" = 1\n', "p.toml:4: not valid TOML: "),
        ("version = 1\n\n[[rules]\n", "p.toml:3: not valid TOML: "),
        ("version = 2\n", "p.toml:1: field 'version': must be 1, got 2"),
        (
            'version = 1\n[[rules]]\nid = "a b"\n',
            "p.toml:3: field 'id': must be 1-64 of A-Z a-z 0-9 _ . -, starting with a letter",
        ),
    ],
)
def test_errors_name_file_line_rule_and_field(source: str, message: str) -> None:
    """Each load error reads FILE:LINE: rule 'ID' field 'KEY': problem, at the faulty line."""
    assert str(load_error(source)).startswith(message)


def test_unreadable_list_file_names_the_line_and_path(tmp_path: Path) -> None:
    """A list file that cannot be read is reported at the key that names it, with its path."""
    (tmp_path / "policy.toml").write_text(
        'version = 1\n\n[[rules]]\nid = "names"\nkind = "name"\nbanned_words_file = "nope.txt"\n'
    )
    with pytest.raises(PolicyError) as raised:
        load_policy(tmp_path / "policy.toml")
    error = raised.value
    assert (error.where, error.line, error.rule_id, error.field) == (
        str(tmp_path / "policy.toml"),
        6,
        "names",
        "banned_words_file",
    )
    assert f"cannot read {str(tmp_path / 'nope.txt')!r}: No such file or directory" in str(error)


def test_list_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    """A list file in another encoding is refused rather than misread."""
    (tmp_path / "blocked.txt").write_bytes(b"caf\xe9\n")
    error = load_error(
        'version = 1\n[[rules]]\nid = "b"\nkind = "blocked"\naccounts_file = "blocked.txt"\n',
        base_dir=tmp_path,
    )
    assert (error.line, error.field) == (5, "accounts_file")
    assert "is not UTF-8" in error.message


def test_list_files_need_a_policy_file() -> None:
    """Parsing text with no file to be relative to cannot read list files."""
    error = load_error('version = 1\n[[rules]]\nid = "o"\nkind = "owner"\nadmins_file = "a.txt"\n')
    assert (error.line, error.field) == (5, "admins_file")


def test_unreadable_policy_file_is_a_policy_error(tmp_path: Path) -> None:
    """A missing policy file is reported with its path, not as a traceback."""
    with pytest.raises(PolicyError, match=r"missing\.toml: cannot read: No such file"):
        load_policy(tmp_path / "missing.toml")


def test_policy_that_is_not_utf8_is_an_error() -> None:
    """A policy file in another encoding is refused."""
    with pytest.raises(PolicyError, match=r"^p\.toml: not UTF-8"):
        parse_policy("version = 1 # caf\xe9".encode("latin-1"), "p.toml")


def test_policy_error_keeps_its_parts() -> None:
    """PolicyError exposes where, line, rule and field besides its message."""
    error = load_error('version = 1\n[[rules]]\nid = "a"\neffect = "deny"\nerror_code = 5\n')
    assert (error.where, error.line, error.rule_id, error.field) == ("p.toml", 5, "a", "error_code")
    assert error.message == "must be 1 or in [10100, 10200], got 5"


@pytest.mark.parametrize(
    "version",
    ["", "version = 2", "version = 0", "version = '1'", "version = true", "version = 1.0"],
)
def test_version_must_be_the_integer_1(version: str) -> None:
    """Only `version = 1` is accepted: a missing version, another number or type is refused."""
    error = load_error(version + "\n[default]\n")
    assert (error.field, error.message.split(",")[0]) == ("version", "must be 1")


@pytest.mark.parametrize(
    ("source", "field", "message"),
    [
        ("version = 1\nextra = 1", "extra", "unknown key"),
        ("version = 1\nrules = 1", "rules", "must be an array of tables"),
        ("version = 1\n[default]\neffect = 'maybe'", "effect", "must be 'allow' or 'deny'"),
        ("version = 1\n[default]\nerror_code = 1", "error_code", "only applies to effect 'deny'"),
        ("version = 1\n[default]\nerror_info = 'x'", "error_info", "only applies to effect"),
        ("version = 1\n[default]\ncolour = 1", "colour", "unknown key"),
        ("version = 1\n[[rules]]\neffect = 'deny'", "id", "must be 1-64 of"),
        ("version = 1\n[[rules]]\nid = 'default'", "id", "'default' names the default"),
        ("version = 1\n[[rules]]\nid = '-a'", "id", "must be 1-64 of"),
        ("version = 1\n[[rules]]\nid = '" + "a" * 65 + "'", "id", "must be 1-64 of"),
        ("version = 1\n[[rules]]\nid = 'a'\nkind = 'nope'", "kind", "must be one of match, quota"),
        ("version = 1\n[[rules]]\nid = 'a'\nshadow = 'yes'", "shadow", "must be true or false"),
        ("version = 1\n[[rules]]\nid = 'a'\ndescription = 1", "description", "must be a string"),
        ("version = 1\n[[rules]]\nid = 'a'\nwhen = 1", "when", "must be a string"),
        ("version = 1\n[[rules]]\nid = 'a'\ngroup_types = 'Public'", "group_types", "a list"),
        ("version = 1\n[[rules]]\nid = 'a'\noperator_accounts = ['']", "operator_accounts", "list"),
        ("version = 1\n[[rules]]\nid = 'a'\nopt_platforms = [1]", "opt_platforms", "list"),
        ("version = 1\n[[rules]]\nid = 'a'\nerror_code = 10100", "error_code", "only applies"),
        (
            "version = 1\n[[rules]]\nid = 'a'\neffect = 'deny'\nerror_info = 5",
            "error_info",
            "string",
        ),
        ("version = 1\n[[rules]]\nid = 'a'\nmax_created = 1", "max_created", "unknown key"),
        ("version = 1\n[[rules]]\nid = 'a'\nkind = 'quota'", None, "must set one of"),
        (
            "version = 1\n[[rules]]\nid = 'a'\nkind = 'quota'\nmax_created = -1",
            "max_created",
            ">= 0",
        ),
        ("version = 1\n[[rules]]\nid = 'a'\nkind = 'quota'\nmax_created = true", "max_created", ""),
        (
            "version = 1\n[[rules]]\nid = 'a'\nkind = 'quota'\nmax_created = 1\nwhen_unknown = 'x'",
            "when_unknown",
            "must be 'allow' or 'deny'",
        ),
        ("version = 1\n[[rules]]\nid = 'a'\nkind = 'name'\npattern = '('", "pattern", "regular"),
        (
            "version = 1\n[[rules]]\nid = 'a'\nkind = 'name'\nmin_length = 5\nmax_length = 4",
            "min_length",
            "is above max_length (5 > 4)",
        ),
        (
            "version = 1\n[[rules]]\nid = 'a'\nkind = 'members'\nmin_members = 3\nmax_members = 2",
            "min_members",
            "is above max_members",
        ),
        (
            "version = 1\n[[rules]]\nid = 'a'\nkind = 'members'\nreject_duplicates = 1",
            "reject_duplicates",
            "true or false",
        ),
        (
            "version = 1\n[[rules]]\nid = 'a'\nkind = 'blocked'\naccounts = ['x']\ncheck_owner = 1",
            "check_owner",
            "true or false",
        ),
        (
            "version = 1\n[[rules]]\nid = 'a'\nkind = 'platform_types'\nother = 'Work'",
            "other",
            "must be a list of group types",
        ),
        (
            "version = 1\n[[rules]]\nid = 'a'\nkind = 'platform_types'\nallowed = ['Work']",
            "allowed",
            "must be a table",
        ),
        (
            "version = 1\n[[rules]]\nid = 'a'\nkind = 'client_ip'\nallow_cidrs = ['10.0.0.0/33']",
            "allow_cidrs",
            "10.0.0.0/33",
        ),
        (
            "version = 1\n[[rules]]\nid = 'a'\nkind = 'client_ip'\nwhen_missing = 'block'",
            "when_missing",
            "must be 'allow' or 'deny'",
        ),
        ("version = 1\n[[rules]]\nid = 'a'\nkind = 'rate_limit'\nlimit = 1", "window", "required"),
        ("version = 1\n[[rules]]\nid = 'a'\nkind = 'rate_limit'\nwindow = 60", "limit", "required"),
        (
            "version = 1\n[[rules]]\nid = 'a'\nkind = 'rate_limit'\nlimit = 0\nwindow = 60",
            "limit",
            ">= 1",
        ),
        (
            "version = 1\n[[rules]]\nid = 'a'\nkind = 'rate_limit'\nlimit = 1\nwindow = 60\n"
            "per = 'group'",
            "per",
            "must be 'operator' or 'owner'",
        ),
        (
            "version = 1\n[[rules]]\nid = 'a'\nkind = 'rate_limit'\nlimit = 1\nwindow = 60\n"
            "on_store_error = 'retry'",
            "on_store_error",
            "must be 'allow' or 'deny'",
        ),
    ],
)
def test_invalid_policy_names_what_is_wrong(source: str, field: str | None, message: str) -> None:
    """A policy that cannot be used raises PolicyError naming the field and the problem."""
    error = load_error(source)
    assert str(error).startswith("p.toml:")
    assert error.field == field
    assert message in error.message


@pytest.mark.parametrize(
    ("window", "window_ms"),
    [
        ("1", 1_000),
        ("60", 60_000),
        ("'90s'", 90_000),
        ("'10m'", 600_000),
        ("'1h'", 3_600_000),
        ("'1d'", 86_400_000),
        ("'31d'", 2_678_400_000),
    ],
)
def test_rate_limit_windows(window: str, window_ms: int) -> None:
    """Windows are seconds or a number with s, m, h or d, up to 31 days."""
    source = f"version = 1\n[[rules]]\nid = 'r'\nkind = 'rate_limit'\nlimit = 1\nwindow = {window}"
    assert parse_policy(source.encode()).longest_window_ms == window_ms


@pytest.mark.parametrize(
    "window",
    ["0", "-5", "'0s'", "'32d'", "2678401", "'1.5h'", "'1w'", "'h'", "true", "'10 m'", "1.5"],
)
def test_invalid_rate_limit_windows(window: str) -> None:
    """Zero, negative, fractional, unknown-unit and over-31-day windows are refused."""
    source = f"version = 1\n[[rules]]\nid = 'r'\nkind = 'rate_limit'\nlimit = 1\nwindow = {window}"
    error = load_error(source)
    assert (error.line, error.field) == (6, "window")


def test_longest_window_is_the_largest_of_all_rate_limits() -> None:
    """longest_window_ms is the longest window of the policy's rate-limit rules, 0 without."""
    source = (
        "version = 1\n[[rules]]\nid = 'a'\nkind = 'rate_limit'\nlimit = 1\nwindow = '2h'\n"
        "[[rules]]\nid = 'b'\nkind = 'rate_limit'\nlimit = 1\nwindow = '1d'\n"
        "[[rules]]\nid = 'c'\nkind = 'rate_limit'\nlimit = 1\nwindow = '1m'\n"
    )
    assert parse_policy(source.encode()).longest_window_ms == 86_400_000
    assert parse_policy(b"version = 1").longest_window_ms == 0


def test_header_with_spaces_and_quoted_keys_still_locate_errors() -> None:
    """`[[ rules ]]` headers and quoted keys are located like plain ones."""
    error = load_error('version = 1\n[[ rules ]]\n"id" = "a"\n\n"error_code" = 10100\n')
    assert (error.line, error.rule_id, error.field) == (5, "a", "error_code")
