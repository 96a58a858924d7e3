"""GroupStateService with real processes: watch resume, replicas, PostgreSQL outages and cuts.

Every test starts `chat-policy service` (and the adapter where Chat's webhooks are involved),
records events over gRPC as the adapter and the app's services would, and follows the
changes as a consumer would: WatchGroupStates in a process of its own, resumed with the
last sequence it received. PostgreSQL is either a fresh schema on the shared test server or, for
tests that stop it, a private cluster.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from base64 import b64decode
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import grpc
import psycopg
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from bench.processes import free_port
from chatpolicy.v1 import (
    creation_policy_service_pb2,
    creation_policy_service_pb2_grpc,
    group_state_pb2,
    group_state_service_pb2,
    group_state_service_pb2_grpc,
)
from tests.chat_samples import GROUP_FULL_SAMPLE, OK
from tests.e2e.deployment import START_TIMEOUT_S, Deployment
from tests.e2e.postgres_cluster import PostgresCluster
from tests.postgres import PostgresSchema
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

pb = group_state_service_pb2
SDKAPPID = 1400000000
BASE_MS = 1_700_000_000_000
CALL_TIMEOUT_S = 10.0
# How long a change may take to reach a watcher; the feed polls every second regardless.
DELIVERY_TIMEOUT_S = 5.0
# How long the service may take to notice that PostgreSQL went away, or came back.
HEALTH_TIMEOUT_S = 15.0
RECOVERY_TIMEOUT_S = 20.0
# The adapter's replayer backs off up to 30 s between attempts: ample for outages of seconds.
REPLAY_TIMEOUT_S = 60.0

GROUP_STATE_SERVICE = "chatpolicy.v1.GroupStateService"
CREATION_POLICY_SERVICE = "chatpolicy.v1.CreationPolicyService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def timestamp(ms: int) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp at Unix milliseconds `ms`."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def stub(channel: grpc.Channel) -> group_state_service_pb2_grpc.GroupStateServiceStub:
    """A GroupStateService client on the channel."""
    return group_state_service_pb2_grpc.GroupStateServiceStub(channel)


def full_request(group_id: str, event_ms: int, topic_id: str = "") -> pb.RecordGroupFullRequest:
    """A RecordGroupFull request, as the adapter sends for Group.CallbackAfterGroupFull."""
    return pb.RecordGroupFullRequest(
        sdk_app_id=SDKAPPID, group_id=group_id, topic_id=topic_id, event_time=timestamp(event_ms)
    )


def record_full(
    channel: grpc.Channel, group_id: str, event_ms: int, topic_id: str = ""
) -> pb.RecordGroupFullResponse:
    """Record one full event; the service's answer."""
    response: pb.RecordGroupFullResponse = stub(channel).RecordGroupFull(
        full_request(group_id, event_ms, topic_id), timeout=CALL_TIMEOUT_S
    )
    return response


def get_state(
    channel: grpc.Channel, group_id: str, topic_id: str = ""
) -> group_state_pb2.GroupState:
    """GetGroupState of one group (fails the test with the RpcError when there is none)."""
    request = pb.GetGroupStateRequest(sdk_app_id=SDKAPPID, group_id=group_id, topic_id=topic_id)
    response: pb.GetGroupStateResponse = stub(channel).GetGroupState(
        request, timeout=CALL_TIMEOUT_S
    )
    return response.group_state


def list_full(channel: grpc.Channel) -> list[group_state_pb2.GroupState]:
    """Every full group, through every page of ListFullGroups (small pages, to page)."""
    states: list[group_state_pb2.GroupState] = []
    token = ""
    while True:
        page = stub(channel).ListFullGroups(
            pb.ListFullGroupsRequest(page_size=3, page_token=token), timeout=CALL_TIMEOUT_S
        )
        states += page.group_states
        token = page.next_page_token
        if not token:
            return states


def count_states(channel: grpc.Channel) -> tuple[int, int, int]:
    """CountGroupStates of every application: tracked, full, destroyed."""
    counts = stub(channel).CountGroupStates(pb.CountGroupStatesRequest(), timeout=CALL_TIMEOUT_S)
    return counts.tracked_count, counts.full_count, counts.destroyed_count


