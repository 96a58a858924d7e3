"""The wheels as they ship: built from this checkout, installed into clean virtual
environments, and run against one another (README, "Install for production")."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.deployment import Deployment, adapter_serves, new_deployment
from tests.e2e.packages import (
    API_PROJECT,
    ROOT,
    Distributions,
    build_distributions,
    clean_venv,
    lower_bounds,
    run,
    wheel_files,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

# A client of the API alone: what another team's service does with chat-policy-api.
CLIENT = """
import importlib.util, json, sys
from importlib.metadata import version

import grpc
from chatpolicy.v1 import creation_policy_service_pb2 as creation
from chatpolicy.v1 import creation_policy_service_pb2_grpc as creation_rpc

with grpc.insecure_channel(sys.argv[1]) as channel:
    policies = creation_rpc.CreationPolicyServiceStub(channel)
    policy = policies.GetPolicy(creation.GetPolicyRequest(), timeout=5)
    decision = policies.CheckGroupCreation(
        creation.CheckGroupCreationRequest(
            sdk_app_id=1400000000, operator_account="alice", group_type="Public", name="Books"
        ),
        timeout=5,
    )
print(json.dumps({
    "grpcio": version("grpcio"),
    "protobuf": version("protobuf"),
    "project_code": importlib.util.find_spec("policy_service") is not None,
    "policy_revision": policy.policy_revision,
    "decision": creation.Decision.Name(decision.decision),
    "decided_by_revision": decision.policy_revision,
}))
"""


@pytest.fixture(scope="module")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> Distributions:
    """Both projects' sdists and wheels, built once for this module."""
    return build_distributions(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def oldest_client(distributions: Distributions, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a venv with chat-policy-api and the oldest grpcio and protobuf it
    allows: nothing else of this checkout."""
    oldest = [
        f"{name}=={bound}" for name, bound in lower_bounds(API_PROJECT / "pyproject.toml").items()
    ]
    return clean_venv(tmp_path_factory.mktemp("client") / "venv", distributions.api_wheel, *oldest)


@pytest.fixture
def service_deployment(tmp_path: Path) -> Iterator[Deployment]:
    """A deployment on free ports, a webhook token set, and group creations refused when the
    policy service does not decide them; every process stopped afterwards."""
    deployment = new_deployment(
        tmp_path, CHAT_POLICY_CALLBACK_TOKENS="release-token", CHAT_POLICY_ON_POLICY_ERROR="deny"
    )
    deployment.env.pop("PYTHONPATH", None)
    yield deployment
    deployment.stop_all()


def test_wheels_hold_the_code_and_its_data(distributions: Distributions) -> None:
    """chat-policy's wheel holds every package of the checkout and the default policy, and no
    generated code; chat-policy-api's holds every generated module, stub and .proto."""
    server = wheel_files(distributions.server_wheel)
    packages = ("adapter", "policy_service", "chat_policy_shared", "chat_policy_cli")
    modules = {
        str(path.relative_to(ROOT)) for top in packages for path in (ROOT / top).rglob("*.py")
    }
    assert server == modules | {"policy_service/default_policy.toml"}

    api = wheel_files(distributions.api_wheel)
    generated = API_PROJECT / "chatpolicy"
    shipped = {"*.py", "*.pyi", "*.proto", "py.typed"}
    assert api == {
        str(path.relative_to(API_PROJECT))
        for pattern in shipped
        for path in generated.rglob(pattern)
        if "__pycache__" not in path.parts
    }
    assert "chatpolicy/py.typed" in api


GRPC = ("grpcio", "protobuf")  # the grpcio* packages and protobuf


def oldest_grpc_and_protobuf() -> list[str]:
    """chat-policy's grpc packages and protobuf pinned to their lower bounds."""
    bounds = lower_bounds(ROOT / "pyproject.toml")
    return [f"{name}=={bound}" for name, bound in bounds.items() if name.startswith(GRPC)]


def oldest_of_all() -> list[str]:
    """Every runtime dependency of chat-policy pinned to its lower bound."""
    return [f"{name}=={bound}" for name, bound in lower_bounds(ROOT / "pyproject.toml").items()]


@pytest.mark.parametrize(
    "pins",
    [[], oldest_grpc_and_protobuf(), oldest_of_all()],
    ids=["newest", "oldest-grpc", "oldest-of-all"],
)
def test_installed_wheel_answers_a_signed_webhook(
    distributions: Distributions, service_deployment: Deployment, tmp_path: Path, pins: list[str]
) -> None:
    """`chat-policy run` from a venv holding only the two wheels and their runtime
    dependencies (the newest pip finds, the oldest grpc and protobuf allowed, or the oldest
    release every runtime dependency allows) decides a
    signed group creation with the shipped default policy."""
    installed = clean_venv(
        tmp_path / "venv", distributions.api_wheel, distributions.server_wheel, *pins
    )
    assert "pytest" not in run(installed / "python", "-m", "pip", "list")
    service_deployment.chat_policy = installed / "chat-policy"
    process = service_deployment.start("run", new_session=True)
    wait_for(
        lambda: process.poll() is None and adapter_serves(service_deployment.http_port),
        60,
        "the installed chat-policy run to serve webhooks",
    )

    url = f"http://127.0.0.1:{service_deployment.http_port}/"
    simulated = service_deployment.command("simulate", "BeforeCreateGroup", "--url", url, "--json")

    # 0: HTTP 200, ErrorCode 0, signature checked and decided by the service (not fail-closed).
    assert simulated.returncode == 0, simulated.stdout + simulated.stderr
    assert json.loads(simulated.stdout)["response"]["answer"]["ErrorCode"] == 0


def test_api_package_calls_a_service_with_the_oldest_grpcio_and_protobuf(
    oldest_client: Path, tmp_path: Path
) -> None:
    """From a venv with only chat-policy-api at its lowest grpcio and protobuf, GetPolicy
    and CheckGroupCreation reach a running service."""
    deployment = new_deployment(tmp_path)
    try:
        deployment.start_service()
        (tmp_path / "client.py").write_text(CLIENT)
        answer = json.loads(
            run(oldest_client / "python", "client.py", deployment.grpc_target, cwd=tmp_path)
        )
    finally:
        deployment.stop_all()

    bounds = lower_bounds(API_PROJECT / "pyproject.toml")
    assert (answer["grpcio"], answer["protobuf"]) == (bounds["grpcio"], bounds["protobuf"])
    assert answer["project_code"] is False
    assert answer["decision"] == "DECISION_ALLOW"
    assert answer["decided_by_revision"] == answer["policy_revision"] != ""


def test_api_package_type_stubs_are_seen_by_mypy(oldest_client: Path, tmp_path: Path) -> None:
    """mypy, pointed at the client venv, reads chat-policy-api's stubs (py.typed): a valid
    client passes, a field of the wrong type is an error."""
    (tmp_path / "client.py").write_text(CLIENT)
    (tmp_path / "wrong.py").write_text(
        "from chatpolicy.v1 import creation_policy_service_pb2 as creation\n"
        'creation.CheckGroupCreationRequest(sdk_app_id="1400000000")\n'
    )
    mypy = [
        sys.executable,
        "-m",
        "mypy",
        "--python-executable",
        str(oldest_client / "python"),
        "--ignore-missing-imports",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    run(*mypy, "client.py", cwd=tmp_path)
    with pytest.raises(pytest.fail.Exception, match=r'"sdk_app_id".*"str"'):
        run(*mypy, "wrong.py", cwd=tmp_path)
