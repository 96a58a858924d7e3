"""WatchGroupStates and grpc.health.v1 through a real gRPC server on port 0."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from chatpolicy.v1 import group_state_pb2, group_state_service_pb2
from policy_service.clock import now_ms
from policy_service.errors import StoreUnavailable
from policy_service.groups.store import GroupStateStore
from policy_service.stores.store import open_store
from tests.policy_service.servers import APP, BrokenStore, Serve, Server, error_info, full_event

pb = group_state_service_pb2
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GROUP_STATE_SERVICE = "chatpolicy.v1.GroupStateService"
CREATION_POLICY_SERVICE = "chatpolicy.v1.CreationPolicyService"
AUDIT_SERVICE = "chatpolicy.v1.AuditService"
ALL_SERVICES = ("", GROUP_STATE_SERVICE, CREATION_POLICY_SERVICE, AUDIT_SERVICE)
# A fixed EventTime for tests that do not depend on the service's clock.
T0 = 1_670_574_414_000
# Every stream is opened with this deadline: a message that never comes fails the test.
STREAM_TIMEOUT_S = 20.0


@contextmanager
def watching(
    server: Server, after_sequence: int | None = None, sdk_app_id: int = 0
) -> Iterator[Any]:
    """Open a WatchGroupStates stream, and cancel it on the way out."""
    request = pb.WatchGroupStatesRequest(sdk_app_id=sdk_app_id, after_sequence=after_sequence)
    call = server.groups.WatchGroupStates(request, timeout=STREAM_TIMEOUT_S)
    try:
        yield call
    finally:
        call.cancel()


def head(server: Server) -> int:
    """The newest sequence in the server's change log."""
    return server.store.change_log_bounds().head


def next_with_changes(call: Any) -> pb.WatchGroupStatesResponse:
    """The next message that carries changes, skipping progress messages."""
    while True:
        message = next(call)
        if message.changes:
            return message


def read_changes(call: Any, count: int) -> list[pb.GroupStateChange]:
    """The next `count` changes of a stream (progress messages skipped)."""
    changes: list[pb.GroupStateChange] = []
    while len(changes) < count:
        changes.extend(next_with_changes(call).changes)
    return changes


def changes_until_progress(call: Any) -> tuple[list[pb.GroupStateChange], int]:
    """The changes before the next progress message, and that message's sequence."""
    changes: list[pb.GroupStateChange] = []
    while True:
        message = next(call)
        if not message.changes:
            return changes, message.sequence
        changes.extend(message.changes)


def record(server: Server, group_id: str, event_time_ms: int, app: int = APP) -> int:
    """Record a full event that changes the group, and return its change's sequence."""
    assert server.groups.RecordGroupFull(full_event(group_id, event_time_ms, app=app)).applied
    return head(server)


def get(server: Server, group_id: str, topic_id: str = "") -> group_state_pb2.GroupState:
    """The group's state as GetGroupState returns it."""
    request = pb.GetGroupStateRequest(sdk_app_id=APP, group_id=group_id, topic_id=topic_id)
    return server.groups.GetGroupState(request).group_state


def destroy(server: Server, group_id: str, event_time_ms: int) -> None:
    """Record the group's destruction."""
    request = pb.RecordGroupDestroyedRequest(sdk_app_id=APP, group_id=group_id)
    request.event_time.FromMilliseconds(event_time_ms)
    assert server.groups.RecordGroupDestroyed(request).applied


def expect_error(call: Any) -> grpc.RpcError:
    """The error a stream ends with (before any message)."""
    with pytest.raises(grpc.RpcError) as raised:
        next(call)
    return raised.value


def open_when_a_slot_frees(server: Server, deadline_s: float = 5.0) -> Any:
    """Open a watch and read its first message, retrying while the replica has no free slot."""
    deadline = time.monotonic() + deadline_s
    while True:
        call = server.groups.WatchGroupStates(pb.WatchGroupStatesRequest(), timeout=10)
        try:
            next(call)
            return call
        except grpc.RpcError as error:
            call.cancel()
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            if time.monotonic() > deadline:
                raise AssertionError("no watch slot freed before the deadline") from error
        time.sleep(0.02)


# Where a stream starts