def health(channel: grpc.Channel, service: str) -> int:
    """grpc.health.v1 Check of one service name: SERVING, NOT_SERVING, ..."""
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT_S
    )
    return int(response.status)


def error_reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a chat-policy error."""
    assert isinstance(error, grpc.Call)
    status = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status in {error}"
    info = error_details_pb2.ErrorInfo()
    assert status.details and status.details[0].Unpack(info), f"no ErrorInfo in {status}"
    assert info.domain == "chatpolicy.v1"
    return str(info.reason)


def state_summary(state: group_state_pb2.GroupState) -> tuple[object, ...]:
    """A state's key and its fields, for readable assertion diffs."""
    return (
        state.group_id,
        state.topic_id,
        state.full,
        state.full_event_count,
        state.full_since.ToMilliseconds() if state.HasField("full_since") else None,
        state.last_event_time.ToMilliseconds(),
        group_state_pb2.GroupEventKind.Name(state.last_event_kind),
        state.destroyed,
    )


# The consumer runs in a process of its own, printing each message as a line. In this
# process a stream would keep gRPC threads busy, and PostgresCluster forks pg_ctl (with a
# user switch, so fork() and gRPC's at-fork handlers, not vfork()): with a stream open, the
# child sometimes died with SIGSEGV before it could exec pg_ctl.
CONSUMER = """
import base64, sys
import grpc
from chatpolicy.v1 import group_state_service_pb2 as pb, group_state_service_pb2_grpc as rpc

def line(*fields):
    print(*fields, flush=True)

channel = grpc.insecure_channel(sys.argv[1])
request = pb.WatchGroupStatesRequest()
if sys.argv[2] != "now":
    request.after_sequence = int(sys.argv[2])
call = rpc.GroupStateServiceStub(channel).WatchGroupStates(request)
line("started")
try:
    for message in call:
        line("message", base64.b64encode(message.SerializeToString()).decode())
except grpc.RpcError as error:
    line("ended", error.code().name, base64.b64encode(error.details().encode()).decode())
"""


@dataclass(frozen=True)
class Message:
    """One WatchGroupStates message and when the consumer received it (time.monotonic())."""

    sequence: int
    changes: tuple[pb.GroupStateChange, ...]
    received_at: float


@dataclass(frozen=True)
class StreamEnd:
    """How a watch stream ended: its status code's name and details."""

    code: str
    details: str


