"""The two distributions, chat-policy and chat-policy-api, agree on what they declare."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def project(path: Path) -> dict[str, Any]:
    """The [project] table of a pyproject.toml."""
    table: dict[str, Any] = tomllib.loads(path.read_text())["project"]
    return table


def name_of(requirement: str) -> str:
    """The normalised distribution name a requirement string starts with."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def test_server_pins_the_api_package_at_its_own_version() -> None:
    """chat-policy requires chat-policy-api ==its own version, and both say the same one."""
    server = project(ROOT / "pyproject.toml")
    api = project(ROOT / "protos" / "pyproject.toml")
    assert api["version"] == server["version"]
    assert f"chat-policy-api=={server['version']}" in server["dependencies"]


def test_runtime_ranges_hold_the_api_package_ranges() -> None:
    """grpcio and protobuf are required by the server exactly as the generated code needs."""
    server = set(project(ROOT / "pyproject.toml")["dependencies"])
    api = project(ROOT / "protos" / "pyproject.toml")["dependencies"]
    assert set(api) <= server
    assert {name_of(requirement) for requirement in api} == {"grpcio", "protobuf"}


def test_no_dev_tool_is_a_runtime_dependency() -> None:
    """Nothing of the dev group (grpcio-tools, pytest, build, ...) is needed at run time."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = {name_of(requirement) for requirement in pyproject["project"]["dependencies"]}
    dev = {name_of(requirement) for requirement in pyproject["dependency-groups"]["dev"]}
    assert runtime & dev == set()
