"""DecisionRecorder: decisions are stored off the request path, in batches, and none is lost
to a store that fails for a while."""

from __future__ import annotations

import logging
import threading
import time
from asyncio import run
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from policy_service.engine.decision_log import DecisionQuery, DecisionRecord
from policy_service.engine.decision_recorder import DecisionRecorder
from policy_service.engine.policy import CreationRequest
from policy_service.engine.policy_file import parse_policy
from policy_service.errors import StoreUnavailable
from policy_service.stores.store import open_store
from tests.event_loops import LoopThread, blocking_open
from tests.policy_service.stores import open_fresh
from tests.postgres import PostgresSchema
from tests.waiting import wait_for

POLICY = parse_policy(b"version = 1\n", "p.toml")


class RecordingLog:
    """The recorder's store seam: keeps each append, failing the first `failures` of them."""

    def __init__(self, failures: int = 0) -> None:
        self.appends: list[list[DecisionRecord]] = []
        self.failures = failures
        self.lock = threading.Lock()

    async def append_decisions(self, records: Sequence[DecisionRecord]) -> None:
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise StoreUnavailable("down for a moment")
            self.appends.append(list(records))

    def stored(self) -> list[str]:
        with self.lock:
            return [record.operator_account for batch in self.appends for record in batch]


class Driven:
    """A DecisionRecorder run on the test's event loop, driven from the test's thread."""

    def __init__(self, loop: LoopThread, recorder: DecisionRecorder) -> None:
        self.loop = loop
        self.recorder = recorder

    def start(self) -> None:
        async def start() -> None:
            self.recorder.start()

        self.loop.run(start())

    def record(self, *decided: object) -> None:
        # In order, as the servicer's calls on the loop would queue them.
        self.loop.loop.call_soon_threadsafe(self.recorder.record, *decided)

    def stop(self) -> None:
        self.loop.run(self.recorder.stop())


def decide(recorder: Driven, operator: str, latency_us: int = 7) -> str:
    """Decide a creation by `operator` with the default policy and queue its record; its
    decision ID."""
    request = CreationRequest(1400000000, operator_account=operator)
    decision = run(POLICY.decide(request, now_ms=1))
    recorder.record(request, decision, 1, latency_us, "ops-console")
    return decision.decision_id


def test_decisions_arriving_together_are_stored_in_one_append(
    event_loop_thread: LoopThread,
) -> None:
    """Decisions a few milliseconds apart, within the linger time, go to the store in one
    batch, in order."""
    log = RecordingLog()
    recorder = Driven(event_loop_thread, DecisionRecorder(log, linger_s=0.5))
    recorder.start()
    for index in range(10):
        decide(recorder, f"op{index}")
        time.sleep(0.005)
    wait_for(lambda: len(log.stored()) == 10)
    recorder.stop()
    assert len(log.appends) == 1
    assert log.stored() == [f"op{index}" for index in range(10)]


def test_a_record_keeps_the_request_as_json(event_loop_thread: LoopThread) -> None:
    """The stored record carries the request's fields as a JSON object, the decision and
    its caller."""
    log = RecordingLog()
    recorder = Driven(event_loop_thread, DecisionRecorder(log, linger_s=0))
    recorder.start()
    decide(recorder, "alice")
    wait_for(lambda: log.stored() == ["alice"])
    recorder.stop()
    (record,) = log.appends[0]
    assert record.effect == "allow" and record.latency_us == 7
    assert record.caller == "ops-console"
    assert '"operator_account":"alice"' in record.request_json


def test_records_wait_out_a_store_outage(event_loop_thread: LoopThread) -> None:
    """While the store fails, the batch is retried; then every record is stored once."""
    log = RecordingLog(failures=2)
    recorder = Driven(event_loop_thread, DecisionRecorder(log, retry_s=0.05, linger_s=0))
    recorder.start()
    for operator in ("a", "b", "c"):
        decide(recorder, operator)
    wait_for(lambda: len(log.stored()) == 3)
    recorder.stop()
    assert sorted(log.stored()) == ["a", "b", "c"]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh, empty store of each kind, closed after the test."""
    opened = open_fresh(request.param, request, tmp_path)
    yield opened
    opened.close()


def stored(store: Any) -> dict[str, DecisionRecord]:
    """The records in the store by decision ID."""
    return {r.decision_id: r for r in store.list_decisions(DecisionQuery(), 1000, None)}


def unstorable(outcome: str) -> float:
    """chat_policy_service_unstorable_decision_records_total for `outcome`, so far."""
    value = REGISTRY.get_sample_value(
        "chat_policy_service_unstorable_decision_records_total", {"outcome": outcome}
    )
    return value or 0.0


def test_a_record_no_store_can_keep_is_set_aside_and_the_rest_of_its_batch_stored(
    event_loop_thread: LoopThread, store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch holding a record whose latency does not fit 64 bits: the others are stored,
    that one is set aside, counted and logged once with its decision ID, and later decisions
    are stored too."""
    recorder = Driven(event_loop_thread, DecisionRecorder(store.target, retry_s=0.05, linger_s=0))
    before = unstorable("set_aside")
    good = [decide(recorder, f"op{n}") for n in range(3)]
    bad = decide(recorder, "odd", latency_us=2**63)
    good += [decide(recorder, f"op{n}") for n in range(3, 6)]
    recorder.start()
    wait_for(lambda: set(good) <= stored(store).keys())
    later = decide(recorder, "later")
    wait_for(lambda: later in stored(store))
    recorder.stop()
    assert bad not in stored(store)
    assert unstorable("set_aside") == before + 1
    set_aside = [r for r in caplog.records if bad in r.getMessage()]
    assert len(set_aside) == 1 and set_aside[0].levelno == logging.ERROR
    assert "set aside" in set_aside[0].getMessage()


def test_records_postgresql_refuses_are_stored_altered_and_marked(
    event_loop_thread: LoopThread,
    postgres_schema: PostgresSchema,
) -> None:
    """PostgreSQL refuses text with NUL and an index entry of 10 KB; such records in a batch
    are stored with NUL replaced and the operator cut to 256 bytes, marked in their reason,
    and every other record of the batch is stored as it was."""
    store = blocking_open(event_loop_thread, open_store, postgres_schema.url)
    try:
        recorder = Driven(
            event_loop_thread, DecisionRecorder(store.target, retry_s=0.05, linger_s=0)
        )
        before = unstorable("altered")
        long_operator = "".join(chr(0x4E00 + n % 20000) for n in range(3400))  # 10,200 bytes
        ids = {
            "plain": decide(recorder, "alice"),
            "nul": decide(recorder, "ali\x00ce"),
            "long": decide(recorder, long_operator),
            "after": decide(recorder, "bob"),
        }
        recorder.start()
        wait_for(lambda: set(ids.values()) <= stored(store).keys())
        recorder.stop()
        records = stored(store)
        assert records[ids["plain"]].operator_account == "alice"
        assert records[ids["after"]].reason == records[ids["plain"]].reason
        nul = records[ids["nul"]]
        assert nul.operator_account == "ali\ufffdce"
        assert nul.reason.endswith(
            " [record altered to be stored: NUL replaced in operator_account]"
        )
        cut = records[ids["long"]]
        assert long_operator.startswith(cut.operator_account)
        assert len(cut.operator_account.encode()) == 255  # 85 characters of 3 bytes
        assert cut.reason.endswith(
            " [record altered to be stored: operator_account cut to 256 bytes]"
        )
        assert unstorable("altered") == before + 2
    finally:
        store.close()
