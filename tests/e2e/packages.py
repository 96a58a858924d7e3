"""chat-policy's two distributions built from this checkout, and clean virtual environments
to install them in, as a production host or another team's service would."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
API_PROJECT = ROOT / "protos"


@dataclass(frozen=True)
class Distributions:
    """The sdists and wheels of chat-policy and chat-policy-api, built into one folder."""

    folder: Path

    def one(self, pattern: str) -> Path:
        """The only file of the folder matching a glob pattern."""
        (found,) = self.folder.glob(pattern)
        return found

    @property
    def server_wheel(self) -> Path:
        return self.one("chat_policy-*.whl")

    @property
    def api_wheel(self) -> Path:
        return self.one("chat_policy_api-*.whl")


def run(*args: str | Path, timeout_s: float = 600, cwd: Path | None = None) -> str:
    """Run a command to completion; its stdout, or the test fails with everything it printed."""
    result = subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=cwd,
        check=False,
    )
    if result.returncode != 0:
        command = " ".join(str(arg) for arg in args)
        pytest.fail(f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def build_distributions(folder: Path) -> Distributions:
    """scripts/build into folder: both projects' sdists and wheels (each wheel built from its
    sdist), checked by twine."""
    run(ROOT / "scripts" / "build", folder)
    assert len(list(folder.iterdir())) == 4, sorted(folder.iterdir())
    return Distributions(folder)


def clean_venv(folder: Path, *requirements: str | Path) -> Path:
    """A new virtual environment with only the requirements (and what they require) installed
    by pip, without this checkout or its dev group; its bin folder."""
    run(sys.executable, "-m", "venv", folder)
    bin_folder = folder / "bin"
    run(bin_folder / "python", "-m", "pip", "install", "--quiet", *requirements)
    run(bin_folder / "python", "-m", "pip", "check")
    return bin_folder


def wheel_files(wheel: Path) -> set[str]:
    """The paths a wheel installs, but its .dist-info."""
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if ".dist-info/" not in name}


def lower_bounds(pyproject: Path) -> dict[str, str]:
    """Each runtime dependency of a pyproject.toml with a `>=` bound (with its extras, as
    `psycopg[binary,pool]`), and that bound."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    bounds = (
        re.fullmatch(r"([A-Za-z0-9._-]+(?:\[[a-z,]+\])?)>=([^,]+),.*", line)
        for line in dependencies
    )
    return {match[1]: match[2] for match in bounds if match}
