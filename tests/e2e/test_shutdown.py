"""Graceful shutdown with real processes and requests in flight.

A request is kept in flight without mocks by holding the store's write lock from the test:
the service's writes (and, on SQLite, every store call queued behind them) wait for it.
SQLite waits up to its busy timeout (5 s, policy_service/stores/sqlite_store.py), PostgreSQL for as
long as it takes; every lock here is released well within that.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatpolicy.v1 import group_state_service_pb2 as pb
from chatpolicy.v1 import group_state_service_pb2_grpc
from tests.chat_samples import OK
from tests.e2e.deployment import START_TIMEOUT_S, Deployment, adapter_serves
from tests.e2e.spooled_events import (
    GROUP_FULL,
    REPLAY_TIMEOUT_S,
    SDKAPPID,
    Expected,
    after_event,
    query,
    spool_depth,
    state_matches,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

BASE_MS = 1_700_000_000_000
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The service's drain limit in these tests (CHAT_POLICY_GRPC_GRACE_S).
GRACE_S = 4.0
# gunicorn's graceful_timeout (adapter/gunicorn_app.py).
GUNICORN_GRACEFUL_TIMEOUT_S = 10.0
# How long requests are left waiting on the lock after the SIGTERM: long enough that a
# process not waiting for them would be seen to exit first.
HOLD_AFTER_SIGTERM_S = 0.8
# After the lock is released, the in-flight work is a few milliseconds: exit follows soon.
EXIT_AFTER_RELEASE_S = 1.5
IN_FLIGHT = 4


class StoreLock:
    """The store's write lock, held by the test until release() (or the end of the block)."""

    def __init__(self, release: Callable[[], object]) -> None:
        self._release = release
        self.released_at: float | None = None

    def release(self) -> None:
        """Let the waiting writes go on (once; later calls do nothing)."""
        if self.released_at is None:
            self._release()
            self.released_at = time.monotonic()


@contextmanager
def store_locked(deployment: Deployment) -> Iterator[StoreLock]:
    """Hold the write lock of the deployment's store: its SQLite file, or on PostgreSQL the
    group_state table (ACCESS EXCLUSIVE: reads of it wait too)."""
    url = deployment.env.get("CHAT_POLICY_DATABASE_URL", "")
    if url.startswith("postgresql"):
        with psycopg.connect(url) as pg:
            pg.execute("LOCK TABLE group_state IN ACCESS EXCLUSIVE MODE")
            lock = StoreLock(pg.rollback)
            try:
                yield lock
            finally:
                lock.release()
        return
    path = Path(deployment.env["CHAT_POLICY_DATA_DIR"]) / "chat-policy.db"
    db = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        db.execute("BEGIN IMMEDIATE")
        lock = StoreLock(lambda: db.execute("ROLLBACK"))
        try:
            yield lock
        finally:
            lock.release()
    finally:
        db.close()


def full_request(group_id: str, event_ms: int) -> pb.RecordGroupFullRequest:
    """A RecordGroupFull request of the test application."""
    request = pb.RecordGroupFullRequest(sdk_app_id=SDKAPPID, group_id=group_id)
    request.event_time.FromMilliseconds(event_ms)
    return request


def health_check(target: str, timeout_s: float = 1.0) -> int:
    """grpc.health.v1 Check of "" on a new channel; raises grpc.RpcError when refused."""
    with grpc.insecure_channel(target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
        )
    return int(response.status)


def refused(target: str) -> bool:
    """True when a new call to the service fails with UNAVAILABLE (nothing takes it)."""
    try:
        health_check(target, timeout_s=0.5)
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        return bool(error.code() == grpc.StatusCode.UNAVAILABLE)
    return False


def start_service(deployment: Deployment) -> subprocess.Popen[bytes]:
    """Start the policy service with GRACE_S and wait until it answers."""
    process = deployment.start("service", {"CHAT_POLICY_GRPC_GRACE_S": str(GRACE_S)})
    deployment.wait_for_grpc(process)
    return process


