"""scripts/check-imports: the layout's import rules hold, and each kind of break is caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "scripts" / "check-imports"
PACKAGES = ("adapter", "policy_service", "chat_policy_shared", "chat_policy_cli")


def check(root: Path) -> subprocess.CompletedProcess[str]:
    """Run the check on a tree; its status and output."""
    return subprocess.run(
        [sys.executable, str(CHECK), str(root)], capture_output=True, text=True, check=False
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the product packages' Python files, to break."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return tmp_path


def add_line(path: Path, line: str) -> None:
    """Append a line of code to a module."""
    path.write_text(path.read_text() + "\n" + line + "\n")


def test_the_repository_keeps_every_rule() -> None:
    """The tree as it is: no forbidden import, no circle."""
    result = check(ROOT)
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        (
            "adapter/webhook.py",
            "def f():\n    from policy_service import server",
            "adapter/webhook.py:",
        ),
        (
            "policy_service/server.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import adapter.app",
            "the policy service does not import the adapter",
        ),
        (
            "adapter/app.py",
            "from chat_policy_cli import supervisor",
            "a deployable does not import the operator tools",
        ),
        (
            "chat_policy_shared/logs.py",
            "import adapter.answers",
            "the shared package imports neither deployable",
        ),
        ("policy_service/engine/policy.py", "import grpc", "the domain imports no edge"),
        (
            "policy_service/groups/state.py",
            "from policy_service.stores import store",
            "groups is served by stores",
        ),
        (
            "policy_service/stores/retention.py",
            "from policy_service.api import status",
            "stores is below api",
        ),
        (
            "policy_service/engine/rate_limit.py",
            "def f():\n    from policy_service.engine import policy",
            "import circle: policy_service.engine.policy -> policy_service.engine.rate_limit",
        ),
    ],
)
def test_each_kind_of_break_fails_the_check(
    tree: Path, module: str, line: str, expected: str
) -> None:
    """An import the rules forbid, at the top, in a function or under TYPE_CHECKING, or one
    that closes a circle, exits 1 naming it."""
    add_line(tree / module, line)
    result = check(tree)
    assert result.returncode == 1
    assert expected in result.stderr
