"""The policy service's Prometheus metrics: decisions, group gauges, store errors, /metrics."""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chat_policy_shared.version import version
from chatpolicy.v1 import creation_policy_service_pb2 as cpb
from chatpolicy.v1 import group_state_service_pb2 as pb
from chatpolicy.v1 import group_state_service_pb2_grpc
from policy_service import server as server_module
from policy_service.api.metrics import service_registry
from policy_service.engine.policy_file import load_policy, parse_policy
from policy_service.engine.policy_reload import PolicyHolder
from policy_service.errors import StoreUnavailable, ValueNotStorable
from policy_service.server import BindError, PolicyService
from policy_service.settings import ServiceSettings
from policy_service.stores.store import open_store
from tests.event_loops import LoopThread
from tests.policy_service.servers import (
    APP,
    BrokenStore,
    Serve,
    StoreSpec,
    error_info,
    full_event,
)

POLICY = b"""version = 1
[[rules]]
id = "names"
kind = "name"
banned_words = ["casino"]
error_code = 10103
error_info = "Choose another name."

[[rules]]
id = "shadow-short-names"
shadow = true
effect = "deny"
when = "size(name) < 3"

[[rules]]
id = "rate"
kind = "rate_limit"
limit = 100
window = "1h"
error_code = 10107
error_info = "Too fast."
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a text exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(name: str, **labels: str) -> float:
    """A sample of this process's default registry, 0 when it does not exist yet."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(port: int) -> tuple[str, Samples]:
    """GET /metrics on the port: its Content-Type and its samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return response.headers["Content-Type"], parse(response.read().decode())


Start = Callable[..., PolicyService]


@pytest.fixture
def start(serve: Serve) -> Start:
    """Start PolicyServices serving metrics on free ports (SQLite in tmp_path unless a store
    is given), each on a loop of its own; the serve fixture stops them after the test."""

    def make(store: StoreSpec | None = None, **settings: str) -> PolicyService:
        server = serve(store=store, serve_metrics=True, metrics_bind="127.0.0.1:0", **settings)
        return server.service

    return make


def test_decisions_are_counted_by_rule_and_effect(serve: Serve) -> None:
    """Each decision counts under its deciding rule and effect; shadow rules count their hits."""
    server = serve(policy=parse_policy(POLICY))
    before = (
        sample("chat_policy_service_decisions_total", rule="names", effect="deny"),
        sample("chat_policy_service_decisions_total", rule="default", effect="allow"),
        sample("chat_policy_service_shadow_hits_total", rule="shadow-short-names"),
    )
    for name in ("casino night", "ok", "a fine group"):
        server.creation.CheckGroupCreation(
            cpb.CheckGroupCreationRequest(sdk_app_id=APP, operator_account="a", name=name),
            timeout=5,
        )
    after = (
        sample("chat_policy_service_decisions_total", rule="names", effect="deny"),
        sample("chat_policy_service_decisions_total", rule="default", effect="allow"),
        sample("chat_policy_service_shadow_hits_total", rule="shadow-short-names"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 2, 1]


def test_a_rule_that_cannot_be_evaluated_is_counted(serve: Serve) -> None:
    """A rate-limit rule skipped because the store is down counts as an error of that rule."""
    server = serve(store=BrokenStore(StoreUnavailable("down")), policy=parse_policy(POLICY))
    before = sample("chat_policy_service_rule_errors_total", rule="rate")
    response = server.creation.CheckGroupCreation(
        cpb.CheckGroupCreationRequest(sdk_app_id=APP, operator_account="a", name="group"),
        timeout=5,
    )
    assert list(response.error_rule_ids) == ["rate"]
    assert sample("chat_policy_service_rule_errors_total", rule="rate") == before + 1


def test_metrics_endpoint_serves_group_gauges_and_rpc_counts(start: Start) -> None:
    """GET /metrics gives the store's group counts as they are now, and the RPCs served."""
    service = start()
    assert service.metrics_port
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        groups = group_state_service_pb2_grpc.GroupStateServiceStub(channel)
        for group in ("a", "b", "c"):
            groups.RecordGroupFull(full_event(group, 1_670_574_414_000), timeout=5)
        exit_c = pb.RecordMemberExitRequest(sdk_app_id=APP, group_id="c")
        exit_c.event_time.FromMilliseconds(1_670_574_415_000)
        groups.RecordMemberExit(exit_c, timeout=5)

    content_type, samples = scrape(service.metrics_port)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert samples[("chat_policy_service_groups_tracked", frozenset())] == 3
    assert samples[("chat_policy_service_groups_full", frozenset())] == 2
    assert samples[("chat_policy_service_groups_destroyed", frozenset())] == 0
    recorded = frozenset(
        {"method": "/chatpolicy.v1.GroupStateService/RecordGroupFull", "code": "OK"}.items()
    )
    assert samples[("chat_policy_service_rpcs_total", recorded)] >= 3
    assert ("chat_policy_service_policy_last_reload_success", frozenset()) in samples


def test_a_failing_store_leaves_the_scrape_working_and_counts_an_error(start: Start) -> None:
    """With the store down, /metrics still answers, without group gauges, and counts the error."""
    service = start(store=BrokenStore(StoreUnavailable("down")))
    assert service.metrics_port
    before = sample("chat_policy_service_store_errors_total", operation="count_groups")
    _, samples = scrape(service.metrics_port)
    names = {name for name, _ in samples}
    assert not {n for n in names if n.startswith("chat_policy_service_groups_")}
    assert "chat_policy_service_policy_info" in names
    errors = (
        "chat_policy_service_store_errors_total",
        frozenset({"operation": "count_groups"}.items()),
    )
    assert samples[errors] == before + 1