class Watcher:
    """A consumer of WatchGroupStates in a process of its own; keeps every message it got."""

    def __init__(self, target: str, after_sequence: int | None = None) -> None:
        """Watch from now (after_sequence None), or resume after a sequence."""
        self._lock = threading.Lock()
        self.messages: list[Message] = []
        self.end: StreamEnd | None = None
        self.ended = threading.Event()
        self._output: list[str] = []
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CONSUMER,
                target,
                "now" if after_sequence is None else str(after_sequence),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, name="watcher", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            received_at = time.monotonic()
            kind, *fields = line.rstrip("\n").split(" ")  # an empty message is "message "
            with self._lock:
                self._output.append(line)
                if kind == "message":
                    response = pb.WatchGroupStatesResponse.FromString(b64decode(fields[0]))
                    message = Message(response.sequence, tuple(response.changes), received_at)
                    self.messages.append(message)
                elif kind == "ended":
                    self.end = StreamEnd(fields[0], b64decode(fields[1]).decode())
        self.ended.set()

    def snapshot(self) -> list[Message]:
        """The messages received so far."""
        with self._lock:
            return list(self.messages)

    def changes(self) -> list[pb.GroupStateChange]:
        """Every change received so far, in the order received."""
        return [change for message in self.snapshot() for change in message.changes]

    def received(self) -> list[tuple[pb.GroupStateChange, float]]:
        """Every change received so far, with the time its message arrived."""
        return [(c, m.received_at) for m in self.snapshot() for c in m.changes]

    def caught_up(self) -> int:
        """Wait for the first progress message (the stream has caught up); its sequence."""
        wait_for(
            lambda: self._first_progress() is not None or self.ended.is_set(),
            START_TIMEOUT_S,
            "the watch stream to catch up",
        )
        self.assert_open()
        progress = self._first_progress()
        assert progress is not None
        return progress.sequence

    def changes_before_caught_up(self) -> list[pb.GroupStateChange]:
        """The changes received before the first progress message: the ones resumed."""
        self.caught_up()
        changes: list[pb.GroupStateChange] = []
        for message in self.snapshot():
            if not message.changes:
                return changes
            changes += message.changes
        raise AssertionError("unreachable: caught_up() saw a progress message")

    def wait_for_group(self, group_id: str, what: str = "") -> pb.GroupStateChange:
        """Wait until a change of `group_id` arrives (the stream must stay open); the last one."""

        def seen() -> bool:
            self.assert_open()
            return any(c.group_state.group_id == group_id for c in self.changes())

        wait_for(seen, DELIVERY_TIMEOUT_S, what or f"the watcher to receive {group_id}")
        return [c for c in self.changes() if c.group_state.group_id == group_id][-1]

    def assert_open(self) -> None:
        """Fail if the stream ended, with its status (or the consumer's output)."""
        if self.ended.is_set():
            pytest.fail(f"the watch stream ended: {self.end or self.output()}")

    def wait_ended(self, timeout_s: float = DELIVERY_TIMEOUT_S) -> StreamEnd:
        """Wait until the stream ends; how (a stream never ends without a status)."""
        wait_for(self.ended.is_set, timeout_s, "the watch stream to end")
        assert self.end is not None, f"the consumer ended without a status:\n{self.output()}"
        return self.end

    def output(self) -> str:
        """What the consumer printed, for failure messages."""
        with self._lock:
            return "".join(self._output)

    def _first_progress(self) -> Message | None:
        return next((m for m in self.snapshot() if not m.changes), None)

    def close(self) -> None:
        """Stop the consumer and wait for it and the reader thread."""
        if self._process.poll() is None:
            self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._thread.join(10)
        assert self._process.stdout is not None
        self._process.stdout.close()
        assert not self._thread.is_alive(), "the watch reader did not stop"


@contextmanager
def watching(target: str, after_sequence: int | None = None) -> Iterator[Watcher]:
    """A Watcher, closed at the end of the block whatever happens."""
    watcher = Watcher(target, after_sequence)
    try:
        yield watcher
    finally:
        watcher.close()


def assert_strictly_increasing(changes: list[pb.GroupStateChange], after: int = 0) -> None:
    """Every sequence is above `after` and above the one before it."""
    sequences = [change.sequence for change in changes]
    assert all(a < b for a, b in zip([after, *sequences], sequences, strict=False)), sequences


def use_postgres(deployment: Deployment, url: str) -> None:
    """Point the deployment's service at a PostgreSQL database ("": the SQLite default)."""
    deployment.env["CHAT_POLICY_DATABASE_URL"] = url


def start_replica(deployment: Deployment, grpc_port: int) -> subprocess.Popen[bytes]:
    """Start another `chat-policy service` of the deployment on grpc_port (not waited for)."""
    return deployment.start("service", {"CHAT_POLICY_GRPC_BIND": f"127.0.0.1:{grpc_port}"})


def wait_for_replica(deployment: Deployment, process: subprocess.Popen[bytes], target: str) -> None:
    """Wait until the replica answers gRPC on target; fail with the log if it exits."""
    with grpc.insecure_channel(target) as channel:
        ready = grpc.channel_ready_future(channel)

        def answers() -> bool:
            if process.poll() is not None:
                pytest.fail(
                    f"service exited with {process.returncode}:\n{deployment.log('service')}"
                )
            try:
                ready.result(timeout=0.1)
            except grpc.FutureTimeoutError:
                return False
            return True

        wait_for(answers, START_TIMEOUT_S, f"the replica on {target} to answer")


# 1. Watch resume across a crash of the service.


