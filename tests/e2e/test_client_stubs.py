"""Other languages' clients: stubs from scripts/generate-stubs, used by the example clients
under examples/clients/ (Node.js in TypeScript, C++, Go) against a real `chat-policy service`.

Each client is built once per session in a temporary directory, the way a user would build it
(`npm ci` from the committed lock file, generated code, tsc / CMake / go build), and then run.
A missing toolchain skips the test with the tool's name and package, or fails it when CI is
set: scripts/install-stub-toolchains installs what they need.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import grpc
import pytest

from bench.processes import free_port
from chatpolicy.v1 import group_state_service_pb2, group_state_service_pb2_grpc
from tests.e2e.deployment import Deployment

# Building the C++ client takes about half a minute on two cores, and the first test that
# asks for a client pays for its build.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
GENERATE_STUBS = REPO / "scripts" / "generate-stubs"
CLIENTS = REPO / "examples" / "clients"
PROTOS = REPO / "protos" / "chatpolicy" / "v1"
MISSING_TOOL = 3  # generate-stubs' exit status when a tool it needs is missing
BUILD_TIMEOUT_S = 300
SDKAPPID = 1400000000

# The tools the builds need besides generate-stubs' own, and what provides them.
BUILD_TOOLS = {
    "node": "Debian package nodejs",
    "npm": "Debian package npm",
    "cmake": "Debian package cmake",
    "make": "Debian package make",
    "c++": "Debian package g++",
    "pkg-config": "Debian package pkg-config",
    "go": "Debian package golang-go",
}
# Debian's Go packages that the Go client builds against in GOPATH mode, offline.
DEBIAN_GOPATH = Path("/usr/share/gocode")
GO_PACKAGES = {
    "google.golang.org/grpc": "golang-google-grpc-dev",
    "google.golang.org/protobuf": "golang-google-protobuf-dev",
    "github.com/golang/protobuf": "golang-github-golang-protobuf-1-5-dev",
}


def toolchain_missing(what: str) -> NoReturn:
    """Skip the test because of what is missing; fail it instead when CI is set."""
    hint = "scripts/install-stub-toolchains"
    reason = what if hint in what else f"{what}; {hint} installs it"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(f"{reason}; set CI=1 to make this a failure")


def require(*tools: str) -> None:
    """Every tool is on PATH, or the test skips (fails in CI) naming the first missing one."""
    for tool in tools:
        if shutil.which(tool) is None:
            toolchain_missing(f"{tool} is missing (from {BUILD_TOOLS[tool]})")


def run(
    command: Sequence[str | Path],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = BUILD_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; fail the test with its output when it fails."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, command))} exited with {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def generate_stubs(language: str, out: Path, env: Mapping[str, str] | None = None) -> None:
    """scripts/generate-stubs LANGUAGE OUT; a missing tool skips (fails in CI) with its message."""
    result = subprocess.run(
        [str(GENERATE_STUBS), language, str(out)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if result.returncode == MISSING_TOOL:
        toolchain_missing(" ".join(result.stderr.split()))
    if result.returncode != 0:
        pytest.fail(f"generate-stubs {language} exited with {result.returncode}:\n{result.stderr}")


def go_env(gopath: Path) -> dict[str, str]:
    """Go in GOPATH mode over Debian's packages: no module proxy, no network."""
    return {
        "GO111MODULE": "off",
        "GOPATH": f"{gopath}{os.pathsep}{DEBIAN_GOPATH}",
        "GOFLAGS": "",
        "GOPROXY": "off",
    }


def require_go() -> None:
    """Go and Debian's gRPC and protobuf Go packages are installed."""
    require("go")
    for package, debian_package in GO_PACKAGES.items():
        if not (DEBIAN_GOPATH / "src" / package).is_dir():
            toolchain_missing(f"Go package {package} is missing (from {debian_package})")


@dataclass(frozen=True)
class Client:
    """A built example client: the command that runs it, before its arguments."""

    language: str
    command: tuple[str, ...]

    def run(self, target: str, group_id: str) -> subprocess.CompletedProcess[str]:
        """Run the client against target for group_id; its output and exit status."""
        return subprocess.run(
            [*self.command, target, group_id],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="session")
def client_builds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for the session's npm installs, generated code and builds."""
    return tmp_path_factory.mktemp("client-builds")


@pytest.fixture(scope="session")
def node_client(client_builds: Path) -> Client:
    """The Node.js client: npm ci from the lock file, TypeScript stubs, compiled by tsc."""
    require("node", "npm")
    package = client_builds / "node"
    shutil.copytree(
        CLIENTS / "node",
        package,
        ignore=shutil.ignore_patterns("node_modules", "dist", "generated"),
    )
    # --ignore-scripts: protobufjs' postinstall only checks its optional CLI's version.
    run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=package)
    generate_stubs(
        "typescript",
        package / "generated",
        {"CHAT_POLICY_NODE_MODULES": str(package / "node_modules")},
    )
    run(["node", "node_modules/typescript/bin/tsc", "--project", "."], cwd=package)
    return Client("node", (shutil.which("node") or "node", str(package / "dist/src/client.js")))