def test_watch_from_now_starts_with_progress_then_new_changes(serve: Serve) -> None:
    """Without after_sequence a stream skips older changes, says where it starts, then
    streams new ones."""
    server = serve(watch_heartbeat_s=0.2)
    record(server, "before", T0)
    start = head(server)
    assert start > 0
    with watching(server) as call:
        first = next(call)
        assert (list(first.changes), first.sequence) == ([], start)
        sequence = record(server, "after", T0)
        message = next_with_changes(call)
        assert [change.sequence for change in message.changes] == [sequence]
        assert message.sequence == sequence
        change = message.changes[0]
        assert change.group_state == get(server, "after")
        assert not change.forgotten
        assert abs(change.change_time.ToMilliseconds() / 1000 - time.time()) < 5.0


def test_resume_sends_the_changes_after_the_sequence_then_progress(serve: Serve) -> None:
    """Resuming after the 2nd of 5 changes streams changes 3 to 5 in order, then progress."""
    server = serve(watch_heartbeat_s=0.2)
    sequences = [record(server, f"g{i}", T0 + i) for i in range(5)]
    with watching(server, after_sequence=sequences[1]) as call:
        changes, progress = changes_until_progress(call)
    assert [change.sequence for change in changes] == sequences[2:]
    assert [change.group_state.group_id for change in changes] == ["g2", "g3", "g4"]
    assert progress == sequences[4]


def test_resume_after_zero_replays_a_new_database_from_its_start(serve: Serve) -> None:
    """after_sequence 0, the position of a new database, resumes before its first change."""
    server = serve(watch_heartbeat_s=0.2)
    with watching(server) as call:
        assert next(call).sequence == 0
    sequences = [record(server, f"g{i}", T0 + i) for i in range(3)]
    with watching(server, after_sequence=0) as call:
        changes, progress = changes_until_progress(call)
    assert ([c.sequence for c in changes], progress) == (sequences, sequences[-1])


def test_sequences_increase_across_groups(serve: Serve) -> None:
    """Every change gets a sequence above the previous one, whatever the group."""
    server = serve()
    sequences = [record(server, f"g{i % 3}", T0 + i) for i in range(9)]
    assert sequences == sorted(set(sequences))


# What a stream carries


def test_app_filter_passes_only_that_app_but_sequence_advances(serve: Serve) -> None:
    """A stream for one app skips other apps' changes, and its sequence moves past them."""
    server = serve(watch_heartbeat_s=0.2)
    with watching(server, sdk_app_id=APP) as call:
        next(call)
        record(server, "other-1", T0, app=APP + 1)
        mine = record(server, "mine", T0, app=APP)
        others = record(server, "other-2", T0, app=APP + 1)
        message = next_with_changes(call)
        assert [(c.sequence, c.group_state.sdk_app_id) for c in message.changes] == [(mine, APP)]
        changes, progress = changes_until_progress(call)
        assert changes == []
        assert progress == others


def test_member_exit_with_a_full_topic_is_two_changes(serve: Serve) -> None:
    """A member exit changes the group and its full topic: two changes, then nothing more."""
    server = serve(watch_heartbeat_s=0.2)
    topic = full_event("@TGS#c", T0)
    topic.topic_id = "t1"
    server.groups.RecordGroupFull(topic)
    with watching(server) as call:
        next(call)
        exit_request = pb.RecordMemberExitRequest(sdk_app_id=APP, group_id="@TGS#c")
        exit_request.event_time.FromMilliseconds(T0 + 1)
        assert server.groups.RecordMemberExit(exit_request).applied
        changes = read_changes(call, 2)
        assert sorted(c.group_state.topic_id for c in changes) == ["", "t1"]
        for change in changes:
            assert change.group_state == get(server, "@TGS#c", change.group_state.topic_id)
            assert not change.group_state.full
        assert changes[0].sequence < changes[1].sequence
        more, progress = changes_until_progress(call)
        assert (more, progress) == ([], head(server))


def test_idle_stream_gets_heartbeats(serve: Serve) -> None:
    """An idle stream gets a progress message about every watch_heartbeat_s."""
    server = serve(watch_heartbeat_s=0.1)
    sequence = record(server, "g", T0)
    with watching(server) as call:
        first = next(call)
        started = time.monotonic()
        heartbeats = [next(call), next(call)]
        elapsed = time.monotonic() - started
    assert [(list(m.changes), m.sequence) for m in [first, *heartbeats]] == [([], sequence)] * 3
    assert elapsed < 1.0


