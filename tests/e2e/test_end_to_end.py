"""The whole path with real processes: Chat's sample webhooks through gunicorn into the service."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from grpc_status import rpc_status

from adapter.signature import compute_sign
from chatpolicy.v1 import creation_policy_service_pb2 as cpb
from chatpolicy.v1 import creation_policy_service_pb2_grpc, group_state_service_pb2_grpc
from chatpolicy.v1 import group_state_service_pb2 as pb
from tests.chat_samples import BEFORE_CREATE_SAMPLE, GROUP_FULL_SAMPLE, OK
from tests.e2e.deployment import Deployment
from tests.e2e.webhook_requests import SDKAPPID, body, query
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def group_state(deployment: Deployment, group_id: str) -> pb.GetGroupStateResponse:
    """GetGroupState over gRPC, as another service would ask."""
    with grpc.insecure_channel(deployment.grpc_target) as channel:
        stub = group_state_service_pb2_grpc.GroupStateServiceStub(channel)
        request = pb.GetGroupStateRequest(sdk_app_id=SDKAPPID, group_id=group_id)
        response: pb.GetGroupStateResponse = stub.GetGroupState(request, timeout=5)
        return response


def assert_not_found(deployment: Deployment, group_id: str) -> None:
    """The service has no state for the group (NOT_FOUND with the documented reason)."""
    with pytest.raises(grpc.RpcError) as raised:
        group_state(deployment, group_id)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    status = rpc_status.from_call(raised.value)
    assert status is not None
    assert b"ERROR_REASON_GROUP_NOT_FOUND" in status.details[0].value


@pytest.fixture
def running(deployment: Deployment) -> Deployment:
    """The service and the adapter started as separate commands, auth off."""
    deployment.env["CHAT_POLICY_SDKAPPIDS"] = str(SDKAPPID)
    deployment.start_service()
    deployment.start_adapter()
    return deployment


@pytest.mark.parametrize("event_time", ["1670574414123", 1670574414123])
def test_sample_webhooks_are_answered_as_chat_expects(
    running: Deployment, event_time: object
) -> None:
    """Both documented samples get Chat's exact OK answer, and the group is then full."""
    status, answer = running.post(
        query("Group.CallbackBeforeCreateGroup"),
        body(BEFORE_CREATE_SAMPLE, EventTime=event_time),
    )
    assert (status, answer) == (200, OK)

    status, answer = running.post(
        query("Group.CallbackAfterGroupFull"), body(GROUP_FULL_SAMPLE, EventTime=event_time)
    )
    assert (status, answer) == (200, OK)

    state = group_state(running, "@TGS#2J4SZEAEL").group_state
    assert state.full
    assert state.sdk_app_id == SDKAPPID
    assert state.full_since.ToMilliseconds() == 1670574414123
    assert state.last_event_time.ToMilliseconds() == 1670574414123
    assert state.full_event_count == 1


def test_repeated_and_later_full_events_are_counted_once_each(running: Deployment) -> None:
    """A redelivered event changes nothing; a later one counts another refused join."""
    for event_time in ("1670574414123", "1670574414123", "1670574415000"):
        status, answer = running.post(
            query("Group.CallbackAfterGroupFull"),
            body(GROUP_FULL_SAMPLE, EventTime=event_time, TopicId="@TGS#_topic"),
        )
        assert (status, answer) == (200, OK)
    with grpc.insecure_channel(running.grpc_target) as channel:
        state = (
            group_state_service_pb2_grpc.GroupStateServiceStub(channel)
            .GetGroupState(
                pb.GetGroupStateRequest(
                    sdk_app_id=SDKAPPID, group_id="@TGS#2J4SZEAEL", topic_id="@TGS#_topic"
                ),
                timeout=5,
            )
            .group_state
        )
    assert state.full_event_count == 2
    assert state.full_since.ToMilliseconds() == 1670574414123
    assert state.last_event_time.ToMilliseconds() == 1670574415000
    assert_not_found(running, "@TGS#2J4SZEAEL")


def test_a_chunked_body_is_read_and_held_to_the_limit(running: Deployment) -> None:
    """A webhook sent chunked, without Content-Length, is read like any other; one byte past
    the body limit is 413 and records nothing."""
    status, answer = running.post(
        query("Group.CallbackAfterGroupFull"),
        body(GROUP_FULL_SAMPLE, GroupId="@TGS#chunked"),
        chunked=True,
    )
    assert (status, answer) == (200, OK)
    assert group_state(running, "@TGS#chunked").group_state.full_event_count == 1
    too_large = body(GROUP_FULL_SAMPLE, GroupId="@TGS#chunked-large")
    too_large = too_large[:-1] + b" " * (65536 + 1 - len(too_large)) + b"}"
    status, answer = running.post(query("Group.CallbackAfterGroupFull"), too_large, chunked=True)
    assert (status, json.loads(answer)["ErrorCode"]) == (413, 413)
    assert_not_found(running, "@TGS#chunked-large")