def test_a_watch_resumed_after_a_service_crash_gets_exactly_the_missed_changes(
    database_url: str, deployment: Deployment
) -> None:
    """After kill -9 and a restart, a resume yields every missed change once, in order."""
    use_postgres(deployment, database_url)
    service = deployment.start_service()
    target = deployment.grpc_target

    with grpc.insecure_channel(target) as channel:
        record_full(channel, "g0", BASE_MS)  # before the watch: "from now" skips it
    with grpc.insecure_channel(target) as channel, watching(target) as watcher:
        start = watcher.caught_up()
        assert start > 0
        before = [
            record_full(channel, "g1", BASE_MS + 1),
            record_full(channel, "g2", BASE_MS + 2),
            record_full(channel, "g2", BASE_MS + 3, topic_id="t1"),
        ]
        wait_for(lambda: len(watcher.changes()) >= 3, DELIVERY_TIMEOUT_S, "3 changes")
        seen = watcher.changes()
        assert [c.group_state for c in seen] == [r.group_state for r in before]
        assert_strictly_increasing(seen, after=start)
        last_seen = seen[-1].sequence

        service.kill()
        service.wait()
        assert watcher.wait_ended().code == "UNAVAILABLE"
        assert len(watcher.changes()) == 3

    # While the service is down a consumer that reconnects gets nothing but UNAVAILABLE.
    with watching(target, after_sequence=last_seen) as down:
        assert down.wait_ended().code == "UNAVAILABLE"
        assert down.snapshot() == []

    deployment.start_service()
    with grpc.insecure_channel(target) as channel:
        cleared = pb.ClearGroupFullRequest(
            sdk_app_id=SDKAPPID,
            group_id="g1",
            reason="limit raised",
            clear_time=timestamp(BASE_MS + 20),
        )
        missed = [
            record_full(channel, "g1", BASE_MS + 10),  # a refused join: count 2
            record_full(channel, "g3", BASE_MS + 11),
            stub(channel).ClearGroupFull(cleared, timeout=CALL_TIMEOUT_S),
            stub(channel).RecordGroupDestroyed(
                pb.RecordGroupDestroyedRequest(
                    sdk_app_id=SDKAPPID, group_id="g3", event_time=timestamp(BASE_MS + 30)
                ),
                timeout=CALL_TIMEOUT_S,
            ),
            record_full(channel, "g4", BASE_MS + 40),
        ]
        repeated = record_full(channel, "g4", BASE_MS + 40)  # a redelivery: no change
        assert all(response.applied for response in missed)
        assert not repeated.applied

        with watching(target, after_sequence=last_seen) as resumed:
            got = resumed.changes_before_caught_up()
            assert [state_summary(c.group_state) for c in got] == [
                state_summary(r.group_state) for r in missed
            ]
            assert [c.group_state for c in got] == [r.group_state for r in missed]
            assert_strictly_increasing(got, after=last_seen)
            assert not any(c.forgotten for c in got)
            assert resumed.caught_up() == got[-1].sequence

        # The whole log from before the crash: the changes made before it survived kill -9.
        with watching(target, after_sequence=start) as replay:
            everything = replay.changes_before_caught_up()
            assert [c.sequence for c in everything[:3]] == [c.sequence for c in seen]
            assert [c.group_state for c in everything] == [r.group_state for r in before + missed]

        final = {c.group_state.group_id + "/" + c.group_state.topic_id: c for c in everything}
        for change in final.values():
            state = change.group_state
            assert get_state(channel, state.group_id, state.topic_id) == state
        assert count_states(channel) == (6, 4, 1)  # g0, g1, g2, g2/t1, g3, g4; g3 destroyed


def test_a_resume_from_the_first_progress_of_a_new_database_misses_nothing(
    deployment: Deployment,
) -> None:
    """Resuming from the sequence a new, empty log reported delivers the change made meanwhile."""
    # The recipe of docs/calling.md (WatchGroupStates): watch from now, keep the first
    # message's sequence (0 here), and after a disconnect watch again after it: 0 set
    # explicitly is not "from now".
    deployment.start_service()
    target = deployment.grpc_target
    with watching(target) as watcher:
        position = watcher.caught_up()
    assert position == 0
    with grpc.insecure_channel(target) as channel:
        response = record_full(channel, "made-while-away", BASE_MS)
    with watching(target, after_sequence=position) as resumed:
        got = resumed.changes_before_caught_up()
        assert [c.group_state for c in got] == [response.group_state], (
            f"resumed from the first progress sequence {position}, missed the change"
        )


# 2. Two replicas on one PostgreSQL database.


