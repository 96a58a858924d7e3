"""After-events sent as Chat sends them, and checks that they reached the policy service's store
or wait in the adapter's spool: for the outage and shutdown tests."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from chatpolicy.v1 import group_state_service_pb2, group_state_service_pb2_grpc
from tests.e2e.deployment import Deployment
from tests.waiting import wait_for

SDKAPPID = 1400000000
CHAT_TIMEOUT_S = 2.0
# Replay backs off up to 30 s between attempts; outages here last seconds, so this is ample.
REPLAY_TIMEOUT_S = 60.0
BASE_MS = 1_700_000_000_000

BEFORE_CREATE = "Group.CallbackBeforeCreateGroup"
GROUP_FULL = "Group.CallbackAfterGroupFull"
MEMBER_EXIT = "Group.CallbackAfterMemberExit"
GROUP_DESTROYED = "Group.CallbackAfterGroupDestroyed"


@dataclass(frozen=True)
class Expected:
    """What GetGroupState must say about a group once its events are applied."""

    full: bool
    full_since_ms: int = 0
    full_event_count: int = 0
    last_event_ms: int = 0
    destroyed: bool = False


def query(command: str) -> str:
    """The query string Chat sends for `command`."""
    return f"SdkAppid={SDKAPPID}&CallbackCommand={command}&contenttype=json"


def post_timed(
    deployment: Deployment, command: str, document: dict[str, object]
) -> tuple[int, bytes]:
    """POST one webhook; fail if the answer takes Chat's 2 s timeout or longer."""
    started = time.monotonic()
    status, answer = deployment.post(
        query(command), json.dumps({**document, "CallbackCommand": command}).encode()
    )
    elapsed = time.monotonic() - started
    assert elapsed < CHAT_TIMEOUT_S, f"{command} answered after {elapsed:.2f} s"
    return status, answer


def after_event(group_id: str, event_ms: int) -> dict[str, object]:
    """The body of a group-state after-webhook."""
    return {"GroupId": group_id, "EventTime": str(event_ms)}


def read_spool(deployment: Deployment, sql: str) -> int:
    """One number from the adapter's spool file, read without changing it."""
    path = Path(deployment.env["CHAT_POLICY_DATA_DIR"]) / "adapter-spool.db"
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        (value,) = connection.execute(sql).fetchone()
    finally:
        connection.close()
    return int(value or 0)


def spool_depth(deployment: Deployment) -> int:
    """How many events wait in the adapter's spool."""
    return read_spool(deployment, "SELECT count(*) FROM spooled_event")


def state_matches(deployment: Deployment, expected: dict[str, Expected]) -> bool:
    """True once GetGroupState reports every group as expected; False while any differs."""
    with grpc.insecure_channel(deployment.grpc_target) as channel:
        stub = group_state_service_pb2_grpc.GroupStateServiceStub(channel)
        for group_id, want in expected.items():
            request = group_state_service_pb2.GetGroupStateRequest(
                sdk_app_id=SDKAPPID, group_id=group_id
            )
            try:
                state = stub.GetGroupState(request, timeout=2).group_state
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return False  # not replayed yet
                raise
            got = Expected(
                full=state.full,
                full_since_ms=state.full_since.ToMilliseconds() if state.full else 0,
                full_event_count=state.full_event_count,
                last_event_ms=state.last_event_time.ToMilliseconds(),
                destroyed=state.destroyed,
            )
            if got != want:
                return False
    return True


def wait_for_state(deployment: Deployment, expected: dict[str, Expected]) -> None:
    """Poll the service until every group is as expected (replay may be backing off)."""
    wait_for(
        lambda: state_matches(deployment, expected),
        REPLAY_TIMEOUT_S,
        f"the spooled events of {len(expected)} groups to reach the store",
    )
