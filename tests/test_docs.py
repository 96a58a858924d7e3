"""Every code sample of the documentation (README.md, docs/*.md) runs, or says why it cannot.

A fenced block is run by its language: a TOML policy is checked and a cases file run by
`chat-policy policy check|test`, an access file loaded by the service's loader, a shell or
Python sample run against a real deployment (the service and the adapter on free ports, as
tests/e2e start them), a JSON sample parsed. A block in any other language that can run (a
client in TypeScript, C++, Go...) must say why it is not run in an HTML comment on the line
before it: `<!-- not run: REASON -->`; so must a shell or Python block that cannot run here.
A cases file runs against the policy sample before it on its page, or against the file named
by `<!-- cases of: PATH -->`. In a shell sample, a comment line holding nothing but JSON is
the output expected of the commands before it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from policy_service.access.access_file import load_access
from tests.e2e.deployment import Deployment, new_deployment

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
CHAT_POLICY = BIN / "chat-policy"
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>[\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not run|cases of):\s*(?P<value>.*?)\s*-->\s*$")
# Languages shown only: output, diagrams, log lines (JSON is parsed, nothing more).
SHOWN = {"", "text", "json"}
# The group the samples ask about, recorded before they run, as the README's webhook does.
GROUP_FULL_WEBHOOK = (
    "SdkAppid=1400000000&CallbackCommand=Group.CallbackAfterGroupFull&contenttype=json",
    b'{"CallbackCommand":"Group.CallbackAfterGroupFull","GroupId":"@TGS#2J4SZEAEL",'
    b'"EventTime":"1670574414123"}',
)


@dataclass(frozen=True)
class Sample:
    """One fenced block of a page: where it is, its language, its text and its marker."""

    page: Path
    line: int
    language: str
    text: str
    marker: tuple[str, str] | None  # ("not run", reason) or ("cases of", path)

    @property
    def name(self) -> str:
        """PAGE:LINE, for test ids and messages."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def kind(self) -> str:
        """How the sample is checked: shown, not run, policy, cases, access, shell, python."""
        if self.marker and self.marker[0] == "not run":
            return "not run"
        if self.language in SHOWN:
            return "shown"
        if self.language == "toml":
            document = tomllib.loads(self.text)
            if "cases" in document:
                return "cases"
            if "version" in document:
                return "policy"
            if "callers" in document or "open" in document:
                return "access"
            return "unknown TOML"
        return {"sh": "shell", "bash": "shell", "python": "python"}.get(self.language, "unknown")


def page_samples(page: Path) -> list[Sample]:
    """Every fenced block of a page, in order, with the marker on the line before it."""
    lines = page.read_text().splitlines()
    samples: list[Sample] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent = len(opening["indent"])
        end = index + 1
        while not lines[end].strip().startswith("```"):
            end += 1
        body = "\n".join(line[indent:] for line in lines[index + 1 : end]) + "\n"
        before = MARKER.match(lines[index - 1]) if index > 0 else None
        marker = (before["kind"], before["value"]) if before else None
        samples.append(Sample(page, index + 1, opening["language"], body, marker))
        index = end + 1
    return samples


SAMPLES = [sample for page in PAGES for sample in page_samples(page)]
RUN_ON_A_DEPLOYMENT = {"shell", "python"}


def write_policy(sample: Sample, directory: Path) -> None:
    """Write the policy a cases sample tests to directory/policy.toml: the file its marker
    names, or else the last policy sample before it on its page."""
    target = directory / "policy.toml"
    if sample.marker and sample.marker[0] == "cases of":
        shutil.copy(ROOT / sample.marker[1], target)
        return
    before = [
        other
        for other in SAMPLES
        if other.page == sample.page and other.line < sample.line and other.kind == "policy"
    ]
    assert before, f"{sample.name}: a cases sample with no policy sample before it"
    target.write_text(before[-1].text)


