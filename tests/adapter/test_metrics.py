"""The adapter's metrics: the request middleware, auth refusals, fallbacks, the spool, /metrics."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from adapter.group_creation import COMMAND as BEFORE_CREATE
from adapter.group_state import GROUP_FULL, replay_to
from adapter.settings import OnPolicyError
from adapter.signature import compute_sign
from adapter.spool import Replayer
from chat_policy_shared.version import version
from chatpolicy.v1 import creation_policy_service_pb2 as cpb
from tests.adapter.chat import APP, Chat, FakePolicyClient, FakeRpcError, MakeChat
from tests.chat_samples import BEFORE_CREATE_SAMPLE, GROUP_FULL_SAMPLE

REQUESTS = "chat_policy_adapter_webhook_requests_total"
LATENCY_COUNT = "chat_policy_adapter_webhook_duration_seconds_count"
TOKEN = "xxxxyyyy"
REASONS = (
    "signature_missing",
    "request_time_malformed",
    "request_time_stale",
    "signature_mismatch",
    "unknown_sdkappid",
    "source_not_allowed",
    "unauthenticated",
)


def sample(name: str, **labels: str) -> float:
    """A sample of the default registry (the tests' single process), 0 if not there yet."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def requests(command: str, outcome: str) -> float:
    """How many requests were counted with this command and outcome label."""
    return sample(REQUESTS, command=command, outcome=outcome)


def scrape(chat: Chat) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics of the app: every sample by name and labels (checked to be 200 text)."""
    result = chat.client.simulate_get("/metrics")
    assert result.status_code == 200
    assert result.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(result.text)
        for s in family.samples
    }


def test_webhooks_are_counted_by_command_and_outcome(chat: Chat) -> None:
    """Allowed, refused and recorded webhooks each count once under their command and outcome."""
    before = (
        requests(BEFORE_CREATE, "allowed"),
        requests(BEFORE_CREATE, "refused"),
        requests(GROUP_FULL, "recorded"),
        sample(LATENCY_COUNT, command=BEFORE_CREATE),
    )
    chat.post(BEFORE_CREATE, BEFORE_CREATE_SAMPLE)
    chat.fake.creation = cpb.CheckGroupCreationResponse(
        decision=cpb.DECISION_DENY, error_code=10103, error_info="no"
    )
    chat.post(BEFORE_CREATE, BEFORE_CREATE_SAMPLE)
    chat.post(GROUP_FULL, GROUP_FULL_SAMPLE)
    after = (
        requests(BEFORE_CREATE, "allowed"),
        requests(BEFORE_CREATE, "refused"),
        requests(GROUP_FULL, "recorded"),
        sample(LATENCY_COUNT, command=BEFORE_CREATE),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1, 2]


def test_commands_the_adapter_does_not_handle_share_one_label(chat: Chat) -> None:
    """Any number of unknown commands count under 'other', never as labels of their own."""
    before = requests("other", "ignored")
    for n in range(5):
        result = chat.post(f"Group.CallbackInvented{n}", {})
        assert result.status_code == 200
    assert requests("other", "ignored") == before + 5
    commands = {
        s.labels["command"]
        for metric in REGISTRY.collect()
        if metric.name == "chat_policy_adapter_webhook_requests"
        for s in metric.samples
    }
    assert not {c for c in commands if c.startswith("Group.CallbackInvented")}


def test_a_request_without_a_command_counts_as_none(chat: Chat) -> None:
    """A webhook without CallbackCommand counts under command 'none' with its failure."""
    before = requests("none", "malformed_request")
    result = chat.client.simulate_post("/", params={"SdkAppid": str(APP)}, body=b"{}")
    assert result.status_code == 400
    assert requests("none", "malformed_request") == before + 1


def test_scrapes_and_probes_are_not_counted_as_webhooks(chat: Chat) -> None:
    """GET /metrics and the health probes leave the webhook counts alone."""
    total_before = _total_requests()
    scrape(chat)
    chat.client.simulate_get("/healthz")
    scrape(chat)
    assert _total_requests() == total_before


def _total_requests() -> float:
    return sum(
        s.value
        for metric in REGISTRY.collect()
        if metric.name == "chat_policy_adapter_webhook_requests"
        for s in metric.samples
        if s.name == REQUESTS
    )


@pytest.mark.parametrize(
    ("signed_with", "request_time", "sdk_app_id", "reason"),
    [
        (None, None, None, "signature_missing"),
        (TOKEN, "soon", None, "request_time_malformed"),
        (TOKEN, "1000", None, "request_time_stale"),
        ("other", "now", None, "signature_mismatch"),
        (TOKEN, "now", "1", "unknown_sdkappid"),
    ],
)
def test_auth_refusals_are_counted_by_reason(
    make_chat: MakeChat,
    signed_with: str | None,
    request_time: str | None,
    sdk_app_id: str | None,
    reason: str,
) -> None:
    """Each way a webhook fails authentication counts under its own reason, and only there."""
    chat = make_chat(callback_tokens=(TOKEN,))
    if request_time == "now":
        request_time = str(int(time.time()))
    query: dict[str, str] = {}
    if signed_with is not None and request_time is not None:
        query = {"Sign": compute_sign(signed_with, request_time), "RequestTime": request_time}
    if sdk_app_id is not None:
        query["SdkAppid"] = sdk_app_id
    before = {r: sample("chat_policy_adapter_auth_refusals_total", reason=r) for r in REASONS}
    result = chat.post(BEFORE_CREATE, BEFORE_CREATE_SAMPLE, **query)
    assert result.status_code in (401, 403)
    after = {r: sample("chat_policy_adapter_auth_refusals_total", reason=r) for r in REASONS}
    assert {r: after[r] - before[r] for r in REASONS if after[r] != before[r]} == {reason: 1}
    assert chat.fake.calls == []


def test_a_source_outside_the_allowed_ones_is_counted(make_chat: MakeChat) -> None:
    """A webhook from outside CHAT_POLICY_ALLOWED_SOURCES counts as source_not_allowed."""
    chat = make_chat(allowed_sources=(ipaddress.ip_network("10.0.0.0/8"),))
    before = sample("chat_policy_adapter_auth_refusals_total", reason="source_not_allowed")
    assert chat.post(GROUP_FULL, GROUP_FULL_SAMPLE, remote_addr="192.0.2.1").status_code == 403
    assert chat.post(GROUP_FULL, GROUP_FULL_SAMPLE, remote_addr="10.1.2.3").status_code == 200
    after = sample("chat_policy_adapter_auth_refusals_total", reason="source_not_allowed")
    assert after == before + 1


@pytest.mark.parametrize(
    ("on_error", "outcome"),
    [(OnPolicyError.ALLOW, "fail-open"), (OnPolicyError.DENY, "fail-closed")],
)
def test_undecided_creations_are_counted_by_fallback_and_cause(
    make_chat: MakeChat, on_error: OnPolicyError, outcome: str
) -> None:
    """A creation the policy service cannot decide counts as fail-open or fail-closed, by cause."""
    fake = FakePolicyClient(error=FakeRpcError(grpc.StatusCode.UNAVAILABLE))
    chat = make_chat(fake, on_policy_error=on_error)
    labels = {"outcome": outcome, "cause": "policy_unavailable"}
    before = sample("chat_policy_adapter_creation_fallbacks_total", **labels)
    chat.post(BEFORE_CREATE, BEFORE_CREATE_SAMPLE)
    fake.error = FakeRpcError(grpc.StatusCode.INTERNAL)
    chat.post(BEFORE_CREATE, BEFORE_CREATE_SAMPLE)
    assert sample("chat_policy_adapter_creation_fallbacks_total", **labels) == before + 1
    failed = {"outcome": outcome, "cause": "policy_failed"}
    assert sample("chat_policy_adapter_creation_fallbacks_total", **failed) >= 1
    assert requests(BEFORE_CREATE, outcome) >= 2


def test_spooled_replayed_and_set_aside_events_are_counted(
    make_chat: MakeChat, tmp_path: Path
) -> None:
    """Events spooled while the service is away count, then each replay or setting aside;
    a replay that fails for now counts as neither. The set-aside gauge counts those kept."""
    fake = FakePolicyClient(error=FakeRpcError(grpc.StatusCode.UNAVAILABLE))
    chat = make_chat(fake)
    now_s = [1_700_000_000.0]
    replayer = Replayer(
        chat.spool,
        lambda event: asyncio.run(replay_to(fake)(event)),
        lambda: False,
        tmp_path / "replay.lock",
        clock=lambda: now_s[0],
    )

    def counts() -> list[float]:
        return [
            sample(f"chat_policy_adapter_{name}_events_total", method="RecordGroupFull")
            for name in ("spooled", "replayed", "set_aside")
        ]

    def depth() -> float:
        return scrape(chat)[("chat_policy_adapter_spool_depth", frozenset())]

    def set_aside_now() -> float:
        return scrape(chat)[("chat_policy_adapter_spool_set_aside", frozenset())]

    def spool(*groups: str) -> None:
        fake.error = FakeRpcError(grpc.StatusCode.UNAVAILABLE)
        for group in groups:
            assert chat.post(GROUP_FULL, {**GROUP_FULL_SAMPLE, "GroupId": group}).status_code == 200

    start = counts()
    spool("a", "b", "c")
    assert depth() == 3
    fake.error = None
    assert replayer.run_once() == 3
    assert depth() == 0
    spool("d", "e")
    assert replayer.run_once() == 0  # still unavailable: retried later, not counted
    assert depth() == 2
    assert set_aside_now() == 0
    fake.error = FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad group")
    now_s[0] += 60  # both are due again
    replayer.run_once()
    replayer.stop()
    assert depth() == 0
    assert set_aside_now() == 2
    assert [b - a for a, b in zip(start, counts(), strict=True)] == [5, 3, 2]
    chat.spool.drop()
    assert set_aside_now() == 0


def test_metrics_are_served_beside_a_webhook_at_the_root(chat: Chat) -> None:
    """With the webhook at '/', GET /metrics still answers the metrics, and webhooks still work."""
    assert chat.path == "/"
    chat.post(BEFORE_CREATE, BEFORE_CREATE_SAMPLE)
    samples = scrape(chat)
    allowed = frozenset({"command": BEFORE_CREATE, "outcome": "allowed"}.items())
    assert samples[(REQUESTS, allowed)] >= 1
    assert chat.post(BEFORE_CREATE, BEFORE_CREATE_SAMPLE).status_code == 200


def test_metrics_are_served_beside_a_webhook_at_its_own_path(make_chat: MakeChat) -> None:
    """With CHAT_POLICY_WEBHOOK_PATH set, /metrics is served too and / is no webhook."""
    chat = make_chat(webhook_path="/chat/callback")
    assert chat.post(BEFORE_CREATE, BEFORE_CREATE_SAMPLE).status_code == 200
    assert ("chat_policy_adapter_spool_depth", frozenset()) in scrape(chat)
    assert chat.client.simulate_post("/", body=b"{}").status_code == 404


def test_metrics_say_which_version_runs(chat: Chat) -> None:
    """/metrics carries chat_policy_build_info of the adapter, with chat-policy's version."""
    info = frozenset({"component": "adapter", "version": version()}.items())
    assert scrape(chat)[("chat_policy_build_info", info)] == 1
