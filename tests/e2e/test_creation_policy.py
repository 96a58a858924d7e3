"""The group-creation policy with real processes: webhook and gRPC agree, rate limits are
shared by replicas on PostgreSQL, and SIGHUP reloads the policy of a running service."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import grpc
import pytest

from bench.processes import free_port
from chatpolicy.v1 import creation_policy_service_pb2 as pb
from chatpolicy.v1 import creation_policy_service_pb2_grpc
from tests.e2e.deployment import START_TIMEOUT_S, Deployment
from tests.postgres import PostgresSchema
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

SDKAPPID = 1400000000
EXAMPLE_POLICY = Path(__file__).parents[2] / "examples" / "policy.toml"

RATE_POLICY = """version = 1
[[rules]]
id = "five-an-hour"
kind = "rate_limit"
limit = 5
window = "1h"
error_code = 10107
error_info = "Too fast."
"""


def stub(
    target: str,
) -> tuple[grpc.Channel, creation_policy_service_pb2_grpc.CreationPolicyServiceStub]:
    """A channel to target and a CreationPolicyService client on it."""
    channel = grpc.insecure_channel(target)
    return channel, creation_policy_service_pb2_grpc.CreationPolicyServiceStub(channel)


def start_replica(deployment: Deployment, port: int) -> None:
    """Start `chat-policy service` on port and wait until it answers."""
    process = deployment.start("service", {"CHAT_POLICY_GRPC_BIND": f"127.0.0.1:{port}"})
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        ready = grpc.channel_ready_future(channel)

        def answers() -> bool:
            if process.poll() is not None:
                pytest.fail(f"service exited: {deployment.log('service')}")
            try:
                ready.result(timeout=0.1)
            except grpc.FutureTimeoutError:
                return False
            return True

        wait_for(answers, START_TIMEOUT_S, f"the replica on port {port}")


def test_a_rate_limit_is_shared_by_two_replicas_on_postgresql(
    postgres_schema: PostgresSchema, deployment: Deployment
) -> None:
    """24 concurrent creations by one operator through two replicas: exactly 5 are allowed,
    and each replica's ListDecisions shows all 24."""
    policy = deployment.tmp_path / "policy.toml"
    policy.write_text(RATE_POLICY)
    deployment.env["CHAT_POLICY_DATABASE_URL"] = postgres_schema.url
    deployment.env["CHAT_POLICY_POLICY_FILE"] = str(policy)
    port_b = free_port()
    start_replica(deployment, deployment.grpc_port)
    start_replica(deployment, port_b)
    targets = [deployment.grpc_target, f"127.0.0.1:{port_b}"]
    decisions: list[int] = []
    lock = threading.Lock()

    def create(thread: int) -> None:
        channel, creation = stub(targets[thread % 2])
        with channel:
            for _ in range(3):
                response = creation.CheckGroupCreation(
                    pb.CheckGroupCreationRequest(sdk_app_id=SDKAPPID, operator_account="alice"),
                    timeout=10,
                )
                with lock:
                    decisions.append(response.decision)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert decisions.count(pb.DECISION_ALLOW) == 5
    assert decisions.count(pb.DECISION_DENY) == 19
    for target in targets:
        channel, creation = stub(target)
        with channel:

            def listed(creation=creation) -> list[pb.DecisionRecord]:  # type: ignore[no-untyped-def]
                page = creation.ListDecisions(
                    pb.ListDecisionsRequest(operator_account="alice", page_size=100), timeout=10
                )
                return list(page.decisions)

            wait_for(lambda: len(listed()) == 24, 10, f"24 decision records via {target}")
            records = listed()
            assert sum(r.decision == pb.DECISION_ALLOW for r in records) == 5
            assert {r.rule_id for r in records} == {"default", "five-an-hour"}