def chat_policy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run this checkout's `chat-policy ARGS...`; its status and output."""
    return subprocess.run(
        [str(CHAT_POLICY), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def on_deployment(text: str, deployment: Deployment) -> str:
    """A sample's text pointed at the test deployment: its ports, and this checkout's venv."""
    http = f"127.0.0.1:{deployment.http_port}"
    replacements = {
        "https://chat-hooks.example.com/chat/callback": f"http://{http}/",
        "127.0.0.1:8080": http,
        "localhost:8080": http,
        "127.0.0.1:50051": deployment.grpc_target,
        ".venv/bin/": f"{BIN}/",
    }
    for example, real in replacements.items():
        text = text.replace(example, real)
    return text


def expected_outputs(script: str) -> list[object]:
    """The JSON values a shell sample's own comment lines say its commands print."""
    values = []
    for line in script.splitlines():
        comment = line.strip()
        if comment.startswith("# "):
            try:
                values.append(json.loads(comment[2:]))
            except json.JSONDecodeError:
                continue
    return values


def json_values(output: str) -> Iterator[object]:
    """Every JSON object in what a command printed, in order (curl prints no newline)."""
    decoder = json.JSONDecoder()
    position = output.find("{")
    while position != -1:
        try:
            value, end = decoder.raw_decode(output, position)
        except json.JSONDecodeError:
            position = output.find("{", position + 1)
            continue
        yield value
        position = output.find("{", end)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """`chat-policy service` and `chat-policy adapter` on free ports, with the default policy,
    the README's group recorded full."""
    deployment = new_deployment(tmp_path_factory.mktemp("docs-deployment"))
    try:
        deployment.start_service()
        deployment.start_adapter()
        status, body = deployment.post(*GROUP_FULL_WEBHOOK)
        assert (status, json.loads(body)["ErrorCode"]) == (200, 0)
        yield deployment
    finally:
        deployment.stop_all()


def sample_params() -> list[object]:
    return [
        pytest.param(
            sample,
            id=sample.name,
            marks=[pytest.mark.e2e] if sample.kind in RUN_ON_A_DEPLOYMENT else [],
        )
        for sample in SAMPLES
    ]


@pytest.mark.parametrize("sample", sample_params())
def test_sample(sample: Sample, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The sample does what its page says: it loads, passes its cases, or runs and prints
    what its comments say; a sample that cannot run says why."""
    kind = sample.kind
    if kind == "not run":
        assert sample.marker and sample.marker[1], f"{sample.name}: say why it is not run"
    elif kind == "shown":
        if sample.language == "json":
            for line in sample.text.splitlines():
                json.loads(line)
    elif kind == "policy":
        (tmp_path / "policy.toml").write_text(sample.text)
        result = chat_policy("policy", "check", "policy.toml", cwd=tmp_path)
        assert result.returncode == 0, f"{sample.name}:\n{result.stdout}{result.stderr}"
        assert "warning" not in result.stderr, f"{sample.name}:\n{result.stderr}"
    elif kind == "cases":
        write_policy(sample, tmp_path)
        (tmp_path / "cases.toml").write_text(sample.text)
        result = chat_policy("policy", "test", "cases.toml", cwd=tmp_path)
        assert result.returncode == 0, f"{sample.name}:\n{result.stdout}{result.stderr}"
    elif kind == "access":
        (tmp_path / "access.toml").write_text(sample.text)
        assert load_access(tmp_path / "access.toml").grants
    elif kind in RUN_ON_A_DEPLOYMENT:
        run_on_deployment(sample, request.getfixturevalue("deployment"), tmp_path)
    else:
        pytest.fail(
            f"{sample.name}: no way to run a {kind} ({sample.language!r}) sample: run it"
            " here, or say why not with <!-- not run: REASON --> on the line before it"
        )


def run_on_deployment(sample: Sample, deployment: Deployment, tmp_path: Path) -> None:
    """Run a shell or Python sample from the repository's root against the deployment, in
    its environment, with this checkout's `chat-policy` first on PATH."""
    text = on_deployment(sample.text, deployment)
    env = {**deployment.env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if sample.kind == "shell":
        command = ["bash", "-c", "set -eo pipefail\n" + text]
    else:
        script = tmp_path / "sample.py"
        script.write_text(text)
        command = [sys.executable, str(script)]
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    shown = f"{sample.name} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, shown
    printed = iter(list(json_values(result.stdout)))
    for expected in expected_outputs(sample.text):
        assert any(value == expected for value in printed), f"{expected} not printed: {shown}"


def build_site(docs: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of mkdocs.yml with its pages taken from docs."""
    config = docs.parent / "mkdocs.yml"
    shutil.copy(ROOT / "mkdocs.yml", config)
    return subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )


@pytest.mark.parametrize(
    "broken",
    [
        "[a page that is not there](no-such-page.md)",
        "[an anchor that is not there](configuration.md#no-such-setting)",
        "[an anchor of this page that is not there](#no-such-section)",
    ],
)
def test_the_site_build_fails_on_a_broken_link(tmp_path: Path, broken: str) -> None:
    """The strict build that scripts/check runs fails on a link to a missing page or anchor,
    and builds the pages as they are."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    assert build_site(tmp_path / "docs", tmp_path / "site").returncode == 0
    with (tmp_path / "docs" / "index.md").open("a") as page:
        page.write(f"\n{broken}\n")
    failed = build_site(tmp_path / "docs", tmp_path / "site")
    target = broken.split("](")[1].rstrip(")")
    assert failed.returncode != 0 and f"'{target}'" in failed.stderr, failed.stderr


def test_every_page_has_samples_found() -> None:
    """The parser finds the pages' samples: every language it met is one it knows."""
    assert len(SAMPLES) > 30
    assert {sample.language for sample in SAMPLES} >= {"sh", "toml", "python", "json"}
