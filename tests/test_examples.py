"""The shipped examples and the README stay true to the code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from adapter.settings import AdapterSettings
from policy_service.access.access_file import load_access
from policy_service.settings import REMOVED_SETTINGS, ServiceSettings

ROOT = Path(__file__).resolve().parent.parent


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
    """The folders of every top-level package pyproject installs, but the generated protos."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    tops = {name.split(".")[0] for name in packages["packages"]} - set(packages["package-dir"])
    return sorted(ROOT / top for top in tops)


def test_every_setting_is_in_example_env_and_readme() -> None:
    """Each CHAT_POLICY_* variable the code reads is listed in example.env and README."""
    modules = [module for package in product_packages() for module in package.rglob("*.py")]
    assert ROOT / "policy_service" / "settings.py" in modules
    sources = "".join(module.read_text() for module in modules)
    read_by_code = set(re.findall(r'"(CHAT_POLICY_[A-Z_]+)"', sources)) - set(REMOVED_SETTINGS)
    readme = (ROOT / "README.md").read_text()
    assert read_by_code == set(example_env())
    assert {name for name in read_by_code if f"`{name}`" not in readme} == set()


def test_multi_host_examples_are_valid_settings() -> None:
    """The multi-host env files name only real variables, and both processes accept them."""
    known = set(example_env())
    service = example_env(ROOT / "examples" / "multi-host" / "policy-service.env")
    adapter = example_env(ROOT / "examples" / "multi-host" / "adapter.env")
    assert set(service) - known == set() and set(adapter) - known == set()
    assert ServiceSettings.from_env(service).tls_client_ca_file is not None
    assert ServiceSettings.from_env(service).access_file == Path("/etc/chat-policy/access.toml")
    rules = load_access(ROOT / "examples" / "multi-host" / "access.toml")
    assert [grant.caller.name for grant in rules.grants] == ["adapter", "membership", "operators"]
    assert AdapterSettings.from_env(adapter).grpc_target.startswith("dns:///")