def listening_backends(schema: PostgresSchema) -> list[int]:
    """The server processes of the schema's sessions that LISTEN for changes."""
    with psycopg.connect(schema.server_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            " AND query ILIKE 'LISTEN %%'",
            (schema.application_name,),
        ).fetchall()
    return [int(pid) for (pid,) in rows]


def test_two_replicas_share_state_changes_and_the_change_log(
    postgres_schema: PostgresSchema, deployment: Deployment
) -> None:
    """Replicas started together both serve; each sees the other's writes and changes."""
    use_postgres(deployment, postgres_schema.url)
    port_b = free_port()
    target_a, target_b = deployment.grpc_target, f"127.0.0.1:{port_b}"
    replica_a = deployment.start("service")
    replica_b = start_replica(deployment, port_b)
    wait_for_replica(deployment, replica_a, target_a)
    wait_for_replica(deployment, replica_b, target_b)
    wait_for(
        lambda: len(listening_backends(postgres_schema)) == 2,
        DELIVERY_TIMEOUT_S,
        "both replicas to LISTEN for changes",
    )

    with grpc.insecure_channel(target_a) as a, grpc.insecure_channel(target_b) as b:
        # Writes through A are read through B.
        written = [
            record_full(a, "r1", BASE_MS + 1),
            record_full(a, "r2", BASE_MS + 2, topic_id="t"),
            record_full(a, "r3", BASE_MS + 3),
            record_full(b, "r1", BASE_MS + 4),
        ]
        stub(a).RecordMemberExit(
            pb.RecordMemberExitRequest(
                sdk_app_id=SDKAPPID, group_id="r3", event_time=timestamp(BASE_MS + 5)
            ),
            timeout=CALL_TIMEOUT_S,
        )
        assert get_state(b, "r1") == written[3].group_state == get_state(a, "r1")
        assert get_state(b, "r2", "t") == written[1].group_state
        assert not get_state(b, "r3").full
        assert list_full(a) == list_full(b)
        assert [s.group_id for s in list_full(b)] == ["r1", "r2"]
        assert count_states(a) == count_states(b) == (3, 2, 0)

        # A change made through A reaches a watcher on B (LISTEN/NOTIFY).
        latencies = []
        with watching(target_b) as on_b:
            on_b.caught_up()
            for i in range(5):
                time.sleep(0.2)  # spread the writes over B's 1 s poll
                started = time.monotonic()
                record_full(a, f"latency{i}", BASE_MS + 10 + i)
                on_b.wait_for_group(f"latency{i}", "a change through A to reach B's watcher")
                arrived = next(
                    t for c, t in on_b.received() if c.group_state.group_id == f"latency{i}"
                )
                latencies.append(arrived - started)
        print(
            "replica-to-replica watch delivery (record on A -> message on B's watcher): "
            + ", ".join(f"{latency * 1000:.0f} ms" for latency in latencies)
        )
        assert max(latencies) < DELIVERY_TIMEOUT_S

        # One group hammered through both replicas at once ends as one store would have it.
        results: list[pb.RecordGroupFullResponse] = []
        event_times: list[int] = []
        failures: list[BaseException] = []
        lock = threading.Lock()

        def hammer(thread: int) -> None:
            try:
                for i in range(50):
                    channel = (a, b)[(i + thread) % 2]
                    event_ms = BASE_MS + 1000 + 2 * i + thread
                    response = record_full(channel, "hot", event_ms)
                    with lock:
                        results.append(response)
                        event_times.append(event_ms)
            except BaseException as error:
                with lock:
                    failures.append(error)

        with watching(target_a) as on_a, watching(target_b) as on_b:
            on_a.caught_up()
            on_b.caught_up()
            threads = [threading.Thread(target=hammer, args=(t,)) for t in (0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert not failures, failures
            assert len(results) == 100
            # The log is delivered in order: once the marker arrived, everything before it has.
            record_full(b, "marker", BASE_MS + 5000)
            on_a.wait_for_group("marker")
            on_b.wait_for_group("marker")
            changes_a, changes_b = on_a.changes(), on_b.changes()

        applied = [r for r in results if r.applied]
        applied_times = sorted(t for r, t in zip(results, event_times, strict=True) if r.applied)
        state = get_state(a, "hot")
        assert get_state(b, "hot") == state
        assert state.full
        assert state.full_event_count == len(applied)
        assert state.last_event_time.ToMilliseconds() == max(event_times) == BASE_MS + 1099
        assert state.full_since.ToMilliseconds() == applied_times[0]
        print(f"concurrent full events: {len(applied)} of 100 applied")

        assert [(c.sequence, c.group_state) for c in changes_a] == [
            (c.sequence, c.group_state) for c in changes_b
        ]
        assert_strictly_increasing(changes_a)
        hot = [c for c in changes_a if c.group_state.group_id == "hot"]
        assert len(hot) == len(applied)
        assert [c.group_state.full_event_count for c in hot] == list(range(1, len(applied) + 1))
        assert [c.group_state.last_event_time.ToMilliseconds() for c in hot] == applied_times
        by_time = {c.group_state.last_event_time.ToMilliseconds(): c.group_state for c in hot}
        for response in applied:
            assert by_time[response.group_state.last_event_time.ToMilliseconds()] == (
                response.group_state
            )
        assert [c.group_state.group_id for c in changes_a] == ["hot"] * len(applied) + ["marker"]


# 3. PostgreSQL stopped and started under a running service.


def check_creation(channel: grpc.Channel, timeout_s: float = CALL_TIMEOUT_S) -> int:
    """CheckGroupCreation for a plain request; the decision."""
    request = creation_policy_service_pb2.CheckGroupCreationRequest(
        sdk_app_id=SDKAPPID,
        operator_account="alice",
        owner_account="alice",
        group_type="Public",
        name="Book club",
        opt_platform="Web",
    )
    response = creation_policy_service_pb2_grpc.CreationPolicyServiceStub(
        channel
    ).CheckGroupCreation(request, timeout=timeout_s)
    return int(response.decision)


def records(channel: grpc.Channel, group_id: str, event_ms: int) -> bool:
    """Whether RecordGroupFull succeeds now (False on UNAVAILABLE: the store is away)."""
    try:
        record_full(channel, group_id, event_ms)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.UNAVAILABLE:
            return False
        raise
    return True


def logged_at(deployment: Deployment, text: str) -> float:
    """The time (time.time()) of the service's first log line that contains text."""
    for line in deployment.log("service").splitlines():
        record = json.loads(line)
        if text in record["message"]:
            return datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()
    pytest.fail(f"the service never logged {text!r}:\n{deployment.log('service')}")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_the_service_rides_out_a_postgresql_restart(
    postgres_cluster: PostgresCluster,
    deployment: Deployment,
    mode: Literal["fast", "immediate"],
) -> None:
    """With PostgreSQL down records fail UNAVAILABLE, health is NOT_SERVING; then all recovers."""
    use_postgres(deployment, postgres_cluster.create_database("chat_policy"))
    deployment.env["CHAT_POLICY_WATCH_HEARTBEAT_S"] = "1"
    deployment.start_service()
    target = deployment.grpc_target

    with grpc.insecure_channel(target) as channel, watching(target) as watcher:
        watcher.caught_up()
        committed = [record_full(channel, f"before{i}", BASE_MS + i) for i in range(3)]
        watcher.wait_for_group("before2")
        assert health(channel, "") == SERVING

        postgres_cluster.stop(mode)
        stopped, stopped_wall = time.monotonic(), time.time()
        called = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            record_full(channel, "during", BASE_MS + 10)
        failed_after = time.monotonic() - called
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value
        assert error_reason(raised.value) == "ERROR_REASON_STORE_UNAVAILABLE"

        wait_for(
            lambda: (
                health(channel, "") == NOT_SERVING
                and health(channel, GROUP_STATE_SERVICE) == NOT_SERVING
            ),
            HEALTH_TIMEOUT_S,
            "health NOT_SERVING while PostgreSQL is down",
        )
        not_serving_after = time.monotonic() - stopped
        assert health(channel, CREATION_POLICY_SERVICE) == SERVING
        assert check_creation(channel) == creation_policy_service_pb2.DECISION_ALLOW

        postgres_cluster.start()
        restarted = time.monotonic()
        # The stream stayed open through the outage: its heartbeats kept coming.
        assert any(stopped < m.received_at < restarted for m in watcher.snapshot())
        watcher.assert_open()
        wait_for(
            lambda: records(channel, "after", BASE_MS + 20),
            RECOVERY_TIMEOUT_S,
            "RecordGroupFull to succeed again",
        )
        recorded_after = time.monotonic() - restarted
        wait_for(
            lambda: (
                health(channel, "") == SERVING and health(channel, GROUP_STATE_SERVICE) == SERVING
            ),
            RECOVERY_TIMEOUT_S,
            "health SERVING once PostgreSQL is back",
        )
        serving_after = time.monotonic() - restarted
        health_down = logged_at(deployment, "health NOT_SERVING") - stopped_wall
        print(
            f"PostgreSQL stop --mode={mode}: RecordGroupFull UNAVAILABLE after "
            f"{failed_after:.2f} s; health NOT_SERVING seen {not_serving_after:.2f} s after "
            f"the stop (logged after {health_down:.2f} s); "
            f"after start: a record succeeded after {recorded_after:.2f} s, "
            f"health SERVING after {serving_after:.2f} s"
        )

        for response in committed:
            assert get_state(channel, response.group_state.group_id) == response.group_state
        # The stream opened before the outage survives it (the feed retries) and goes on.
        after = watcher.wait_for_group("after", "the post-outage change on the old stream")
        assert after.group_state == get_state(channel, "after")
        received = watcher.changes()
        assert [c.group_state.group_id for c in received] == [
            "before0",
            "before1",
            "before2",
            "after",
        ]
        assert_strictly_increasing(received)
        watcher.assert_open()


def test_creation_checks_answer_while_store_calls_fail_for_postgresql(
    postgres_cluster: PostgresCluster, deployment: Deployment
) -> None:
    """With PostgreSQL down, a burst of store calls does not starve creation checks."""
    # 150 store calls (30 webhooks a second for 5 s) outnumber the service's 108 threads
    # (8 workers + 100 watch slots). Each waits for a pooled connection no longer than its
    # caller's deadline (500 ms here, the adapter's), so CheckGroupCreation, which needs no
    # store, still gets a thread in time.
    use_postgres(deployment, postgres_cluster.create_database("chat_policy"))
    deployment.start_service()
    postgres_cluster.stop("fast")
    with grpc.insecure_channel(deployment.grpc_target) as channel:
        abandoned = [
            stub(channel).RecordGroupFull.future(full_request(f"g{i}", BASE_MS), timeout=0.5)
            for i in range(150)
        ]
        codes = {future.exception().code() for future in abandoned}
        assert codes <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}
        started = time.monotonic()
        try:
            decision = check_creation(channel, timeout_s=2.0)  # Chat waits 2 s at most
        except grpc.RpcError as error:
            pytest.fail(
                f"CheckGroupCreation failed with {error.code()} after "
                f"{time.monotonic() - started:.2f} s behind store calls nobody waits for"
            )
        assert decision == creation_policy_service_pb2.DECISION_ALLOW


# 4. Chat's after-events through the adapter while PostgreSQL is down.


def spool_depth(deployment: Deployment) -> int:
    """How many events wait in the adapter's spool (read without changing it)."""
    path = Path(deployment.env["CHAT_POLICY_DATA_DIR"]) / "adapter-spool.db"
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        (depth,) = connection.execute("SELECT count(*) FROM spooled_event").fetchone()
    finally:
        connection.close()
    return int(depth)


def post_group_full(deployment: Deployment, group_id: str, event_ms: int) -> tuple[int, bytes]:
    """POST Chat's AfterGroupFull sample for `group_id` to the adapter, as Chat would."""
    started = time.monotonic()
    answer = deployment.post(
        f"SdkAppid={SDKAPPID}&CallbackCommand=Group.CallbackAfterGroupFull&contenttype=json",
        json.dumps({**GROUP_FULL_SAMPLE, "GroupId": group_id, "EventTime": str(event_ms)}).encode(),
    )
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"answered after {elapsed:.2f} s, beyond Chat's 2 s"
    return answer


def all_full(target: str, groups: dict[str, int]) -> bool:
    """Whether every group is full since its event time (False while any is missing)."""
    with grpc.insecure_channel(target) as channel:
        for group_id, event_ms in groups.items():
            try:
                state = get_state(channel, group_id)
            except grpc.RpcError as error:
                if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                    return False
                raise
            if not (state.full and state.full_since.ToMilliseconds() == event_ms):
                return False
    return True


def test_after_events_during_a_postgresql_outage_are_spooled_and_land(
    postgres_cluster: PostgresCluster, deployment: Deployment
) -> None:
    """Chat gets 200 OK for after-events while PostgreSQL is down; each lands once it is back."""
    use_postgres(deployment, postgres_cluster.create_database("chat_policy"))
    deployment.env["CHAT_POLICY_SDKAPPIDS"] = str(SDKAPPID)
    deployment.start_service()
    deployment.start_adapter()
    assert post_group_full(deployment, "@TGS#warmup", BASE_MS) == (200, OK)
    assert all_full(deployment.grpc_target, {"@TGS#warmup": BASE_MS})
    assert spool_depth(deployment) == 0

    postgres_cluster.stop("fast")
    groups = {f"@TGS#outage{i}": BASE_MS + 100 + i for i in range(10)}
    for group_id, event_ms in groups.items():
        assert post_group_full(deployment, group_id, event_ms) == (200, OK), group_id
    assert spool_depth(deployment) == len(groups)
    spooled = re.findall(r"spooled RecordGroupFull because (.*)", deployment.log("adapter"))
    assert len(spooled) == len(groups)
    print("the adapter spooled because:", sorted(set(spooled)))

    postgres_cluster.start()
    restarted = time.monotonic()
    wait_for(
        lambda: all_full(deployment.grpc_target, groups),
        REPLAY_TIMEOUT_S,
        "every spooled event to reach PostgreSQL",
    )
    print(f"spooled events in PostgreSQL {time.monotonic() - restarted:.2f} s after its start")
    wait_for(lambda: spool_depth(deployment) == 0, REPLAY_TIMEOUT_S, "the spool to drain")
    with grpc.insecure_channel(deployment.grpc_target) as channel:
        assert count_states(channel) == (11, 11, 0)
        for group_id in groups:
            assert get_state(channel, group_id).full_event_count == 1


# 5. The service's PostgreSQL connections cut.


def schema_backends(schema: PostgresSchema) -> set[int]:
    """The server processes of the schema's sessions (the service's, by application_name)."""
    with psycopg.connect(schema.server_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (schema.application_name,),
        ).fetchall()
    return {int(pid) for (pid,) in rows}


def test_the_service_reconnects_after_its_backends_are_terminated(
    postgres_schema: PostgresSchema, deployment: Deployment
) -> None:
    """With every backend of the service terminated, records succeed again and the watch goes on."""
    use_postgres(deployment, postgres_schema.url)
    deployment.start_service()
    target = deployment.grpc_target

    with grpc.insecure_channel(target) as channel, watching(target) as watcher:
        watcher.caught_up()
        record_full(channel, "cut-before", BASE_MS)
        watcher.wait_for_group("cut-before")
        listeners = listening_backends(postgres_schema)
        assert len(listeners) == 1
        before = schema_backends(postgres_schema)
        assert set(listeners) < before  # the listener and at least one pooled connection

        with psycopg.connect(postgres_schema.server_url, autocommit=True) as conn:
            terminated = conn.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (postgres_schema.application_name,),
            ).fetchall()
        assert {int(pid) for pid, _ in terminated} >= before
        assert all(ok for _, ok in terminated)

        retries = 0
        for i in range(5):
            try:
                response = record_full(channel, f"cut{i}", BASE_MS + 1 + i)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                retries += 1
                response = record_full(channel, f"cut{i}", BASE_MS + 1 + i)  # the one retry
            assert response.applied
            change = watcher.wait_for_group(f"cut{i}", "a change after the cut on the old stream")
            assert change.group_state == response.group_state
        print(f"records after the backends were terminated: {retries} UNAVAILABLE retries")

        wait_for(
            lambda: any(pid not in before for pid in listening_backends(postgres_schema)),
            DELIVERY_TIMEOUT_S,
            "the service to LISTEN again on a new connection",
        )
        received = watcher.changes()
        assert [c.group_state.group_id for c in received] == ["cut-before"] + [
            f"cut{i}" for i in range(5)
        ]
        assert_strictly_increasing(received)
        watcher.assert_open()
