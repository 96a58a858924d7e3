"""DecisionRecorder: decisions are stored off the request path, in batches, and none is lost
to a store that fails for a while."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from policy_service.decision_log import DecisionRecord
from policy_service.decision_recorder import DecisionRecorder
from policy_service.errors import StoreUnavailable
from policy_service.policy import CreationRequest
from policy_service.policy_file import parse_policy

POLICY = parse_policy(b"version = 1\n", "p.toml")


class RecordingLog:
    """The recorder's store seam: keeps each append, failing the first `failures` of them."""

    def __init__(self, failures: int = 0) -> None:
        self.appends: list[list[DecisionRecord]] = []
        self.failures = failures
        self.lock = threading.Lock()

    def append_decisions(self, records: Sequence[DecisionRecord]) -> None:
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise StoreUnavailable("down for a moment")
            self.appends.append(list(records))

    def stored(self) -> list[str]:
        with self.lock:
            return [record.operator_account for batch in self.appends for record in batch]


def decide(recorder: DecisionRecorder, operator: str) -> None:
    """Decide a creation by `operator` with the default policy and queue its record."""
    request = CreationRequest(1400000000, operator_account=operator)
    recorder.record(request, POLICY.decide(request, now_ms=1), 1, 7)


def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until condition() holds; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_decisions_arriving_together_are_stored_in_one_append() -> None:
    """Decisions a few milliseconds apart, within the linger time, go to the store in one
    batch, in order."""
    log = RecordingLog()
    recorder = DecisionRecorder(log, linger_s=0.5)
    recorder.start()
    for index in range(10):
        decide(recorder, f"op{index}")
        time.sleep(0.005)
    eventually(lambda: len(log.stored()) == 10)
    recorder.stop()
    assert len(log.appends) == 1
    assert log.stored() == [f"op{index}" for index in range(10)]


def test_a_record_keeps_the_request_as_json() -> None:
    """The stored record carries the request's fields as a JSON object and the decision."""
    log = RecordingLog()
    recorder = DecisionRecorder(log, linger_s=0)
    recorder.start()
    decide(recorder, "alice")
    eventually(lambda: log.stored() == ["alice"])
    recorder.stop()
    (record,) = log.appends[0]
    assert record.effect == "allow" and record.latency_us == 7
    assert '"operator_account":"alice"' in record.request_json


def test_records_wait_out_a_store_outage() -> None:
    """While the store fails, the batch is retried; then every record is stored once."""
    log = RecordingLog(failures=2)
    recorder = DecisionRecorder(log, retry_s=0.05, linger_s=0)
    recorder.start()
    for operator in ("a", "b", "c"):
        decide(recorder, operator)
    eventually(lambda: len(log.stored()) == 3)
    recorder.stop()
    assert sorted(log.stored()) == ["a", "b", "c"]
