"""The version the package metadata gives, and the build-info metric that carries it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from chat_policy_shared.build_info import BuildInfo
from chat_policy_shared.version import version

ROOT = Path(__file__).resolve().parent.parent.parent


def test_version_is_pyprojects() -> None:
    """version() is the version pyproject.toml declares (installed in .venv, editable)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert version() == pyproject["project"]["version"]


def test_build_info_is_one_sample_with_component_and_version() -> None:
    """chat_policy_build_info is 1, labelled with the component and the version."""
    registry = CollectorRegistry()
    registry.register(BuildInfo("service"))
    text = generate_latest(registry).decode()
    assert f'chat_policy_build_info{{component="service",version="{version()}"}} 1.0' in text
