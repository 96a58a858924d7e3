"""Writes decision records to the store in batches, off the request path.

A decision never waits for its record: decisions queue in memory and a task on the service's
event loop turns them into records and appends them in one transaction per batch, the
decisions of linger_s (20 ms) after the first one together. The record is for operators, not
for deciding, so it is best effort: while the store is unreachable the task retries and the
queue holds up to max_queued decisions; beyond that, and at a crash, records are lost, counted
and logged.

One odd record never holds up the others. A batch the store refuses for a value
(ValueNotStorable: the same batch would fail again, forever) is split in halves, each stored
or split again, until the records it refuses are alone; each of those is stored altered (NUL
replaced, the text of indexed columns cut, the alteration said in its reason) or, if the store
refuses even that, set aside. Both are counted and logged with the decision's ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
from prometheus_client import Counter

from chat_policy_shared.field_limits import MAX_ACCOUNT_BYTES, MAX_ID_BYTES, MAX_SHORT_TEXT_BYTES
from policy_service.background import cancel_task
from policy_service.engine.decision_log import DecisionRecord
from policy_service.engine.policy import CreationRequest, Decision
from policy_service.errors import StoreUnavailable, ValueNotStorable

log = logging.getLogger(__name__)

UNSTORABLE_DECISION_RECORDS = Counter(
    "chat_policy_service_unstorable_decision_records_total",
    "Decision records the store refused as they stood (ValueNotStorable), by what became of"
    " each: 'altered' (stored with NUL replaced and long text cut, marked in its reason) or"
    " 'set_aside' (not stored: refused even so).",
    ["outcome"],
)

# A decision waiting for its record: the request, the decision, its time, latency and caller.
_Decided = tuple[CreationRequest, Decision, int, int, str]

# The text columns a store indexes, and the bytes of UTF-8 an altered record keeps of each:
# an index entry has a size limit (PostgreSQL's is about 2.7 KB).
_INDEXED_TEXT_BYTES = {
    "decision_id": MAX_ID_BYTES,
    "operator_account": MAX_ACCOUNT_BYTES,
    "effect": MAX_SHORT_TEXT_BYTES,
    "rule_id": MAX_SHORT_TEXT_BYTES,
}
# The text columns that hold text as given (the others hold JSON, which escapes NUL).
_PLAIN_TEXT_FIELDS = (*_INDEXED_TEXT_BYTES, "error_info", "reason", "policy_revision")


class DecisionAppender(Protocol):
    """What the recorder needs of the store (DecisionLog's append)."""

    async def append_decisions(self, records: Sequence[DecisionRecord]) -> None:
        """Store the records (StoreUnavailable while the store is unreachable, ValueNotStorable
        when it refuses a value of one of them)."""
        ...


class DecisionRecorder:
    """A bounded queue of decision records and the task that stores them.

    Built anywhere; start(), record() and stop() are called on the event loop the store
    belongs to (record() from the servicer's coroutine, so nothing crosses threads).
    """

    def __init__(
        self,
        store: DecisionAppender,
        *,
        max_queued: int = 10_000,
        batch_size: int = 500,
        retry_s: float = 1.0,
        linger_s: float = 0.02,
    ) -> None:
        self._store = store
        self._queue: deque[_Decided] = deque()
        self._max_queued = max_queued
        self._batch_size = batch_size
        self._retry_s = retry_s
        self._linger_s = linger_s
        self._queued = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        """Start storing queued records (a task on the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="decision-recorder")

    def record(
        self,
        request: CreationRequest,
        decision: Decision,
        decided_at_ms: int,
        latency_us: int,
        caller: str,
    ) -> None:
        """Queue a decision's record (caller: who asked); never blocks (a full queue drops
        it, counted)."""
        if len(self._queue) >= self._max_queued:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("decision record queue full: %d records dropped so far", self.dropped)
            return
        self._queue.append((request, decision, decided_at_ms, latency_us, caller))
        self._queued.set()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Store what is queued (trying for up to timeout_s), then stop."""
        self._stopping.set()
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout_s)
            await cancel_task(task)
        left = len(self._queue)
        if left:
            log.warning("stopped with %d decision records not stored", left)

    async def _pause(self, seconds: float) -> bool:
        """Wait `seconds`, or less if stop is asked; whether it was."""
        if not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def _run(self) -> None:
        batch: list[DecisionRecord] = []
        while True:
            if not batch:
                if not self._queue:
                    if self._stopping.is_set():
                        return
                    self._queued.clear()
                    waits = {
                        asyncio.ensure_future(self._queued.wait()),
                        asyncio.ensure_future(self._stopping.wait()),
                    }
                    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    for waiting in pending:
                        waiting.cancel()
                    continue
                batch.append(record_of(*self._queue.popleft()))
                # Let the decisions of the next moments join this one: one wake-up and one
                # write per batch, not per decision, under load.
                if self._linger_s > 0:
                    await self._pause(self._linger_s)
            while len(batch) < self._batch_size and self._queue:
                batch.append(record_of(*self._queue.popleft()))
            try:
                await self._append(batch)
            except StoreUnavailable as error:
                log.warning(
                    "cannot store %d decision records, retrying in %.0fs: %s",
                    len(batch),
                    self._retry_s,
                    error,
                )
                if await self._pause(self._retry_s):
                    log.warning("stopped with %d decision records not stored", len(batch))
                    return
                continue
            except Exception:
                log.exception("storing %d decision records failed; they are lost", len(batch))
            batch = []

    async def _append(self, records: Sequence[DecisionRecord]) -> None:
        """Store the records; those the store refuses for a value are found by halving the
        batch, then stored altered or set aside. StoreUnavailable leaves the caller to retry
        the whole batch: records stored already are skipped then, by their decision_id."""
        try:
            await self._store.append_decisions(records)
        except ValueNotStorable as error:
            if len(records) > 1:
                middle = len(records) // 2
                await self._append(records[:middle])
                await self._append(records[middle:])
            else:
                await self._append_altered(records[0], error)

    async def _append_altered(self, record: DecisionRecord, refusal: ValueNotStorable) -> None:
        """Store `record` altered to be storable, or set it aside if there is nothing to
        alter or the store refuses even the altered record."""
        altered = storable_record(record)
        try:
            if altered is None:
                raise refusal
            await self._store.append_decisions([altered[0]])
        except ValueNotStorable as error:
            UNSTORABLE_DECISION_RECORDS.labels("set_aside").inc()
            log.error(
                "decision record %s set aside, not stored: %s",
                record.decision_id,
                error,
                extra={"decision_id": record.decision_id},
            )
            return
        UNSTORABLE_DECISION_RECORDS.labels("altered").inc()
        log.warning(
            "decision record %s stored altered (%s): %s",
            record.decision_id,
            altered[1],
            refusal,
            extra={"decision_id": record.decision_id},
        )


