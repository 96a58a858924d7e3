"""`chat-policy access check` and `chat-policy access token`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from chat_policy_cli.main import main
from policy_service.access.access_file import token_digest_line

ACCESS = f"""\
[callers.adapter]
relays_chat = true
tokens = ["{token_digest_line("one")}", "{token_digest_line("two")}"]
allow = ["creation.check", "group-state.write"]

[callers.billing]
certificates = ["spiffe://example.org/billing"]
allow = ["group-state.read"]

[callers.ops]
tokens = ["{token_digest_line("three")}"]
certificates = ["ops.internal"]
allow = ["*"]
"""


def test_check_prints_who_may_call_what(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid file: exit 0, its revision, what is open, and each caller's permissions with
    their methods."""
    path = tmp_path / "access.toml"
    path.write_text(ACCESS)
    assert main(["access", "check", str(path)]) == 0
    revision = "sha256:" + hashlib.sha256(ACCESS.encode()).hexdigest()[:16]
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: ok, 3 callers, revision {revision}",
        "open to anyone: health, reflection",
        "caller adapter (relays Chat): 2 tokens",
        "  creation.check     CheckGroupCreation",
        "  group-state.write  RecordGroupFull, RecordMemberExit, RecordGroupDestroyed",
        "caller billing: certificate spiffe://example.org/billing",
        "  group-state.read   GetGroupState, BatchGetGroupStates, CountGroupStates,"
        " ListFullGroups, WatchGroupStates",
        "caller ops: 1 token, certificate ops.internal",
        "  *                  every method",
    ]


def test_check_names_the_line_of_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid file: exit 1, FILE:LINE and the problem on stderr, nothing on stdout."""
    path = tmp_path / "access.toml"
    path.write_text(ACCESS.replace('"group-state.read"]', '"group-state.reed"]'))
    assert main(["access", "check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        f"{path}:8: caller 'billing' field 'allow': unknown permission 'group-state.reed'"
    )


def test_check_of_a_missing_file_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that cannot be read: exit 1 and why."""
    assert main(["access", "check", str(tmp_path / "nope.toml")]) == 1
    assert "nope.toml: cannot read: No such file or directory" in capsys.readouterr().err


def test_token_prints_a_new_token_and_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    """`access token` prints a fresh 43-character token and the sha256: line of exactly it."""
    assert main(["access", "token"]) == 0
    token, line = capsys.readouterr().out.splitlines()
    assert len(token) == 43
    assert line == "sha256:" + hashlib.sha256(token.encode()).hexdigest()
    assert main(["access", "token"]) == 0
    assert capsys.readouterr().out.splitlines()[0] != token