def test_filtered_stream_gets_heartbeats_while_other_apps_change(serve: Serve) -> None:
    """A stream for one app gets progress messages while only other apps' changes flow."""
    server = serve(watch_heartbeat_s=0.1)
    stop = threading.Event()

    def other_app_changes() -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            record(server, f"other-{i}", T0 + i, app=APP + 1)

    writer = threading.Thread(target=other_app_changes)
    with watching(server, sdk_app_id=APP) as call:
        first = next(call)
        writer.start()
        try:
            progress = [next(call), next(call), next(call)]
        finally:
            stop.set()
            writer.join()
    assert all(not m.changes for m in progress)
    assert first.sequence < progress[0].sequence <= progress[1].sequence <= progress[2].sequence


# Resuming where the log cannot


def test_resume_from_a_pruned_sequence_is_out_of_range(serve: Serve) -> None:
    """After pruning, resuming from an old sequence is CHANGE_LOG_EXPIRED; from the head works."""
    server = serve(watch_heartbeat_s=0.2)
    sequences = [record(server, f"g{i}", T0 + i) for i in range(3)]
    server.store.prune(destroyed_before_ms=0, changes_before_ms=now_ms() + 1000)
    for old in (sequences[0], sequences[1]):
        with watching(server, after_sequence=old) as call:
            error = expect_error(call)
        assert error.code() == grpc.StatusCode.OUT_OF_RANGE
        info = error_info(error)
        assert info.reason == "ERROR_REASON_CHANGE_LOG_EXPIRED"
        assert dict(info.metadata) == {
            "after_sequence": str(old),
            "oldest_sequence": str(sequences[2] + 1),
        }
    with watching(server, after_sequence=sequences[2]) as call:
        first = next(call)
        assert (list(first.changes), first.sequence) == ([], sequences[2])
        newer = record(server, "g-new", T0)
        assert [c.sequence for c in next_with_changes(call).changes] == [newer]
    with watching(server) as call:
        assert next(call).sequence == newer


def test_resume_ahead_of_the_log_is_out_of_range(serve: Serve) -> None:
    """A sequence beyond the head (another database) is SEQUENCE_AHEAD with the head."""
    server = serve()
    newest = record(server, "g", T0)
    with watching(server, after_sequence=newest + 10) as call:
        error = expect_error(call)
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE
    info = error_info(error)
    assert info.reason == "ERROR_REASON_SEQUENCE_AHEAD"
    assert dict(info.metadata) == {
        "after_sequence": str(newest + 10),
        "head_sequence": str(newest),
    }


def test_watch_on_a_store_that_is_down_is_unavailable(serve: Serve) -> None:
    """A watch that cannot read the change log is UNAVAILABLE with STORE_UNAVAILABLE."""
    server = serve(store=BrokenStore(StoreUnavailable("down")))
    with watching(server) as call:
        error = expect_error(call)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(error).reason == "ERROR_REASON_STORE_UNAVAILABLE"


# Forgotten groups


def test_pruned_destroyed_group_is_streamed_as_forgotten(serve: Serve) -> None:
    """Pruning a destroyed group streams its last state as forgotten; then it is NOT_FOUND."""
    server = serve(watch_heartbeat_s=0.2)
    now = now_ms()
    record(server, "@TGS#d", now - 10_000)
    destroy(server, "@TGS#d", now - 5_000)
    last = get(server, "@TGS#d")
    with watching(server) as call:
        next(call)
        outcome = server.store.prune(destroyed_before_ms=now_ms(), changes_before_ms=0)
        assert outcome.forgotten == 1
        (change,) = read_changes(call, 1)
    assert change.forgotten
    assert change.group_state == last
    assert change.group_state.destroyed
    with pytest.raises(grpc.RpcError) as raised:
        get(server, "@TGS#d")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_destroyed_retention_forgets_through_the_pruner(serve: Serve) -> None:
    """With a short destroyed retention the service itself forgets the group and its topics."""
    server = serve(watch_heartbeat_s=0.2, destroyed_retention_s=0.4)
    with watching(server) as call:
        next(call)
        topic = full_event("@TGS#d", T0)
        topic.topic_id = "t1"
        server.groups.RecordGroupFull(topic)
        destroy(server, "@TGS#d", T0 + 1)
        changes = read_changes(call, 5)
    assert [(c.group_state.topic_id, c.forgotten) for c in changes[:3]] == [
        ("t1", False),
        ("", False),
        ("t1", False),
    ]
    assert sorted((c.group_state.topic_id, c.forgotten) for c in changes[3:]) == [
        ("", True),
        ("t1", True),
    ]
    assert all(c.group_state.destroyed for c in changes[1:])
    for topic_id in ("", "t1"):
        with pytest.raises(grpc.RpcError) as raised:
            get(server, "@TGS#d", topic_id)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