def storable_record(record: DecisionRecord) -> tuple[DecisionRecord, str] | None:
    """`record` with NUL replaced by U+FFFD in its text and the text of indexed columns cut
    to their limit in bytes, with what was done (also said at the end of its reason); None
    when neither changes anything."""
    changes: dict[str, Any] = {}
    done: list[str] = []
    for field in _PLAIN_TEXT_FIELDS:
        value: str = getattr(record, field)
        safe = value.replace("\x00", "\ufffd")
        if safe != value:
            done.append(f"NUL replaced in {field}")
        limit = _INDEXED_TEXT_BYTES.get(field)
        if limit is not None and len(encoded := safe.encode(errors="replace")) > limit:
            safe = encoded[:limit].decode(errors="ignore")
            done.append(f"{field} cut to {limit} bytes")
        if safe != value:
            changes[field] = safe
    if not done:
        return None
    what = ", ".join(done)
    reason = changes.get("reason", record.reason)
    changes["reason"] = f"{reason} [record altered to be stored: {what}]"
    return dataclasses.replace(record, **changes), what


def record_of(
    request: CreationRequest, decision: Decision, decided_at_ms: int, latency_us: int, caller: str
) -> DecisionRecord:
    """The record of one decision, with its request as a JSON object (orjson writes the
    dataclass's fields in order, as compact UTF-8 JSON)."""
    outcome = decision.outcome
    return DecisionRecord(
        decision_id=decision.decision_id,
        decided_at_ms=decided_at_ms,
        sdk_app_id=request.sdk_app_id,
        operator_account=request.operator_account,
        effect=outcome.effect.value,
        error_code=outcome.error_code,
        error_info=outcome.error_info,
        rule_id=decision.rule_id,
        reason=decision.reason,
        policy_revision=decision.policy_revision,
        shadow_rule_ids=tuple(e.rule_id for e in decision.shadow_hits),
        latency_us=latency_us,
        request_json=orjson.dumps(request).decode(),
        caller=caller,
    )
