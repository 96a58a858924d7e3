"""The `chat-policy` command table: every command is listed with its help line, each one
parses, and a command's module is imported only when that command is chosen."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

import pytest

from chat_policy_cli.main import COMMANDS, main

OPERATOR_MODULES = (
    "chat_policy_cli.group_commands",
    "chat_policy_cli.audit_commands",
    "chat_policy_cli.decide_command",
    "chat_policy_cli.webhook_commands",
    "chat_policy_cli.spool_commands",
    "chat_policy_cli.policy_commands",
    "chat_policy_cli.access_commands",
    "chat_policy_cli.policy_show_command",
    "chat_policy_cli.decision_commands",
    "chat_policy_cli.service_calls",
    "grpc",
    "google.protobuf",
)


def test_the_help_lists_every_command_with_its_help_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`chat-policy --help` names every command of the table, each with its one-line help."""
    with pytest.raises(SystemExit) as raised:
        main(["--help"])

    listing = " ".join(capsys.readouterr().out.split())
    assert raised.value.code == 0
    assert sorted(COMMANDS) == sorted(
        [
            "service",
            "adapter",
            "run",
            "policy",
            "access",
            "decisions",
            "groups",
            "decide",
            "audit",
            "sign",
            "simulate",
            "spool",
        ]
    )
    for name, command in COMMANDS.items():
        assert f" {name} {command.help}" in listing


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["service", "--help"], ["adapter", "--help"]]
)
def test_the_help_and_the_servers_import_no_operator_command(argv: list[str]) -> None:
    """`chat-policy --help`, `--version` and the servers load none of the operator commands'
    modules, nor grpc or protobuf: a command's module is imported only when it is chosen."""
    code = (
        "import sys; from chat_policy_cli import main\n"
        f"try:\n    main.main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {OPERATOR_MODULES!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )

    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_parses(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each command of the table builds its parser: its --help is its own usage, exit 0."""
    with pytest.raises(SystemExit) as raised:
        main([name, "--help"])

    assert raised.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: chat-policy {name}")


def test_version_prints_the_installed_version_and_exits_0() -> None:
    """`chat-policy --version` prints `chat-policy` and the package's version, and nothing
    else, with exit 0."""
    result = subprocess.run(
        [sys.executable, "-m", "chat_policy_cli.main", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"chat-policy {importlib.metadata.version('chat-policy')}\n"
    assert re.fullmatch(r"chat-policy \d+\.\d+\.\d+\S*\n", result.stdout)