# Stream limits and fan-out


def test_too_many_watchers_is_resource_exhausted(serve: Serve) -> None:
    """Beyond watch_max_streams a watch is refused; unary calls still answer; a slot frees."""
    server = serve(watch_max_streams=2, watch_heartbeat_s=0.2)
    with watching(server) as first, watching(server) as second:
        next(first)
        next(second)
        with watching(server) as third:
            error = expect_error(third)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(error).reason == "ERROR_REASON_TOO_MANY_WATCHERS"
        counts = server.groups.CountGroupStates(pb.CountGroupStatesRequest(), timeout=5)
        assert counts.tracked_count == 0
        sequence = record(server, "g", T0)
        assert [c.sequence for c in next_with_changes(second).changes] == [sequence]
        first.cancel()
        replacement = open_when_a_slot_frees(server)
        try:
            sequence = record(server, "h", T0)
            assert [c.sequence for c in next_with_changes(replacement).changes] == [sequence]
        finally:
            replacement.cancel()


def test_cancelled_streams_free_their_slot(serve: Serve) -> None:
    """With one stream slot, opening and cancelling 5 watches in a row always works."""
    server = serve(max_streams=1, watch_max_streams=1, watch_heartbeat_s=0.2)
    for _ in range(5):
        call = open_when_a_slot_frees(server)
        call.cancel()
    call = open_when_a_slot_frees(server)
    try:
        sequence = record(server, "g", T0)
        assert [c.sequence for c in next_with_changes(call).changes] == [sequence]
    finally:
        call.cancel()
    assert server.groups.CountGroupStates(pb.CountGroupStatesRequest(), timeout=5).full_count == 1


def test_fan_out_to_20_watchers(serve: Serve) -> None:
    """20 concurrent watchers each receive the same 50 changes, in order, exactly once."""
    server = serve(watch_heartbeat_s=0.2)
    calls = [
        server.groups.WatchGroupStates(pb.WatchGroupStatesRequest(), timeout=STREAM_TIMEOUT_S)
        for _ in range(20)
    ]
    try:
        for call in calls:
            next(call)
        sequences = [record(server, f"g{i}", T0 + i) for i in range(50)]
        for call in calls:
            changes, progress = changes_until_progress(call)
            while progress < sequences[-1]:
                more, progress = changes_until_progress(call)
                changes += more
            assert [c.sequence for c in changes] == sequences
            assert [c.group_state.group_id for c in changes] == [f"g{i}" for i in range(50)]
            assert progress == sequences[-1]
    finally:
        for call in calls:
            call.cancel()


# Shutdown


def test_stop_ends_streams_with_shutting_down(serve: Serve) -> None:
    """Stopping the service ends an open watch promptly with UNAVAILABLE, SHUTTING_DOWN."""
    server = serve(watch_heartbeat_s=0.2)
    with watching(server) as call:
        next(call)
        started = time.monotonic()
        server.stop_service(10.0)
        stopped_after = time.monotonic() - started
        with pytest.raises(grpc.RpcError) as raised:
            while True:
                next(call)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(raised.value).reason == "ERROR_REASON_SHUTTING_DOWN"
    assert stopped_after < 5.0
    # The fixture stops the service again at teardown: a second stop must be harmless.
    server.stop_service(None)


# Health


def check(server: Server, service: str) -> int:
    """The health status Check reports for a service name."""
    request = health_pb2.HealthCheckRequest(service=service)
    return server.health.Check(request, timeout=5).status


def test_health_serves_on_a_working_store(serve: Serve) -> None:
    """On a working store, the server and every service are SERVING."""
    server = serve()
    assert [check(server, service) for service in ALL_SERVICES] == [SERVING] * 4


