"""RpcInterceptor on a real in-process grpc.aio server (on a loop of its own): status codes,
streams, request IDs, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from chat_policy_shared import logs
from policy_service.api.rpc_interceptor import InterceptedServer, RpcInterceptor
from policy_service.api.status import maps_errors
from policy_service.errors import StoreUnavailable
from tests.event_loops import LoopThread
from tests.waiting import wait_for

SERVICE = "test.v1.Probe"
UNARY = f"/{SERVICE}/Unary"
STREAM = f"/{SERVICE}/Stream"
STORE = f"/{SERVICE}/Store"
WATCH = "/grpc.health.v1.Health/Watch"


async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """Answer by the request: an abort, a set_code, an exception, a description of the call,
    the request ID, or an echo."""
    verb, _, argument = request.decode().partition(":")
    if verb == "abort":
        await context.abort(grpc.StatusCode[argument], "aborted on request")
    if verb == "set_code":
        context.set_code(grpc.StatusCode[argument])
        return b""
    if verb == "raise":
        raise RuntimeError("a bug")
    if verb == "describe":
        logs.describe_call(f"did {argument}", what=argument)
        if argument == "fail":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "described, then failed")
        return b""
    if verb == "request_id":
        logging.getLogger("tests.handler").info("handling")
        return (logs.request_id.get() or "").encode()
    return request


async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    """Yield `n` items, then abort with a code or wait for the client to go away, if asked."""
    count, _, then = request.decode().partition(":")
    for index in range(int(count)):
        yield str(index).encode()
    if then == "wait":
        while not context.cancelled():  # the task is cancelled when the client goes away
            await asyncio.sleep(0.01)
    elif then:
        await context.abort(grpc.StatusCode[then], "stream aborted on request")


class StoreServicer:
    """A servicer method behind maps_errors whose store is down."""

    @maps_errors
    async def Store(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise StoreUnavailable("database is down")


@dataclass
class Probe:
    """A running server with the interceptor, its channel and its health servicer."""

    server: grpc.aio.Server
    channel: grpc.Channel
    health: health.aio.HealthServicer
    loop: LoopThread

    def set_health(self, status: int) -> None:
        self.loop.run(self.health.set("", status))

    def unary(
        self, request: bytes, request_id: str | None = None, webhook: str | None = None
    ) -> bytes:
        metadata: tuple[tuple[str, str], ...] = ()
        if request_id is not None:
            metadata += ((logs.REQUEST_ID_METADATA, request_id),)
        if webhook is not None:
            metadata += ((logs.WEBHOOK_METADATA, webhook),)
        call = self.channel.unary_unary(UNARY)
        response: bytes = call(request, metadata=metadata, timeout=5)
        return response


@pytest.fixture
def probe() -> Iterator[Probe]:
    """A grpc.aio server on port 0 on a loop of its own, serving the probe methods and health."""
    loop = LoopThread()

    async def make() -> grpc.aio.Server:
        return InterceptedServer(RpcInterceptor())

    server = loop.run(make())
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(unary),
                    "Stream": grpc.unary_stream_rpc_method_handler(stream),
                    "Store": grpc.unary_unary_rpc_method_handler(StoreServicer().Store),
                },
            ),
        )
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    loop.run(server.start())
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield Probe(server, channel, health_servicer, loop)
    channel.close()
    loop.run(server.stop(None))
    loop.stop()


def rpcs(method: str, code: str) -> float:
    """chat_policy_service_rpcs_total for method and code, so far."""
    labels = {"method": method, "code": code}
    return REGISTRY.get_sample_value("chat_policy_service_rpcs_total", labels) or 0.0


def latency_count(method: str) -> float:
    """How many latencies chat_policy_service_rpc_duration_seconds observed for method."""
    labels = {"method": method}
    value = REGISTRY.get_sample_value("chat_policy_service_rpc_duration_seconds_count", labels)
    return value or 0.0


class RecordedLines(logging.Handler):
    """Keeps each record with the request ID bound when it was logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[logging.LogRecord, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record, logs.request_id.get()))

    def rpc_lines(self, method: str) -> list[RpcLine]:
        """The canonical lines of `method`."""
        return [
            RpcLine(
                record.levelno,
                fields["code"],
                fields["latency_ms"],
                request_id,
                fields.get("webhook"),
            )
            for record, request_id in self.lines
            if record.name == "policy_service.api.rpc_interceptor"
            and (fields := vars(record)).get("rpc_method") == method
        ]


