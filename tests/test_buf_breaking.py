"""scripts/buf-breaking, the compatibility check scripts/check runs, catches breaking changes.

Each test copies the protos, buf.yaml and the script into a git repository of its own, commits,
changes a proto, and runs the script there with this checkout's buf.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUF = Path(sys.executable).with_name("buf")
GROUP_STATE = Path("protos/chatpolicy/v1/group_state.proto")
# git without the user's or the system's configuration (signing, hooks, templates).
GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def git(repo: Path, *args: str) -> str:
    """Run git in repo; its stdout."""
    return subprocess.run(
        ["git", *args], cwd=repo, env=GIT_ENV, capture_output=True, text=True, check=True
    ).stdout


def buf_breaking(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the repository's scripts/buf-breaking with this checkout's buf."""
    return subprocess.run(
        [str(repo / "scripts" / "buf-breaking"), *args],
        cwd=repo,
        env={**GIT_ENV, "BUF": str(BUF)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def edit(repo: Path, old: str, new: str) -> None:
    """Replace the one occurrence of old in group_state.proto by new."""
    path = repo / GROUP_STATE
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository of this checkout's protos, buf.yaml and scripts/buf-breaking: 1 commit."""
    if shutil.which("git") is None:
        pytest.fail("git is not installed")
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "buf-breaking", repo / "scripts")
    shutil.copy2(ROOT / "buf.yaml", repo)
    shutil.copytree(ROOT / "protos", repo / "protos", ignore=_not_proto)
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--message=protos")
    return repo


def _not_proto(directory: str, names: list[str]) -> list[str]:
    """copytree's ignore: every file but the .proto files."""
    return [n for n in names if not n.endswith(".proto") and not Path(directory, n).is_dir()]


def test_scripts_check_runs_buf_breaking() -> None:
    """scripts/check runs scripts/buf-breaking, the command these tests exercise."""
    assert 'BUF="$bin/buf" scripts/buf-breaking\n' in (ROOT / "scripts" / "check").read_text()


def test_the_first_commit_is_skipped(repo: Path) -> None:
    """With one commit and a clean tree there is nothing to compare against: a skip, exit 0."""
    result = buf_breaking(repo)

    assert result.returncode == 0, result.stderr
    assert "skipped: HEAD~1 does not exist" in result.stderr


def test_a_field_renamed_in_the_last_commit_is_reported(repo: Path) -> None:
    """A clean tree is compared with HEAD~1: a renamed field there breaks JSON and fails."""
    edit(repo, "int64 full_event_count = 7;", "int64 refused_join_count = 7;")
    git(repo, "commit", "--quiet", "--all", "--message=rename")

    result = buf_breaking(repo)

    assert result.returncode != 0
    assert "against HEAD~1" in result.stderr
    assert 'changed name from "full_event_count" to "refused_join_count"' in result.stdout
    assert 'changed option "json_name" from "fullEventCount"' in result.stdout


def test_an_uncommitted_renumbered_field_is_reported(repo: Path) -> None:
    """Uncommitted changes to the protos are compared with HEAD: a renumbered field fails."""
    edit(repo, "bool full = 4;", "bool full = 11;")

    result = buf_breaking(repo)

    assert result.returncode != 0
    assert "against HEAD " in result.stderr
    assert 'Previously present field "4" with name "full"' in result.stdout


def test_a_compatible_change_passes(repo: Path) -> None:
    """A new field, committed or not, breaks nothing."""
    edit(repo, "string clear_reason = 10;", "string clear_reason = 10;\n  string note = 11;")
    uncommitted = buf_breaking(repo)
    git(repo, "commit", "--quiet", "--all", "--message=note")
    committed = buf_breaking(repo)

    assert (uncommitted.returncode, uncommitted.stdout) == (0, "")
    assert "against HEAD " in uncommitted.stderr
    assert (committed.returncode, committed.stdout) == (0, "")
    assert "against HEAD~1" in committed.stderr


def test_a_shallow_clone_is_skipped_and_depth_2_is_checked(repo: Path, tmp_path: Path) -> None:
    """A clone of depth 1 lacks HEAD~1 and skips with a message; depth 2 reports the break."""
    edit(repo, "int64 full_event_count = 7;", "int64 refused_join_count = 7;")
    git(repo, "commit", "--quiet", "--all", "--message=rename")
    results = {}
    for depth in (1, 2):
        clone = tmp_path / f"depth-{depth}"
        git(tmp_path, "clone", "--quiet", f"--depth={depth}", f"file://{repo}", str(clone))
        results[depth] = buf_breaking(clone)

    assert results[1].returncode == 0, results[1].stderr
    assert "skipped: HEAD~1 is not in this shallow clone" in results[1].stderr
    assert results[2].returncode != 0
    assert "refused_join_count" in results[2].stdout