@pytest.fixture(scope="session")
def cpp_client(client_builds: Path) -> Client:
    """The C++ client: Debian's protoc and grpc_cpp_plugin, built with CMake."""
    require("cmake", "make", "c++", "pkg-config")
    stubs = client_builds / "cpp-stubs"
    generate_stubs("cpp", stubs)
    if subprocess.run(["pkg-config", "--exists", "grpc++"], check=False).returncode != 0:
        toolchain_missing("grpc++ is missing (from Debian package libgrpc++-dev)")
    build = client_builds / "cpp-build"
    run(
        ["cmake", "-S", CLIENTS / "cpp", "-B", build, f"-DCHATPOLICY_STUBS_DIR={stubs}"],
        cwd=client_builds,
    )
    run(["cmake", "--build", build, "--parallel", str(os.cpu_count() or 2)], cwd=client_builds)
    return Client("cpp", (str(build / "chat-policy-client"),))


@pytest.fixture(scope="session")
def go_stubs(client_builds: Path) -> Path:
    """A GOPATH whose src/ holds the Go stubs (import path chatpolicy/v1)."""
    gopath = client_builds / "gopath"
    generate_stubs("go", gopath / "src")
    return gopath


@pytest.fixture(scope="session")
def go_client(client_builds: Path, go_stubs: Path) -> Client:
    """The Go client, built offline in GOPATH mode against Debian's gRPC and protobuf."""
    require_go()
    binary = client_builds / "go-client"
    run(["go", "build", "-o", binary, "main.go"], cwd=CLIENTS / "go", env=go_env(go_stubs))
    return Client("go", (str(binary),))


@pytest.fixture(params=["node", "cpp", "go"])
def client(request: pytest.FixtureRequest) -> Client:
    """Each example client in turn, built."""
    built: Client = request.getfixturevalue(f"{request.param}_client")
    return built


def test_each_client_records_reads_and_checks(deployment: Deployment, client: Client) -> None:
    """A client records a full group, reads it back full once, and sees a creation allowed."""
    deployment.start_service()
    group_id = f"@TGS#{client.language}-client"

    result = client.run(deployment.grpc_target, group_id)

    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    recorded = answers["record_group_full"]
    assert recorded["applied"] is True
    assert recorded["group_state"]["group_id"] == group_id
    state = answers["get_group_state"]["group_state"]
    assert (state["group_id"], state["full"], state["destroyed"]) == (group_id, True, False)
    assert int(state["full_event_count"]) == 1  # int64: a string in JSON
    assert state["last_event_kind"] == "GROUP_EVENT_KIND_FULL"
    decision = answers["check_group_creation"]
    assert decision["decision"] == "DECISION_ALLOW"
    assert decision["error_code"] == 0
    assert decision["decision_id"]
    assert decision["rule_id"] == "default"
    # The service itself kept what the client recorded.
    with grpc.insecure_channel(deployment.grpc_target) as channel:
        kept = group_state_service_pb2_grpc.GroupStateServiceStub(channel).GetGroupState(
            group_state_service_pb2.GetGroupStateRequest(sdk_app_id=SDKAPPID, group_id=group_id),
            timeout=5,
        )
    assert kept.group_state.full and kept.group_state.full_event_count == 1


def test_each_client_exits_1_when_the_service_is_unreachable(client: Client) -> None:
    """A client whose RPC fails says why on stderr and exits 1, printing no answer."""
    result = client.run(f"127.0.0.1:{free_port()}", "@TGS#nobody-home")

    assert result.returncode == 1
    assert result.stdout == ""
    assert "client: RecordGroupFull failed: " in result.stderr


def test_python_stubs_are_the_committed_ones(tmp_path: Path) -> None:
    """generate-stubs python writes exactly the committed protos/chatpolicy/v1/*_pb2*.py(i)."""
    generate_stubs("python", tmp_path)

    generated = {path.name: path.read_bytes() for path in (tmp_path / "chatpolicy/v1").iterdir()}
    committed = {path.name: path.read_bytes() for path in PROTOS.glob("*_pb2*.py*")}
    assert sorted(generated) == sorted(committed)
    stale = [name for name in sorted(generated) if generated[name] != committed[name]]
    assert not stale, f"committed code differs from generated: {stale}; run scripts/generate-protos"


def test_go_stubs_are_generated_and_compile(go_stubs: Path) -> None:
    """generate-stubs go writes a .pb.go per proto and a _grpc.pb.go per service; they compile."""
    package = go_stubs / "src" / "chatpolicy" / "v1"
    protos = sorted(path.stem for path in PROTOS.glob("*.proto"))
    services = sorted(
        path.stem for path in PROTOS.glob("*.proto") if "\nservice " in path.read_text()
    )
    expected = [f"{stem}.pb.go" for stem in protos] + [f"{stem}_grpc.pb.go" for stem in services]
    assert sorted(path.name for path in package.glob("*.go")) == sorted(expected)
    assert services, "no proto declares a service"
    for path in package.glob("*.go"):
        assert "\npackage chatpolicyv1\n" in path.read_text()

    require_go()
    run(["go", "build", "chatpolicy/v1"], cwd=go_stubs, env=go_env(go_stubs))


def test_generate_stubs_refuses_an_unknown_language(tmp_path: Path) -> None:
    """generate-stubs with a language it does not know prints its usage and exits 2."""
    result = subprocess.run(
        [str(GENERATE_STUBS), "cobol", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.startswith("usage: scripts/generate-stubs {python|typescript|cpp|go}")
    assert not (tmp_path / "out").exists()