def stream_ends_with(call: Iterator[object]) -> grpc.StatusCode:
    """Read a stream to its end: its status code (OK if it ends without an error)."""
    try:
        for _ in call:
            pass
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def post_webhooks(
    pool: ThreadPoolExecutor, deployment: Deployment, prefix: str
) -> list[Future[tuple[int, bytes]]]:
    """POST IN_FLIGHT group-full webhooks at once, one group each: their answers to come."""
    return [
        pool.submit(
            deployment.post,
            query(GROUP_FULL),
            json.dumps(
                {**after_event(f"{prefix}{i}", BASE_MS + i), "CallbackCommand": GROUP_FULL}
            ).encode(),
        )
        for i in range(IN_FLIGHT)
    ]


def expected_groups(prefix: str) -> dict[str, Expected]:
    """The state of each group post_webhooks sent an event for."""
    return {f"{prefix}{i}": Expected(True, BASE_MS + i, 1, BASE_MS + i) for i in range(IN_FLIGHT)}


def workers_answer(deployment: Deployment) -> None:
    """Wait until gunicorn's workers answer: 10 answers in a row, each on a new connection,
    which the kernel spreads over the workers' sockets (SO_REUSEPORT).

    The port accepts connections as soon as one worker listens; a connection queued to a
    worker still booting is reset if that worker is stopped before it serves it.
    """
    for _ in range(10):
        connection = http.client.HTTPConnection("127.0.0.1", deployment.http_port, timeout=10)
        try:
            connection.request("GET", "/healthz")
            assert connection.getresponse().status == 200
        finally:
            connection.close()


def exit_status_within(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """The process's exit status; fail if it is still running after timeout_s."""
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {timeout_s}s later")


# The policy service


def test_service_sigterm_drains_in_flight_calls_and_refuses_new_ones(
    database_url: str, deployment: Deployment
) -> None:
    """On SIGTERM, calls in flight finish OK, health says NOT_SERVING and its stream ends,
    new calls are refused, and the service exits 0 soon after the last call, within grace."""
    deployment.env["CHAT_POLICY_DATABASE_URL"] = database_url
    service = start_service(deployment)
    target = deployment.grpc_target
    with grpc.insecure_channel(target) as channel:
        groups = group_state_service_pb2_grpc.GroupStateServiceStub(channel)
        groups.RecordGroupFull(full_request("warm", BASE_MS), timeout=5)
        with store_locked(deployment) as lock:
            calls = [
                groups.RecordGroupFull.future(full_request(f"g{i}", BASE_MS + i), timeout=10)
                for i in range(IN_FLIGHT)
            ]
            time.sleep(0.2)
            read = groups.GetGroupState.future(
                pb.GetGroupStateRequest(sdk_app_id=SDKAPPID, group_id="warm"), timeout=10
            )
            if database_url.startswith("postgresql"):
                calls.append(read)  # ACCESS EXCLUSIVE: the read waits too
            else:
                # SQLite (WAL): a point read runs on the loop's own read connection and
                # answers while the writes wait behind the lock.
                assert read.result(5).group_state.full
            # Longer than the store health check's interval (1 s): on SQLite its ping now
            # waits behind the writes too, and the stop must not wait for it.
            time.sleep(1.1)
            assert not any(call.done() for call in calls), "the lock does not hold the calls"
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=GRACE_S
            )
            assert next(watch).status == SERVING

            service.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert next(watch).status == NOT_SERVING
            wait_for(lambda: refused(target), 1.0, "new calls to be refused")
            # The watch ends at once, although unary calls are still in flight.
            assert stream_ends_with(watch) == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - signalled < 1.0
            time.sleep(max(0.0, signalled + HOLD_AFTER_SIGTERM_S - time.monotonic()))
            assert not any(call.done() for call in calls)
            assert service.poll() is None, "the service exited with calls in flight"
            lock.release()

        for call in calls[:IN_FLIGHT]:
            assert call.result().applied
        for call in calls[IN_FLIGHT:]:
            assert call.result().group_state.full
    status = exit_status_within(service, GRACE_S)
    exited = time.monotonic()
    assert status == 0, deployment.log("service")
    assert exited - signalled < GRACE_S
    assert lock.released_at is not None and exited - lock.released_at < EXIT_AFTER_RELEASE_S

    start_service(deployment)
    with grpc.insecure_channel(target) as channel:
        groups = group_state_service_pb2_grpc.GroupStateServiceStub(channel)
        for i in range(IN_FLIGHT):
            request = pb.GetGroupStateRequest(sdk_app_id=SDKAPPID, group_id=f"g{i}")
            assert groups.GetGroupState(request, timeout=5).group_state.full


