"""Retention of decisions, audit events and rate-limit slots: what a pass deletes and logs,
its settings, and the service's own pruner (destroyed groups and the change log:
test_watch.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policy_service.audit.audit_log import AuditEvent, AuditQuery
from policy_service.clock import now_ms
from policy_service.engine.decision_log import DecisionQuery, DecisionRecord
from policy_service.settings import ServiceSettings, SettingsError
from policy_service.stores.retention import RetentionPruner
from tests.event_loops import Blocking
from tests.policy_service.servers import APP, Serve
from tests.policy_service.stores import open_fresh
from tests.waiting import wait_for

HOUR_S = 3600.0


def decision(decision_id: str, decided_at_ms: int) -> DecisionRecord:
    """An allowed decision of APP made at decided_at_ms."""
    return DecisionRecord(
        decision_id=decision_id,
        decided_at_ms=decided_at_ms,
        sdk_app_id=APP,
        operator_account="alice",
        effect="allow",
        error_code=0,
        error_info="",
        rule_id="default",
        reason="",
        policy_revision="rev-1",
        shadow_rule_ids=(),
        latency_us=1,
        request_json="{}",
    )


def decision_ids(store: Any) -> list[str]:
    """The stored decisions' IDs, newest first."""
    return [record.decision_id for record in store.list_decisions(DecisionQuery(), 100, None)]


def audit_event(audit_id: str, occurred_at_ms: int) -> AuditEvent:
    """A clear of a group of APP by ops, at occurred_at_ms."""
    return AuditEvent(
        audit_id=audit_id,
        occurred_at_ms=occurred_at_ms,
        caller="ops",
        action="/chatpolicy.v1.GroupStateService/ClearGroupFull",
        sdk_app_id=APP,
        group_id="@TGS#2J4SZEAEL",
        topic_id="",
        reason="cap raised",
        result="OK",
        detail="applied",
        request_id="r-1",
        replica="host:1",
    )


def audit_ids(store: Any) -> list[str]:
    """The stored audit events' IDs, newest first."""
    return [event.audit_id for event in store.list_audit_events(AuditQuery(), 100, None)]


def slots_of(store: Any, bucket: str) -> int:
    """How many slots the bucket holds, whatever their age (limit 0: taking none)."""
    return store.acquire(bucket, window_ms=10**12, limit=0, now_ms=now_ms()).count_before


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh SQLite store on the test's loop (a Blocking view), closed after the test."""
    opened = open_fresh("sqlite", request, tmp_path)
    yield opened
    opened.close()


def pruner_of(store: Any, **settings: Any) -> Any:
    """A RetentionPruner of the store, on the store's loop; a Blocking view of it."""
    return Blocking(RetentionPruner(store.target, **settings), store._loop)