def test_health_follows_the_store(serve: Serve) -> None:
    """A store that is down makes the server, GroupStateService and AuditService NOT_SERVING,
    not creation."""
    server = serve(store=BrokenStore(StoreUnavailable("down")))
    deadline = time.monotonic() + 10.0
    while check(server, GROUP_STATE_SERVICE) != NOT_SERVING:
        assert time.monotonic() < deadline, "GroupStateService still SERVING"
        time.sleep(0.05)
    assert [check(server, service) for service in ALL_SERVICES] == [
        NOT_SERVING,
        NOT_SERVING,
        SERVING,
        NOT_SERVING,
    ]


def test_stop_reports_not_serving_then_the_server_is_gone(serve: Serve) -> None:
    """On stop, health watchers see NOT_SERVING for everything; later checks find no server."""
    server = serve()
    watches = [
        server.health.Watch(health_pb2.HealthCheckRequest(service=s), timeout=STREAM_TIMEOUT_S)
        for s in ALL_SERVICES
    ]
    try:
        assert [next(w).status for w in watches] == [SERVING] * 4
        stopping = threading.Thread(target=server.stop_service, args=(10.0,))
        stopping.start()
        assert [next(w).status for w in watches] == [NOT_SERVING] * 4
    finally:
        for watch in watches:
            watch.cancel()
    stopping.join(timeout=10.0)
    assert not stopping.is_alive()
    with pytest.raises(grpc.RpcError) as raised:
        check(server, "")
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


# A change feed that lags behind the store (a NOTIFY not yet delivered, another replica's commit)


class LaggingFeedStore:
    """A real store whose wake-ups of the change feed's reader are held until `release`."""

    def __init__(self, store: GroupStateStore) -> None:
        self._store = store
        self.feed_waiting = threading.Event()
        self.release = threading.Event()

    @classmethod
    async def open(cls, url: str) -> LaggingFeedStore:
        """Open the store at `url`, wrapped."""
        return cls(await open_store(url))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def wait_for_changes(self, timeout_s: float) -> None:
        """Subscribe at once (timeout 0); otherwise wait for `release` before waiting (in a
        thread: the test releases it from its own)."""
        if timeout_s:
            self.feed_waiting.set()
            await asyncio.to_thread(self.release.wait, STREAM_TIMEOUT_S)
        await self._store.wait_for_changes(timeout_s)

    async def close(self) -> None:
        """Release the reader and close the real store."""
        self.release.set()
        await self._store.close()


def test_resume_sends_progress_only_after_the_changes_when_the_feed_lags(
    serve: Serve, tmp_path: Path
) -> None:
    """A resumed stream sends its first progress only after the changes the log already holds."""
    server = serve(store=LaggingFeedStore.open, watch_heartbeat_s=0.2)
    store = server.store.target
    assert store.feed_waiting.wait(5.0)
    sequences = [record(server, f"g{i}", T0 + i) for i in range(5)]
    try:
        with watching(server, after_sequence=sequences[1]) as call:
            changes, progress = changes_until_progress(call)
    finally:
        store.release.set()
    assert ([c.sequence for c in changes], progress) == (sequences[2:], sequences[4])


class CountingStore:
    """A real store that counts the change-log reads made through it (a named seam: the
    store the service is given)."""

    def __init__(self, store: GroupStateStore) -> None:
        self._store = store
        self.reads = 0

    @classmethod
    async def open(cls, url: str) -> CountingStore:
        """Open the store at `url`, wrapped."""
        return cls(await open_store(url))

    async def changes_after(self, sequence: int, limit: int) -> Any:
        """Count, then read."""
        self.reads += 1
        return await self._store.changes_after(sequence, limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_an_idle_feed_reads_nothing_and_wakes_for_the_first_watcher(
    serve: Serve, tmp_path: Path
) -> None:
    """With no watcher, writes cause no change-log reads; the first watcher then gets a new
    change at once, not at its next heartbeat."""
    server = serve(store=CountingStore.open, watch_heartbeat_s=30.0)
    store = server.store.target
    for index in range(20):
        record(server, f"idle-{index}", T0)
    time.sleep(0.3)
    assert store.reads == 0
    with watching(server) as call:
        assert not next(call).changes
        started = time.monotonic()
        sequence = record(server, "watched", T0)
        message = next_with_changes(call)
        assert [change.sequence for change in message.changes] == [sequence]
        assert time.monotonic() - started < 5.0
    assert store.reads > 0