@dataclass(frozen=True)
class RpcLine:
    """The fields of one canonical rpc line, and the request ID bound when it was logged."""

    level: int
    code: str
    latency_ms: float
    request_id: str | None
    webhook: str | None = None


@pytest.fixture
def lines() -> Iterator[RecordedLines]:
    """Every INFO line logged during the test, with its bound request ID."""
    handler = RecordedLines()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"echo", "OK"),
        (b"abort:NOT_FOUND", "NOT_FOUND"),
        (b"set_code:ALREADY_EXISTS", "ALREADY_EXISTS"),
        (b"raise", "UNKNOWN"),
    ],
)
def test_unary_calls_are_counted_timed_and_logged_with_their_code(
    probe: Probe, lines: RecordedLines, request_bytes: bytes, code: str
) -> None:
    """Each unary call counts once under the code the caller got, and logs one rpc line."""
    counted, timed = rpcs(UNARY, code), latency_count(UNARY)
    try:
        probe.unary(request_bytes)
        received = "OK"
    except grpc.RpcError as error:
        received = error.code().name
    assert received == code
    # A handler's own context.abort sends the status before it raises: the count follows.
    wait_for(lambda: rpcs(UNARY, code) == counted + 1)
    assert latency_count(UNARY) == timed + 1
    [line] = lines.rpc_lines(UNARY)
    assert line.level == logging.INFO
    assert line.code == code
    assert 0 <= line.latency_ms < 5000


WEBHOOK = "Group.CallbackBeforeCreateGroup"


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [(b"echo", "OK"), (b"describe:work", "OK"), (b"abort:NOT_FOUND", "NOT_FOUND")],
)
def test_a_call_for_a_webhook_logs_no_info_line_unless_it_fails(
    probe: Probe, lines: RecordedLines, request_bytes: bytes, code: str
) -> None:
    """A call carrying x-chat-policy-webhook has the adapter's line as its canonical one:
    answered OK it logs no INFO line (it is still counted and timed); answered otherwise its
    INFO line names the webhook."""
    counted, timed = rpcs(UNARY, code), latency_count(UNARY)
    with pytest.raises(grpc.RpcError) if code != "OK" else contextlib.nullcontext():
        probe.unary(request_bytes, request_id="relayed-1", webhook=WEBHOOK)
    wait_for(lambda: rpcs(UNARY, code) == counted + 1)
    assert latency_count(UNARY) == timed + 1
    expected = [] if code == "OK" else [(logging.INFO, code, "relayed-1", WEBHOOK)]
    logged = [
        (line.level, line.code, line.request_id, line.webhook) for line in lines.rpc_lines(UNARY)
    ]
    assert logged == expected


def test_a_call_for_a_webhook_answered_ok_logs_at_debug(probe: Probe, lines: RecordedLines) -> None:
    """With DEBUG on, the OK call's line is there, at DEBUG, with the webhook and what the
    handler described."""
    logging.getLogger().setLevel(logging.DEBUG)
    probe.unary(b"describe:work", request_id="relayed-2", webhook=WEBHOOK)
    [line] = lines.rpc_lines(UNARY)
    assert (line.level, line.code, line.request_id, line.webhook) == (
        logging.DEBUG,
        "OK",
        "relayed-2",
        WEBHOOK,
    )
    (record,) = [record for record, _ in lines.lines if record.name.endswith("rpc_interceptor")]
    assert record.getMessage() == "Unary answered OK: did work"


def test_a_call_without_the_webhook_metadata_logs_as_before(
    probe: Probe, lines: RecordedLines
) -> None:
    """Without x-chat-policy-webhook an OK call keeps its INFO line, with no webhook field."""
    probe.unary(b"describe:work", request_id="direct-1")
    [line] = lines.rpc_lines(UNARY)
    assert (line.level, line.code, line.request_id) == (logging.INFO, "OK", "direct-1")
    (record,) = [record for record, _ in lines.lines]
    assert "webhook" not in vars(record)


