"""The concurrency budget: idle streams never starve unary calls or health; a stream or a unary
call beyond the budget is RESOURCE_EXHAUSTED with its reason; health is never refused."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from chatpolicy.v1 import group_state_service_pb2, group_state_service_pb2_grpc
from policy_service.stores.store import open_store
from tests.event_loops import LoopThread
from tests.policy_service.servers import APP, Serve, Server, error_info

pb = group_state_service_pb2
SERVING = health_pb2.HealthCheckResponse.SERVING
# Above the old server's thread pool (8 workers + 100 watch threads).
IDLE_REFLECTION_STREAMS = 200
CHANNELS = 4


class Streams:
    """Idle streams held open by an asyncio client on a loop of its own (a thread per
    stream on the client side would measure the client, not the server)."""

    def __init__(self, target: str) -> None:
        self.loop = LoopThread()
        self.calls: list[Any] = []

        async def channels() -> list[grpc.aio.Channel]:
            # Several connections, as many clients would open.
            return [
                grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(CHANNELS)
            ]

        self.channels = self.loop.run(channels())

    def open_reflection(self, count: int) -> None:
        """Open `count` reflection streams, each answered once (so served), then idle."""

        async def open_one(index: int) -> None:
            stub = reflection_pb2_grpc.ServerReflectionStub(self.channels[index % CHANNELS])
            call = stub.ServerReflectionInfo()
            self.calls.append(call)
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            await call.read()

        async def open_all() -> None:
            await asyncio.gather(*(open_one(index) for index in range(count)))

        self.loop.run(open_all(), timeout_s=60)

    def open_watches(self, count: int) -> None:
        """Open `count` watch streams, each past its first (progress) message."""

        async def open_one(index: int) -> None:
            stub = group_state_service_pb2_grpc.GroupStateServiceStub(
                self.channels[index % CHANNELS]
            )
            call = stub.WatchGroupStates(pb.WatchGroupStatesRequest())
            self.calls.append(call)
            await call.read()

        async def open_all() -> None:
            await asyncio.gather(*(open_one(index) for index in range(count)))

        self.loop.run(open_all(), timeout_s=60)

    def refused_reflection(self) -> tuple[grpc.StatusCode, str]:
        """The status code and details one more reflection stream ends with."""

        async def open_one() -> tuple[grpc.StatusCode, str]:
            stub = reflection_pb2_grpc.ServerReflectionStub(self.channels[0])
            call = stub.ServerReflectionInfo(timeout=5)  # accepted: DEADLINE_EXCEEDED
            # Nothing is written: a refused call ends before reading its first request, and a
            # write racing that end can fail on the client's side with a status of its own
            # (INTERNAL), which would hide what the server said.
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call.read()
            return await call.code(), await call.details()

        return self.loop.run(open_one())

    def close(self) -> None:
        async def close() -> None:
            for call in self.calls:
                call.cancel()
            for channel in self.channels:
                await channel.close()

        self.loop.run(close())
        self.loop.stop()


@pytest.fixture
def streams() -> Iterator[list[Streams]]:
    """Stream holders to close after the test."""
    held: list[Streams] = []
    yield held
    for holder in held:
        holder.close()


def hold(streams: list[Streams], server: Server) -> Streams:
    holder = Streams(server.target)
    streams.append(holder)
    return holder


def answers_unary_and_health(server: Server) -> None:
    """A unary call of each service and every health check answer, promptly."""
    counts = server.groups.CountGroupStates(pb.CountGroupStatesRequest(), timeout=5)
    assert counts.tracked_count >= 0
    request = pb.RecordGroupFullRequest(sdk_app_id=APP, group_id="g")
    request.event_time.GetCurrentTime()
    assert server.groups.RecordGroupFull(request, timeout=5).group_state.full
    for service in ("", "chatpolicy.v1.GroupStateService", "chatpolicy.v1.CreationPolicyService"):
        check = health_pb2.HealthCheckRequest(service=service)
        assert server.health.Check(check, timeout=5).status == SERVING


def test_idle_streams_beyond_the_old_thread_pool_leave_unary_calls_and_health_answering(
    serve: Serve, streams: list[Streams]
) -> None:
    """200 idle reflection streams and 50 idle watch streams (the watch budget, all of it):
    unary calls and health checks still answer, as does a change to every watcher."""
    server = serve(watch_max_streams=50, watch_heartbeat_s=30.0)
    holder = hold(streams, server)
    holder.open_reflection(IDLE_REFLECTION_STREAMS)
    holder.open_watches(50)
    assert server.service.budget.streams == IDLE_REFLECTION_STREAMS + 50
    answers_unary_and_health(server)


def test_a_stream_beyond_the_budget_is_resource_exhausted_and_health_still_answers(
    serve: Serve, streams: list[Streams]
) -> None:
    """With max_streams open, one more reflection stream and one more watch are refused with
    RESOURCE_EXHAUSTED and ERROR_REASON_TOO_MANY_STREAMS; health Watch and Check, and unary
    calls, are not; closing a stream frees its place."""
    server = serve(max_streams=20, watch_max_streams=10)
    holder = hold(streams, server)
    holder.open_reflection(20)
    code, details = holder.refused_reflection()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "CHAT_POLICY_MAX_STREAMS" in details
    with pytest.raises(grpc.RpcError) as raised:
        next(server.groups.WatchGroupStates(pb.WatchGroupStatesRequest(), timeout=5))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(raised.value).reason == "ERROR_REASON_TOO_MANY_STREAMS"
    watch = server.health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
    try:
        assert next(watch).status == SERVING
    finally:
        watch.cancel()
    answers_unary_and_health(server)
    holder.calls.pop().cancel()
    for _ in range(100):
        if server.service.budget.streams < 20:
            break
        threading.Event().wait(0.02)
    call = server.groups.WatchGroupStates(pb.WatchGroupStatesRequest(), timeout=5)
    try:
        assert not next(call).changes
    finally:
        call.cancel()


COUNT_GROUP_STATES = "/chatpolicy.v1.GroupStateService/CountGroupStates"


def refused_count(method: str) -> float:
    """chat_policy_service_rpcs_total of `method` answered RESOURCE_EXHAUSTED, so far."""
    labels = {"method": method, "code": "RESOURCE_EXHAUSTED"}
    return REGISTRY.get_sample_value("chat_policy_service_rpcs_total", labels) or 0.0


class HeldGets:
    """A store whose GetGroupState reads wait until `release` is set (from the test's thread)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.release = threading.Event()
        self.waiting = 0

    @classmethod
    async def open(cls, url: str) -> HeldGets:
        return cls(await open_store(url))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get(self, key: Any) -> Any:
        self.waiting += 1
        await asyncio.to_thread(self.release.wait, 10)
        return await self._store.get(key)

    async def close(self) -> None:
        self.release.set()
        await self._store.close()


def test_a_unary_call_beyond_the_budget_is_resource_exhausted_and_health_still_answers(
    serve: Serve,
) -> None:
    """With max_concurrent_rpcs calls in flight, one more is refused at once with
    RESOURCE_EXHAUSTED and ERROR_REASON_OVERLOADED; health checks still answer; once the calls
    end, calls are served again."""
    server = serve(store=HeldGets.open, max_concurrent_rpcs=2)
    store: HeldGets = server.store.target
    get = pb.GetGroupStateRequest(sdk_app_id=APP, group_id="g")
    in_flight: list[Future[Any]] = [
        server.groups.GetGroupState.future(get, timeout=10) for _ in range(2)
    ]
    for _ in range(250):
        if store.waiting == 2:
            break
        threading.Event().wait(0.02)
    assert store.waiting == 2
    refusals = refused_count(COUNT_GROUP_STATES)
    with pytest.raises(grpc.RpcError) as raised:
        server.groups.CountGroupStates(pb.CountGroupStatesRequest(), timeout=5)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(raised.value).reason == "ERROR_REASON_OVERLOADED"
    assert "CHAT_POLICY_GRPC_MAX_CONCURRENT" in (raised.value.details() or "")
    # Counted before the caller heard of it.
    assert refused_count(COUNT_GROUP_STATES) == refusals + 1
    check = health_pb2.HealthCheckRequest(service="")
    assert health_pb2_grpc.HealthStub(server.channel).Check(check, timeout=5).status == SERVING
    store.release.set()
    for future in in_flight:
        with pytest.raises(grpc.RpcError) as ended:
            future.result()
        assert ended.value.code() == grpc.StatusCode.NOT_FOUND
    assert server.groups.CountGroupStates(pb.CountGroupStatesRequest(), timeout=5)