def test_open_watch_streams_do_not_hold_the_service_stop(deployment: Deployment) -> None:
    """With health Watch and WatchGroupStates streams open and idle, SIGTERM ends them
    (NOT_SERVING then UNAVAILABLE) and the service exits 0 at once, not after the grace."""
    service = start_service(deployment)
    with grpc.insecure_channel(deployment.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watches = [
            health.Watch(health_pb2.HealthCheckRequest(service=name), timeout=2 * GRACE_S)
            for name in ("", "chatpolicy.v1.GroupStateService")
        ]
        for watch in watches:
            assert next(watch).status == SERVING
        changes = group_state_service_pb2_grpc.GroupStateServiceStub(channel).WatchGroupStates(
            pb.WatchGroupStatesRequest(), timeout=2 * GRACE_S
        )
        next(changes)  # caught up: the stream is open and idle

        service.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        for watch in watches:
            assert next(watch).status == NOT_SERVING
            assert stream_ends_with(watch) == grpc.StatusCode.UNAVAILABLE
        assert stream_ends_with(changes) == grpc.StatusCode.UNAVAILABLE
        status = exit_status_within(service, 2 * GRACE_S)
        stopped_after = time.monotonic() - signalled
    assert status == 0, deployment.log("service")
    assert stopped_after < 2.0, f"the service took {stopped_after:.2f}s to stop"


# The adapter (gunicorn)


def test_adapter_sigterm_answers_in_flight_webhooks_in_full(deployment: Deployment) -> None:
    """On SIGTERM to gunicorn, webhooks waiting on a slow policy service still get their 200
    once it answers, the events are in the store, and gunicorn exits 0 in its grace."""
    start_service(deployment)
    # A deadline the lock stays inside: the calls succeed late rather than being spooled.
    adapter = deployment.start_adapter({"CHAT_POLICY_GRPC_DEADLINE_MS": "1900"}, new_session=True)
    workers_answer(deployment)
    warm = json.dumps({**after_event("warm", BASE_MS), "CallbackCommand": GROUP_FULL}).encode()
    assert deployment.post(query(GROUP_FULL), warm) == (200, OK)
    with ThreadPoolExecutor(IN_FLIGHT) as pool, store_locked(deployment) as lock:
        answers = post_webhooks(pool, deployment, "slow")
        time.sleep(0.3)
        assert not any(answer.done() for answer in answers), "the lock does not hold them"
        os.kill(adapter.pid, signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(HOLD_AFTER_SIGTERM_S)
        assert not any(answer.done() for answer in answers)
        assert adapter.poll() is None, "gunicorn exited with webhooks in flight"
        lock.release()
        assert [answer.result() for answer in answers] == [(200, OK)] * IN_FLIGHT
    status = exit_status_within(adapter, GUNICORN_GRACEFUL_TIMEOUT_S)
    exited = time.monotonic()
    assert status == 0, deployment.log("adapter")
    assert exited - signalled < GUNICORN_GRACEFUL_TIMEOUT_S
    assert lock.released_at is not None and exited - lock.released_at < EXIT_AFTER_RELEASE_S
    assert state_matches(deployment, expected_groups("slow"))
    assert spool_depth(deployment) == 0


def test_adapter_sigterm_spools_what_the_service_cannot_take_and_it_lands_later(
    deployment: Deployment,
) -> None:
    """Webhooks in flight when gunicorn is stopped whose policy call times out are answered
    200 from the spool; with the service then killed, a new adapter replays every one."""
    service = start_service(deployment)
    adapter = deployment.start_adapter(new_session=True)  # the default 500 ms deadline
    workers_answer(deployment)
    with ThreadPoolExecutor(IN_FLIGHT) as pool, store_locked(deployment):
        answers = post_webhooks(pool, deployment, "spooled")
        time.sleep(0.2)
        os.kill(adapter.pid, signal.SIGTERM)
        assert [answer.result() for answer in answers] == [(200, OK)] * IN_FLIGHT
        assert exit_status_within(adapter, GUNICORN_GRACEFUL_TIMEOUT_S) == 0
        assert spool_depth(deployment) == IN_FLIGHT
        # The service dies before its late writes can commit: the spool is the only copy.
        service.kill()
        service.wait()
    start_service(deployment)
    assert not state_matches(deployment, expected_groups("spooled"))
    deployment.start_adapter(new_session=True)
    wait_for(
        lambda: state_matches(deployment, expected_groups("spooled")),
        REPLAY_TIMEOUT_S,
        "the spooled events to land",
    )
    wait_for(lambda: spool_depth(deployment) == 0, REPLAY_TIMEOUT_S, "the spool to drain")


# chat-policy run


def children_of(pid: int) -> dict[str, int]:
    """The supervisor's children by role: "service" and "adapter" (gunicorn's master)."""
    children: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == pid:
            role = "service" if b"service" in argv[-2:] else "adapter"
            children[role] = int(entry.name)
    return children


def exited(pid: int) -> bool:
    """True when the process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def test_run_stops_the_adapter_first_then_the_service(deployment: Deployment) -> None:
    """On SIGTERM `chat-policy run` lets the adapter finish a webhook in flight while the
    service still serves, stops the service only once the adapter is gone, and exits 0."""
    supervisor = deployment.start("run", {"CHAT_POLICY_GRPC_DEADLINE_MS": "1900"})
    children: dict[str, int] = {}
    try:
        wait_for(
            lambda: supervisor.poll() is None and adapter_serves(deployment.http_port),
            START_TIMEOUT_S,
            "chat-policy run to start both",
        )
        workers_answer(deployment)
        children = children_of(supervisor.pid)
        assert set(children) == {"service", "adapter"}, children
        warm = json.dumps({**after_event("warm", BASE_MS), "CallbackCommand": GROUP_FULL})
        assert deployment.post(query(GROUP_FULL), warm.encode()) == (200, OK)

        # What the service's health says, and whether the adapter was gone by then.
        seen: list[tuple[int, bool]] = []
        channel = grpc.insecure_channel(deployment.grpc_target)
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=3 * GRACE_S
        )

        def follow() -> None:
            try:
                for message in watch:
                    seen.append((message.status, exited(children["adapter"])))
            except grpc.RpcError:
                pass

        follower = threading.Thread(target=follow)
        follower.start()
        try:
            with ThreadPoolExecutor(1) as pool, store_locked(deployment) as lock:
                answer = pool.submit(
                    deployment.post,
                    query(GROUP_FULL),
                    json.dumps(
                        {**after_event("late", BASE_MS + 1), "CallbackCommand": GROUP_FULL}
                    ).encode(),
                )
                time.sleep(0.3)
                assert not answer.done(), "the lock does not hold the webhook"
                supervisor.send_signal(signal.SIGTERM)
                time.sleep(HOLD_AFTER_SIGTERM_S)
                # The adapter is draining; the service has not been told to stop yet.
                assert not answer.done()
                assert health_check(deployment.grpc_target) == SERVING
                lock.release()
                assert answer.result() == (200, OK)
            assert exit_status_within(supervisor, 2 * GUNICORN_GRACEFUL_TIMEOUT_S) == 0
            follower.join(5)
        finally:
            watch.cancel()
            follower.join()
            channel.close()
        assert seen[0] == (SERVING, False)
        assert (NOT_SERVING, True) in seen, f"(status, adapter gone) seen: {seen}"
        assert all(gone for status, gone in seen if status == NOT_SERVING), seen
        assert all(exited(pid) for pid in children.values())
    finally:
        for pid in children.values():
            if not exited(pid):
                os.kill(pid, signal.SIGKILL)