@pytest.mark.parametrize("given", ["Group.Callback BeforeCreateGroup", "x" * 129, ""])
def test_a_webhook_name_that_is_not_a_safe_token_counts_as_none(
    probe: Probe, lines: RecordedLines, given: str
) -> None:
    """The caller's webhook name lands in the log: one with other characters, or longer
    than a request ID may be, is ignored, and the OK call keeps its INFO line."""
    probe.unary(b"describe:work", request_id="odd-1", webhook=given)
    [line] = lines.rpc_lines(UNARY)
    assert (line.level, line.code, line.webhook) == (logging.INFO, "OK", None)


def test_the_request_id_comes_from_the_metadata(probe: Probe, lines: RecordedLines) -> None:
    """The handler, its log lines and the rpc line all run under the caller's x-request-id."""
    assert probe.unary(b"request_id", request_id="chat-req.42:a_b") == b"chat-req.42:a_b"
    handled = [rid for record, rid in lines.lines if record.getMessage() == "handling"]
    assert handled == ["chat-req.42:a_b"]
    assert [line.request_id for line in lines.rpc_lines(UNARY)] == ["chat-req.42:a_b"]
    assert logs.request_id.get() is None  # nothing leaks into the caller's thread


@pytest.mark.parametrize(("argument", "code"), [("work", "OK"), ("fail", "FAILED_PRECONDITION")])
def test_what_the_handler_describes_goes_on_the_one_rpc_line(
    probe: Probe, lines: RecordedLines, argument: str, code: str
) -> None:
    """describe_call's summary ends the rpc line's message and its fields join the line's,
    whether the call succeeds or fails; the handler writes no line of its own."""
    with pytest.raises(grpc.RpcError) if code != "OK" else contextlib.nullcontext():
        probe.unary(f"describe:{argument}".encode())
    wait_for(lambda: len(lines.lines) == 1)
    (record,) = [record for record, _ in lines.lines]
    assert record.getMessage() == f"Unary answered {code}: did {argument}"
    assert (vars(record)["what"], vars(record)["code"]) == (argument, code)


def test_describe_call_outside_an_rpc_does_nothing(lines: RecordedLines) -> None:
    """Outside a served RPC describe_call neither fails nor logs."""
    logs.describe_call("nothing to describe", what="no")
    assert lines.lines == []


@pytest.mark.parametrize("given", [None, "has space", "x" * 129, "semi;colon"])
def test_a_missing_or_unacceptable_request_id_is_replaced(
    probe: Probe, lines: RecordedLines, given: str | None
) -> None:
    """Without an acceptable x-request-id the call gets a fresh random one (32 hex digits)."""
    first = probe.unary(b"request_id", request_id=given).decode()
    second = probe.unary(b"request_id", request_id=given).decode()
    assert len(first) == 32 and set(first) <= set("0123456789abcdef")
    assert first != second
    assert [line.request_id for line in lines.rpc_lines(UNARY)] == [first, second]


def test_a_stream_is_counted_and_logged_once_when_it_ends(
    probe: Probe, lines: RecordedLines
) -> None:
    """A server stream of three messages is one OK RPC, logged once, after its last message."""
    counted = rpcs(STREAM, "OK")
    responses = list(probe.channel.unary_stream(STREAM)(b"3", timeout=5))
    assert responses == [b"0", b"1", b"2"]
    wait_for(lambda: rpcs(STREAM, "OK") == counted + 1)
    assert [line.code for line in lines.rpc_lines(STREAM)] == ["OK"]


def test_a_stream_aborted_midway_counts_its_code(probe: Probe, lines: RecordedLines) -> None:
    """A stream that aborts after one message counts under the abort's code."""
    counted = rpcs(STREAM, "OUT_OF_RANGE")
    received: list[bytes] = []
    with pytest.raises(grpc.RpcError) as raised:
        received.extend(probe.channel.unary_stream(STREAM)(b"1:OUT_OF_RANGE", timeout=5))
    assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert received == [b"0"]
    wait_for(lambda: rpcs(STREAM, "OUT_OF_RANGE") == counted + 1)
    assert [line.code for line in lines.rpc_lines(STREAM)] == ["OUT_OF_RANGE"]