# (query parameters, body fields over Chat's sample with CreateGroupNum 3, what Chat is told)
WEBHOOK_CASES = [
    ({"OptPlatform": "iOS"}, {"Operator_Account": "u1", "Owner_Account": "u1"}, (0, "")),
    (
        {"OptPlatform": "Web"},
        {"Operator_Account": "u2", "Owner_Account": "u2", "Type": "Public"},
        (10101, "Public groups can only be created from the mobile apps."),
    ),
    (
        {"OptPlatform": "Android"},
        {
            "Operator_Account": "u3",
            "Owner_Account": "u3",
            "Name": "\uff23\uff21\uff33\uff29\uff2e\uff2f night",
        },
        (10103, "Please choose another group name."),
    ),
    (
        {"OptPlatform": "Android"},
        {"Operator_Account": "u4", "Owner_Account": "someone-else"},
        (10102, "You can only create groups that you own."),
    ),
    (
        {"OptPlatform": "iOS"},
        {"Operator_Account": "u5", "Owner_Account": "u5", "CreateGroupNum": 10},
        (10105, "You already own 10 public groups."),
    ),
    (
        {"OptPlatform": "iOS"},
        {"Operator_Account": "spammer-1", "Owner_Account": "spammer-1"},
        (10100, "This account may not create groups."),
    ),
    (
        {},
        {
            "Operator_Account": "u6",
            "Owner_Account": "u6",
            "Type": "Private",
            "MemberList": [{"Member_Account": "x"}, {"Member_Account": "x"}],
        },
        (10104, "The member list is too long or names an account that cannot join."),
    ),
    ({}, {"Operator_Account": "administrator", "Type": "AVChatRoom"}, (0, "")),
    ({}, {"Operator_Account": "u7", "Owner_Account": "u7", "Type": "AVChatRoom"}, (1, "")),
]


def test_the_webhook_and_grpc_give_the_same_answer(deployment: Deployment) -> None:
    """For each example-policy case, the adapter's ErrorCode/ErrorInfo for Chat's webhook
    equal CheckGroupCreation's error_code/error_info for the same request."""
    from tests.chat_samples import BEFORE_CREATE_SAMPLE

    policy = deployment.tmp_path / "policy.toml"
    shutil.copy(EXAMPLE_POLICY, policy)
    deployment.env["CHAT_POLICY_POLICY_FILE"] = str(policy)
    deployment.env["CHAT_POLICY_SDKAPPIDS"] = str(SDKAPPID)
    deployment.start_service()
    deployment.start_adapter()
    channel, creation = stub(deployment.grpc_target)
    with channel:
        for params, changes, expected in WEBHOOK_CASES:
            document = {**BEFORE_CREATE_SAMPLE, "CreateGroupNum": 3, **changes}
            query = {
                "SdkAppid": str(SDKAPPID),
                "CallbackCommand": "Group.CallbackBeforeCreateGroup",
                "contenttype": "json",
                "ClientIP": "203.0.113.7",
                **params,
            }
            status, body = deployment.post(
                "&".join(f"{k}={v}" for k, v in query.items()), json.dumps(document).encode()
            )
            assert status == 200
            answer = json.loads(body)
            request = pb.CheckGroupCreationRequest(
                sdk_app_id=SDKAPPID,
                operator_account=document["Operator_Account"],
                owner_account=document.get("Owner_Account", ""),
                group_type=document["Type"],
                name=document["Name"],
                create_group_num=document["CreateGroupNum"],
                member_accounts=[m["Member_Account"] for m in document["MemberList"]],
                client_ip="203.0.113.7",
                opt_platform=params.get("OptPlatform", ""),
            )
            request.event_time.FromMilliseconds(int(document["EventTime"]))
            response = creation.CheckGroupCreation(request, timeout=5)
            webhook = (answer["ErrorCode"], answer["ErrorInfo"])
            assert webhook == (response.error_code, response.error_info), changes
            assert webhook == expected, changes


def test_sighup_reloads_the_policy_of_a_running_service(deployment: Deployment) -> None:
    """SIGHUP reloads a change the file poll cannot see (same inode, size and mtime); the
    service keeps running, and a broken policy sent the same way is refused."""
    policy = deployment.tmp_path / "policy.toml"
    allow = 'version = 1\n[default]\neffect = "allow"\n'
    deny = 'version = 1\n[default]\neffect = "deny"\n'
    assert len(allow) == len(deny) + 1
    policy.write_text(allow)
    deployment.env["CHAT_POLICY_POLICY_FILE"] = str(policy)
    process = deployment.start_service()
    channel, creation = stub(deployment.grpc_target)
    with channel:

        def decision() -> int:
            request = pb.CheckGroupCreationRequest(sdk_app_id=SDKAPPID, operator_account="a")
            return int(creation.CheckGroupCreation(request, timeout=5).decision)

        assert decision() == pb.DECISION_ALLOW
        stat = policy.stat()
        policy.write_text(deny + " ")
        os.utime(policy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        os.kill(process.pid, signal.SIGHUP)
        wait_for(lambda: decision() == pb.DECISION_DENY, 10, "SIGHUP to reload the policy")
        policy.write_text("version = 2\n")
        os.kill(process.pid, signal.SIGHUP)

        def refused() -> bool:
            described = creation.GetPolicy(pb.GetPolicyRequest(), timeout=5)
            return "version" in described.last_reload_error

        wait_for(refused, 10, "the broken policy to be refused")
        assert decision() == pb.DECISION_DENY
        assert process.poll() is None
    assert "policy reload refused" in deployment.log("service")