def test_policy_refusal_reaches_chat_with_the_rules_code(deployment: Deployment) -> None:
    """A deny rule in the policy file becomes Chat's refusal answer, ActionStatus still OK."""
    policy = deployment.tmp_path / "policy.toml"
    policy.write_text(
        'version = 1\n[[rules]]\nid = "no-public"\neffect = "deny"\n'
        'error_code = 10123\nerror_info = "Public groups are closed"\ngroup_types = ["Public"]\n'
    )
    deployment.env.update(CHAT_POLICY_SDKAPPIDS=str(SDKAPPID), CHAT_POLICY_POLICY_FILE=str(policy))
    deployment.start_service()
    deployment.start_adapter()

    status, answer = deployment.post(
        query("Group.CallbackBeforeCreateGroup"), body(BEFORE_CREATE_SAMPLE)
    )
    assert status == 200
    assert (
        answer == b'{"ActionStatus":"OK","ErrorCode":10123,"ErrorInfo":"Public groups are closed"}'
    )

    status, answer = deployment.post(
        query("Group.CallbackBeforeCreateGroup"), body(BEFORE_CREATE_SAMPLE, Type="Work")
    )
    assert (status, answer) == (200, OK)


def test_refused_webhooks_get_4xx_and_record_nothing(deployment: Deployment) -> None:
    """Wrong SdkAppid or a bad signature is answered 403/401 and never reaches the store."""
    deployment.env.update(
        CHAT_POLICY_SDKAPPIDS=str(SDKAPPID), CHAT_POLICY_CALLBACK_TOKENS="old-token,new-token"
    )
    deployment.start_service()
    deployment.start_adapter()
    now = str(int(time.time()))

    status, answer = deployment.post(
        query(
            "Group.CallbackAfterGroupFull",
            sdk_app_id=1400000001,
            RequestTime=now,
            Sign=compute_sign("new-token", now),
        ),
        body(GROUP_FULL_SAMPLE, GroupId="@TGS#wrong-app"),
    )
    assert status == 403
    assert json.loads(answer)["ActionStatus"] == "FAIL"
    assert_not_found(deployment, "@TGS#wrong-app")

    status, answer = deployment.post(
        query("Group.CallbackAfterGroupFull", RequestTime=now, Sign=compute_sign("other", now)),
        body(GROUP_FULL_SAMPLE, GroupId="@TGS#bad-sign"),
    )
    assert status == 401
    assert json.loads(answer) == {
        "ActionStatus": "FAIL",
        "ErrorCode": 401,
        "ErrorInfo": "webhook signature rejected: Sign does not match",
    }
    assert_not_found(deployment, "@TGS#bad-sign")

    status, answer = deployment.post(
        query("Group.CallbackAfterGroupFull", RequestTime=now, Sign=compute_sign("old-token", now)),
        body(GROUP_FULL_SAMPLE, GroupId="@TGS#signed"),
    )
    assert (status, answer) == (200, OK)
    assert group_state(deployment, "@TGS#signed").group_state.full
    assert "old-token" not in deployment.log("adapter")
    assert compute_sign("old-token", now) not in deployment.log("adapter")


def json_lines(text: str) -> list[dict[str, object]]:
    """A process's log, one JSON document per line (every line must be one)."""
    return [json.loads(line) for line in text.splitlines()]


def test_a_relayed_webhook_leaves_one_info_line_with_the_decision_and_no_secrets(
    deployment: Deployment,
) -> None:
    """A relayed creation leaves one INFO line across both processes with the caller's
    X-Request-ID: the adapter's, carrying the decision (the service's line for the call it
    relayed is DEBUG); the decision is still recorded; no token or Sign is in either log."""
    deployment.env.update(CHAT_POLICY_SDKAPPIDS=str(SDKAPPID), CHAT_POLICY_CALLBACK_TOKENS="tok3n")
    deployment.start_service()
    deployment.start_adapter()
    now = str(int(time.time()))
    sign = compute_sign("tok3n", now)
    status, _ = deployment.post(
        query("Group.CallbackBeforeCreateGroup", RequestTime=now, Sign=sign),
        body(BEFORE_CREATE_SAMPLE),
        headers={"X-Request-ID": "e2e-trace-1"},
    )
    assert status == 200
    info = [
        line
        for process in ("adapter", "service")
        for line in json_lines(deployment.log(process))
        if line.get("request_id") == "e2e-trace-1" and line["level"] == "INFO"
    ]
    assert [(line["logger"], line["outcome"], line["rule"]) for line in info] == [
        ("adapter.request", "allowed", "default")
    ]
    [line] = info
    assert str(line["revision"]).startswith("sha256:")
    with grpc.insecure_channel(deployment.grpc_target) as channel:
        creation = creation_policy_service_pb2_grpc.CreationPolicyServiceStub(channel)

        def recorded() -> list[cpb.DecisionRecord]:
            request = cpb.ListDecisionsRequest(decision_id=str(line["decision_id"]))
            return list(creation.ListDecisions(request, timeout=5).decisions)

        wait_for(lambda: len(recorded()) == 1, 10, "the decision's record")
        assert recorded()[0].rule_id == "default"
    for log in (deployment.log("adapter"), deployment.log("service")):
        assert "tok3n" not in log and sign not in log