def test_pass_deletes_old_decisions_and_slots_and_logs_the_counts(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A pass deletes decisions and slots older than their retentions, keeps newer ones, logs."""
    now = now_ms()
    store.append_decisions([decision("old", now - 60_000), decision("new", now - 5_000)])
    store.append_audit_events([audit_event("old", now - 25_000), audit_event("new", now - 15_000)])
    store.acquire("b", window_ms=1, limit=1, now_ms=now - 30_000)
    store.acquire("b", window_ms=1, limit=1, now_ms=now - 1_000)
    pruner = pruner_of(
        store,
        destroyed_retention_s=HOUR_S,
        change_log_retention_s=HOUR_S,
        decision_retention_s=30,
        audit_retention_s=20,
        rate_slot_retention_ms=lambda: 10_000,
        interval_s=60,
    )
    with caplog.at_level(logging.INFO, logger="policy_service.stores.retention"):
        pruner.prune_once()
    assert decision_ids(store) == ["new"]
    assert audit_ids(store) == ["new"]
    assert slots_of(store, "b") == 1
    assert caplog.messages == [
        "retention forgot 0 destroyed group states and deleted 0 changes,"
        " 1 decisions, 1 audit events and 1 rate-limit slots"
    ]


def test_pass_with_nothing_to_delete_logs_nothing(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A pass that finds nothing old enough deletes nothing and logs nothing."""
    now = now_ms()
    store.append_decisions([decision("new", now - 5_000)])
    store.acquire("b", window_ms=1, limit=1, now_ms=now - 1_000)
    pruner = pruner_of(
        store,
        destroyed_retention_s=HOUR_S,
        change_log_retention_s=HOUR_S,
        decision_retention_s=HOUR_S,
        audit_retention_s=HOUR_S,
        rate_slot_retention_ms=lambda: 60_000,
        interval_s=60,
    )
    with caplog.at_level(logging.INFO, logger="policy_service.stores.retention"):
        pruner.prune_once()
    assert (decision_ids(store), slots_of(store, "b")) == (["new"], 1)
    assert caplog.messages == []


def test_slot_retention_is_asked_at_every_pass(store: Any) -> None:
    """A slot kept under a long slot retention goes at the first pass after it shortens."""
    retention_ms = [60_000]
    store.acquire("b", window_ms=1, limit=1, now_ms=now_ms() - 5_000)
    pruner = pruner_of(
        store,
        destroyed_retention_s=HOUR_S,
        change_log_retention_s=HOUR_S,
        decision_retention_s=HOUR_S,
        audit_retention_s=HOUR_S,
        rate_slot_retention_ms=lambda: retention_ms[0],
        interval_s=60,
    )
    pruner.prune_once()
    assert slots_of(store, "b") == 1
    retention_ms[0] = 1_000
    pruner.prune_once()
    assert slots_of(store, "b") == 0


def test_service_prunes_old_decisions_through_its_pruner(serve: Serve) -> None:
    """With a short decision retention the service itself deletes an old decision, not a new one."""
    server = serve(decision_retention_s=0.4)
    now = now_ms()
    server.store.append_decisions([decision("old", now - 1_000), decision("kept", now + 60_000)])
    deadline = time.monotonic() + 5
    while decision_ids(server.store) != ["kept"]:
        assert time.monotonic() < deadline, f"still stored: {decision_ids(server.store)}"
        time.sleep(0.05)


def test_service_prunes_old_audit_events_through_its_pruner(serve: Serve) -> None:
    """With a short audit retention the service itself deletes an old audit event, not a new one."""
    server = serve(audit_retention_s=0.4)
    now = now_ms()
    server.store.append_audit_events(
        [audit_event("old", now - 1_000), audit_event("kept", now + 60_000)]
    )
    wait_for(lambda: audit_ids(server.store) == ["kept"], what="the old audit event to go")


def test_audit_retention_setting_is_read_and_must_be_positive() -> None:
    """CHAT_POLICY_AUDIT_RETENTION_S sets the retention (default 90 days) and the pruning pace."""
    assert ServiceSettings().audit_retention_s == 90 * 86400
    settings = ServiceSettings.from_env({"CHAT_POLICY_AUDIT_RETENTION_S": "4"})
    assert settings.audit_retention_s == 4.0
    assert settings.prune_interval_s == 1.0
    for value in ("0", "-5", "a quarter"):
        with pytest.raises(SettingsError, match="CHAT_POLICY_AUDIT_RETENTION_S"):
            ServiceSettings.from_env({"CHAT_POLICY_AUDIT_RETENTION_S": value})


def test_decision_retention_setting_is_read_and_must_be_positive() -> None:
    """CHAT_POLICY_DECISION_RETENTION_S sets the retention (default 7 days) and the pruning pace."""
    assert ServiceSettings().decision_retention_s == 7 * 86400
    settings = ServiceSettings.from_env({"CHAT_POLICY_DECISION_RETENTION_S": "8"})
    assert settings.decision_retention_s == 8.0
    assert settings.prune_interval_s == 2.0
    for value in ("0", "-5", "a week"):
        with pytest.raises(SettingsError, match="CHAT_POLICY_DECISION_RETENTION_S"):
            ServiceSettings.from_env({"CHAT_POLICY_DECISION_RETENTION_S": value})