def test_an_rpc_failed_by_the_store_counts_a_store_error(serve: Serve) -> None:
    """GetGroupState on a store that is down counts one store error for GetGroupState."""
    server = serve(store=BrokenStore(StoreUnavailable("down")))
    before = sample("chat_policy_service_store_errors_total", operation="GetGroupState")
    with pytest.raises(grpc.RpcError) as raised:
        server.groups.GetGroupState(
            pb.GetGroupStateRequest(sdk_app_id=APP, group_id="g"), timeout=5
        )
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert sample("chat_policy_service_store_errors_total", operation="GetGroupState") == before + 1


def test_a_value_the_store_refuses_is_invalid_argument_and_no_store_error(serve: Serve) -> None:
    """RecordGroupFull on a store that refuses a value answers INVALID_ARGUMENT with
    ERROR_REASON_VALUE_NOT_STORABLE (not retried by the adapter), and counts no store error."""
    server = serve(store=BrokenStore(ValueNotStorable("PostgreSQL cannot store a value: x")))
    before = sample("chat_policy_service_store_errors_total", operation="RecordGroupFull")
    with pytest.raises(grpc.RpcError) as raised:
        server.groups.RecordGroupFull(full_event("@TGS#1", 1000), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "PostgreSQL cannot store a value: x"
    assert error_info(raised.value).reason == "ERROR_REASON_VALUE_NOT_STORABLE"
    assert sample("chat_policy_service_store_errors_total", operation="RecordGroupFull") == before


def test_the_reload_status_follows_the_policy_file(tmp_path: Path) -> None:
    """A refused reload turns chat_policy_service_policy_last_reload_success to 0, a good one
    back to 1; the info gauge names the running revision."""
    path = tmp_path / "policy.toml"
    path.write_bytes(POLICY)
    holder = PolicyHolder(path, load_policy(path))
    registry = service_registry(BrokenStore(StoreUnavailable("down")), holder)

    def gauges() -> Samples:
        return parse(generate_latest(registry).decode())

    assert gauges()[("chat_policy_service_policy_last_reload_success", frozenset())] == 1
    path.write_text("this is not TOML [")
    assert not holder.reload()
    assert gauges()[("chat_policy_service_policy_last_reload_success", frozenset())] == 0
    info = frozenset({"revision": holder.policy.revision, "source": str(path)}.items())
    assert gauges()[("chat_policy_service_policy_info", info)] == 1
    path.write_bytes(POLICY)
    assert holder.reload()
    assert gauges()[("chat_policy_service_policy_last_reload_success", frozenset())] == 1


def test_the_service_serves_its_build_info_and_process_metrics() -> None:
    """/metrics says what runs (chat_policy_build_info, component service) and how the process
    fares: its CPU, memory, file descriptors and start time, unlabelled (one process)."""
    holder = PolicyHolder(None, load_policy(None))
    registry = service_registry(BrokenStore(StoreUnavailable("down")), holder)
    samples = parse(generate_latest(registry).decode())
    info = frozenset({"component": "service", "version": version()}.items())
    assert samples[("chat_policy_build_info", info)] == 1
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ):
        assert samples[(name, frozenset())] > 0


def test_a_taken_metrics_port_is_a_bind_error(
    tmp_path: Path, event_loop_thread: LoopThread
) -> None:
    """Another listener on the metrics port makes the service refuse to start, naming the
    variable."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = ServiceSettings(grpc_bind="127.0.0.1:0", metrics_bind=f"127.0.0.1:{port}")

        async def build() -> None:
            store = await open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
            try:
                with pytest.raises(BindError, match=f"CHAT_POLICY_METRICS_BIND='127.0.0.1:{port}'"):
                    PolicyService(
                        settings, store, PolicyHolder(None, load_policy(None)), serve_metrics=True
                    )
            finally:
                await store.close()

        event_loop_thread.run(build())


def test_main_exits_2_when_the_metrics_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`chat-policy service` exits 2 with one line naming CHAT_POLICY_METRICS_BIND."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("CHAT_POLICY_GRPC_BIND", "127.0.0.1:0")
        monkeypatch.setenv("CHAT_POLICY_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("CHAT_POLICY_METRICS_BIND", f"127.0.0.1:{port}")
        with caplog.at_level(logging.ERROR):
            assert server_module.main() == 2
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "CHAT_POLICY_METRICS_BIND" in line


def test_stopping_the_service_releases_the_metrics_port(serve: Serve) -> None:
    """After stop, nothing listens on the metrics port any more."""
    server = serve(serve_metrics=True, metrics_bind="127.0.0.1:0")
    port = server.service.metrics_port
    assert port
    scrape(port)
    server.stop_service(None)
    with socket.socket() as again:
        # As a restarted service would: a scrape's connection may linger in TIME_WAIT, but
        # no listener may be left.
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()


def test_the_metrics_bind_comes_from_the_environment() -> None:
    """CHAT_POLICY_METRICS_BIND sets the address; unset or empty keeps 127.0.0.1:9464."""
    assert ServiceSettings.from_env({}).metrics_bind == "127.0.0.1:9464"
    assert ServiceSettings.from_env({"CHAT_POLICY_METRICS_BIND": ""}).metrics_bind == (
        "127.0.0.1:9464"
    )
    given = {"CHAT_POLICY_METRICS_BIND": "0.0.0.0:9100"}
    assert ServiceSettings.from_env(given).metrics_bind == "0.0.0.0:9100"