def test_a_stream_the_client_cancels_counts_as_cancelled(
    probe: Probe, lines: RecordedLines
) -> None:
    """A stream whose client goes away counts as CANCELLED, once, when its handler ends."""
    counted = rpcs(STREAM, "CANCELLED")
    call = probe.channel.unary_stream(STREAM)(b"1:wait", timeout=5)
    assert next(call) == b"0"
    call.cancel()
    wait_for(lambda: rpcs(STREAM, "CANCELLED") == counted + 1)
    wait_for(lambda: len(lines.rpc_lines(STREAM)) == 1)
    assert [line.code for line in lines.rpc_lines(STREAM)] == ["CANCELLED"]


def test_the_health_watch_stays_non_blocking_and_is_counted_when_it_ends(
    probe: Probe, lines: RecordedLines
) -> None:
    """Open health watches hold nothing that unary calls need, and each counts once when its
    client leaves."""
    counted = rpcs(WATCH, "CANCELLED")
    stub = health_pb2_grpc.HealthStub(probe.channel)
    watches = [stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5) for _ in range(3)]
    for watch in watches:
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    assert probe.unary(b"still served") == b"still served"
    probe.set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
    for watch in watches:
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
    wait_for(lambda: rpcs(WATCH, "CANCELLED") == counted + 3)
    assert len(lines.rpc_lines(WATCH)) == 3


def test_a_store_outage_behind_a_failed_call_is_counted(probe: Probe) -> None:
    """A call failed by StoreUnavailable counts as UNAVAILABLE and as its method's store error."""
    labels = {"operation": "Store"}
    errors = REGISTRY.get_sample_value("chat_policy_service_store_errors_total", labels) or 0.0
    counted = rpcs(STORE, "UNAVAILABLE")
    with pytest.raises(grpc.RpcError) as raised:
        probe.channel.unary_unary(STORE)(b"", timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert rpcs(STORE, "UNAVAILABLE") == counted + 1
    assert REGISTRY.get_sample_value("chat_policy_service_store_errors_total", labels) == errors + 1


def test_other_failures_are_not_store_errors(probe: Probe) -> None:
    """An abort that no store error caused leaves the store error count alone."""
    labels = {"operation": "Unary"}
    before = REGISTRY.get_sample_value("chat_policy_service_store_errors_total", labels)
    counted = rpcs(UNARY, "UNKNOWN")
    with pytest.raises(grpc.RpcError):
        probe.unary(b"abort:UNAVAILABLE")
    with pytest.raises(grpc.RpcError):
        probe.unary(b"raise")
    wait_for(lambda: rpcs(UNARY, "UNKNOWN") == counted + 1)
    assert REGISTRY.get_sample_value("chat_policy_service_store_errors_total", labels) == before


def test_a_call_to_an_unknown_method_is_counted_under_one_label(probe: Probe) -> None:
    """Calls to methods the server lacks count as method 'unknown', code UNIMPLEMENTED."""
    counted = rpcs("unknown", "UNIMPLEMENTED")
    for name in ("/nope.v1.X/A", "/nope.v1.Y/B"):
        with pytest.raises(grpc.RpcError) as raised:
            probe.channel.unary_unary(name)(b"", timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert rpcs("unknown", "UNIMPLEMENTED") == counted + 2
    assert rpcs("/nope.v1.X/A", "UNIMPLEMENTED") == 0


def test_handlers_of_concurrent_calls_each_see_their_own_request_id(probe: Probe) -> None:
    """Sixteen concurrent calls with distinct IDs each get back their own."""
    results: dict[str, bytes] = {}

    def call(request_id: str) -> None:
        results[request_id] = probe.unary(b"request_id", request_id=request_id)

    threads = [threading.Thread(target=call, args=(f"id-{n}",)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {f"id-{n}": f"id-{n}".encode() for n in range(16)}
