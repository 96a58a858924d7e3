"""Outages with real processes: the policy service or the adapter killed, the spool full.

Chat must get its answer inside 2 s whatever is down, and every after-event answered 200 must
reach the policy service's store once it is back, through the adapter's on-disk spool, even
when the adapter itself was killed in between.
"""

from __future__ import annotations

import json
import time
import urllib.request

import grpc
import pytest

from bench.processes import tcp_listening
from chatpolicy.v1 import group_state_service_pb2, group_state_service_pb2_grpc
from tests.chat_samples import BEFORE_CREATE_SAMPLE, OK
from tests.e2e.deployment import Deployment
from tests.e2e.spooled_events import (
    BASE_MS,
    BEFORE_CREATE,
    GROUP_DESTROYED,
    GROUP_FULL,
    MEMBER_EXIT,
    REPLAY_TIMEOUT_S,
    SDKAPPID,
    Expected,
    after_event,
    post_timed,
    read_spool,
    spool_depth,
    wait_for_state,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def wait_until_port_free(port: int) -> None:
    """Wait until nothing accepts connections on the HTTP port any more."""
    wait_for(lambda: not tcp_listening(port), 10, f"port {port} to be free")


def test_events_during_a_service_crash_are_answered_in_time_and_replayed(
    deployment: Deployment,
) -> None:
    """With the service SIGKILLed Chat gets 200 OK in < 2 s, and every event lands after restart."""
    service = deployment.start_service()
    deployment.start_adapter()
    warmup = after_event("warmup", BASE_MS)
    assert post_timed(deployment, GROUP_FULL, warmup) == (200, OK)
    service.kill()
    service.wait()

    assert post_timed(deployment, BEFORE_CREATE, BEFORE_CREATE_SAMPLE) == (200, OK)
    events: list[tuple[str, str, int]] = [(GROUP_FULL, f"g{i}", BASE_MS + i) for i in range(10)]
    events += [(GROUP_FULL, f"g{i}", BASE_MS + 100 + i) for i in range(8)]
    events += [(MEMBER_EXIT, "g3", BASE_MS + 200), (GROUP_DESTROYED, "g7", BASE_MS + 300)]
    for command, group_id, event_ms in events:
        assert post_timed(deployment, command, after_event(group_id, event_ms)) == (
            200,
            OK,
        ), f"{command} {group_id}"
    assert spool_depth(deployment) == len(events)
    assert "spooled" in deployment.log("adapter")
    # Keep the service down until replay has failed a few times and is backing off: two
    # passes at least, each stopped after a few events failed in a row (adapter/spool.py).
    wait_for(
        lambda: read_spool(deployment, "SELECT sum(attempts) FROM spooled_event") >= 6,
        15,
        "the replayer to retry while the service is down",
    )

    expected = {
        f"g{i}": Expected(True, BASE_MS + i, 2, BASE_MS + 100 + i) for i in (0, 1, 2, 4, 5, 6)
    }
    expected |= {f"g{i}": Expected(True, BASE_MS + i, 1, BASE_MS + i) for i in (8, 9)}
    expected["g3"] = Expected(False, last_event_ms=BASE_MS + 200)
    expected["g7"] = Expected(False, last_event_ms=BASE_MS + 300, destroyed=True)
    deployment.start_service()
    wait_for_state(deployment, expected)
    wait_for(lambda: spool_depth(deployment) == 0, REPLAY_TIMEOUT_S, "the spool to drain")


def test_spool_survives_a_crash_of_the_whole_adapter(deployment: Deployment) -> None:
    """Events spooled by an adapter killed with its workers are replayed by the next one."""
    adapter = deployment.start_adapter(new_session=True)
    groups = [f"crash{i}" for i in range(10)]
    for i, group_id in enumerate(groups):
        event = after_event(group_id, BASE_MS + i)
        assert post_timed(deployment, GROUP_FULL, event) == (200, OK)

    deployment.kill_group(adapter)
    wait_until_port_free(deployment.http_port)
    assert spool_depth(deployment) == len(groups)

    deployment.start_service()
    deployment.start_adapter(new_session=True)
    wait_for_state(
        deployment,
        {
            group_id: Expected(True, BASE_MS + i, 1, BASE_MS + i)
            for i, group_id in enumerate(groups)
        },
    )
    wait_for(lambda: spool_depth(deployment) == 0, REPLAY_TIMEOUT_S, "the spool to drain")


def test_a_full_spool_answers_503_and_creation_still_fails_open(deployment: Deployment) -> None:
    """With the service down and 3 events spooled, the 4th gets 503; creation is still allowed."""
    deployment.start_adapter({"CHAT_POLICY_SPOOL_MAX_EVENTS": "3"})
    for i in range(3):
        event = after_event(f"bounded{i}", BASE_MS + i)
        assert post_timed(deployment, GROUP_FULL, event) == (200, OK)

    status, answer = post_timed(deployment, GROUP_FULL, after_event("bounded3", 1))
    assert status == 503
    document = json.loads(answer)
    assert document["ActionStatus"] == "FAIL"
    assert document["ErrorCode"] == 503
    assert "spool is full" in document["ErrorInfo"]
    assert spool_depth(deployment) == 3

    assert post_timed(deployment, BEFORE_CREATE, BEFORE_CREATE_SAMPLE) == (200, OK)


def test_creation_fails_closed_with_the_configured_code(deployment: Deployment) -> None:
    """With ON_POLICY_ERROR=deny and the service down, creation is refused with the set code."""
    deployment.start_adapter(
        {"CHAT_POLICY_ON_POLICY_ERROR": "deny", "CHAT_POLICY_DENY_ERROR_CODE": "10123"}
    )
    status, answer = post_timed(deployment, BEFORE_CREATE, BEFORE_CREATE_SAMPLE)
    assert status == 200
    document = json.loads(answer)
    assert document["ActionStatus"] == "OK"
    assert document["ErrorCode"] == 10123
    assert document["ErrorInfo"]
    assert "fail-closed" in deployment.log("adapter")


def not_found(deployment: Deployment, group_id: str) -> bool:
    """Whether the service answers NOT_FOUND for the group: it never recorded it."""
    with grpc.insecure_channel(deployment.grpc_target) as channel:
        stub = group_state_service_pb2_grpc.GroupStateServiceStub(channel)
        request = group_state_service_pb2.GetGroupStateRequest(
            sdk_app_id=SDKAPPID, group_id=group_id
        )
        try:
            stub.GetGroupState(request, timeout=2)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return True
            raise
    return False


def test_an_event_the_service_refuses_is_set_aside_and_the_others_are_delivered(
    deployment: Deployment,
) -> None:
    """An event the adapter accepted but the service refuses on replay (an hour ahead: the
    adapter allows 2 h, the service 1 s) is set aside, the three behind it are delivered, and
    `chat-policy spool list` shows it until `spool drop` deletes it."""
    deployment.start_adapter({"CHAT_POLICY_MAX_EVENT_AHEAD_S": "7200"})
    future_ms = int(time.time() * 1000) + 3_600_000
    assert post_timed(deployment, GROUP_FULL, after_event("future", future_ms)) == (200, OK)
    for i in range(3):
        assert post_timed(deployment, GROUP_FULL, after_event(f"ordinary{i}", BASE_MS + i)) == (
            200,
            OK,
        )
    assert spool_depth(deployment) == 4

    service = deployment.start("service", {"CHAT_POLICY_MAX_EVENT_AHEAD_S": "1"})
    deployment.wait_for_grpc(service)
    wait_for_state(
        deployment, {f"ordinary{i}": Expected(True, BASE_MS + i, 1, BASE_MS + i) for i in range(3)}
    )
    wait_for(
        lambda: read_spool(deployment, "SELECT count(*) FROM set_aside_event") == 1,
        REPLAY_TIMEOUT_S,
        "the future event to be set aside",
    )
    assert spool_depth(deployment) == 0
    assert not_found(deployment, "future")
    assert "set aside" in deployment.log("adapter")
    with urllib.request.urlopen(f"http://127.0.0.1:{deployment.http_port}/metrics") as response:
        assert "chat_policy_adapter_spool_set_aside 1.0" in response.read().decode()

    listed = deployment.command("spool", "list")
    assert listed.returncode == 0, listed.stderr
    row, summary = listed.stdout.splitlines()[1:]
    event_id = row.split()[0]
    assert f"app {SDKAPPID} group future at " in row
    assert "INVALID_ARGUMENT" in row
    assert summary == "1 set-aside event; 0 events waiting for the policy service"

    dropped = deployment.command("spool", "drop", event_id)
    assert (dropped.returncode, dropped.stdout) == (0, "dropped 1 set-aside event\n")
    listed = deployment.command("spool", "list", "--json")
    assert json.loads(listed.stdout) == {"set_aside": [], "waiting": 0}
