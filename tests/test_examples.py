"""The shipped examples and the documentation stay true to the code."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from adapter.settings import AdapterSettings
from policy_service.access.access_file import load_access
from policy_service.settings import REMOVED_SETTINGS, ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
MULTI_HOST = ROOT / "examples" / "multi-host"
# Where docs/install.md puts the wheel's venv, and systemd's StateDirectory.
INSTALLED = "/opt/chat-policy/venv/bin/chat-policy"
STATE_DIRECTORY = "/var/lib/chat-policy"
UNITS = {"chat-policy-service.service": "service", "chat-policy-adapter.service": "adapter"}


def example_env(path: Path = ROOT / "example.env") -> dict[str, str]:
    """The variables an env file sets, with their values."""
    lines = path.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {name: value for name, value in pairs}


def test_example_env_reproduces_the_defaults() -> None:
    """Loading example.env as it is gives exactly the default settings of both processes."""
    environ = example_env()
    assert ServiceSettings.from_env(environ) == ServiceSettings()
    adapter = AdapterSettings.from_env(environ)
    assert adapter.sdk_app_ids == AdapterSettings().sdk_app_ids
    assert adapter == AdapterSettings(sdk_app_ids_configured=True)


def product_packages() -> list[Path]:
    """The folders of every top-level package chat-policy's wheel holds (pyproject's find)."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    return sorted(ROOT / pattern.removesuffix("*") for pattern in find["find"]["include"])


def test_every_setting_is_in_example_env_and_the_configuration_page() -> None:
    """Each CHAT_POLICY_* variable the code reads is listed in example.env and in the
    reference table of docs/configuration.md."""
    modules = [module for package in product_packages() for module in package.rglob("*.py")]
    assert ROOT / "policy_service" / "settings.py" in modules
    sources = "".join(module.read_text() for module in modules)
    read_by_code = set(re.findall(r'"(CHAT_POLICY_[A-Z_]+)"', sources)) - set(REMOVED_SETTINGS)
    page = (ROOT / "docs" / "configuration.md").read_text()
    in_table = set(
        re.findall(r"^\| `(CHAT_POLICY_[A-Z_]+)`(?:, `(CHAT_POLICY_[A-Z_]+)`)?", page, re.M)
    )
    documented = {name for row in in_table for name in row if name}
    assert read_by_code == set(example_env())
    assert read_by_code - documented == set()


def test_multi_host_examples_are_valid_settings() -> None:
    """The multi-host env files name only real variables, and both processes accept them."""
    known = set(example_env())
    service = example_env(MULTI_HOST / "policy-service.env")
    adapter = example_env(MULTI_HOST / "adapter.env")
    assert set(service) - known == set() and set(adapter) - known == set()
    assert ServiceSettings.from_env(service).tls_client_ca_file is not None
    assert ServiceSettings.from_env(service).access_file == Path("/etc/chat-policy/access.toml")
    rules = load_access(ROOT / "examples" / "multi-host" / "access.toml")
    assert [grant.caller.name for grant in rules.grants] == ["adapter", "membership", "operators"]
    assert AdapterSettings.from_env(adapter).grpc_target.startswith("dns:///")


def unit_service_section(path: Path) -> dict[str, str]:
    """The [Service] section of a systemd unit file, keys as written."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys as written: ExecStart, not execstart
    parser.read_string(path.read_text())
    return dict(parser["Service"])


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_units_run_the_installed_wheel_hardened(unit: str) -> None:
    """Each unit runs the installed wheel's command as the chat-policy user, with its env
    file from the examples, writing only to its state directory (the adapter's data dir)."""
    service = unit_service_section(MULTI_HOST / unit)
    assert service["ExecStart"] == f"{INSTALLED} {UNITS[unit]}"
    assert (service["User"], service["Group"]) == ("chat-policy", "chat-policy")
    env_file = Path(service["EnvironmentFile"])
    assert env_file.parent == Path("/etc/chat-policy") and (MULTI_HOST / env_file.name).exists()
    data_dir = example_env(MULTI_HOST / env_file.name).get("CHAT_POLICY_DATA_DIR")
    assert data_dir in (None, STATE_DIRECTORY)
    assert service["StateDirectory"] == "chat-policy"
    assert service["WorkingDirectory"] == STATE_DIRECTORY
    hardening = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
    }
    assert {key: service.get(key) for key in hardening} == hardening


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing to say about either unit (every key known, every
    value parsed), with ExecStart pointed at an executable that exists here."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is not installed (Debian's systemd); CI is set")
        pytest.skip("systemd-analyze is not installed (Debian's systemd)")
    text = (MULTI_HOST / unit).read_text().replace(INSTALLED, shutil.which("true") or "/bin/true")
    (tmp_path / unit).write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
