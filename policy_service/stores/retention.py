"""Retention: forget destroyed groups and delete old change-log entries, decisions, audit
events and rate-limit slots, in a task on the service's event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from policy_service.background import cancel_task
from policy_service.clock import now_ms
from policy_service.errors import StoreUnavailable
from policy_service.stores.store import Store

log = logging.getLogger(__name__)


class RetentionPruner:
    """Prunes the store every interval_s until stopped (a failed pass is retried next time).

    rate_slot_retention_ms is asked at each pass how long a rate-limit slot must be kept (the
    policy's longest window, which may change while the service runs).
    """

    def __init__(
        self,
        store: Store,
        *,
        destroyed_retention_s: float,
        change_log_retention_s: float,
        decision_retention_s: float,
        audit_retention_s: float,
        rate_slot_retention_ms: Callable[[], int],
        interval_s: float,
    ) -> None:
        self._store = store
        self._destroyed_ms = int(destroyed_retention_s * 1000)
        self._changes_ms = int(change_log_retention_s * 1000)
        self._decisions_ms = int(decision_retention_s * 1000)
        self._audit_ms = int(audit_retention_s * 1000)
        self._rate_slot_retention_ms = rate_slot_retention_ms
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start pruning (a task on the running loop): the first pass runs at once."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="retention")

    async def stop(self) -> None:
        """Stop; a pass in progress is cancelled (each prune is its own transaction)."""
        await cancel_task(self._task)

    async def prune_once(self) -> None:
        """One pass with cutoffs from the service's clock now; logs what it removed."""
        now = now_ms()
        outcome = await self._store.prune(now - self._destroyed_ms, now - self._changes_ms)
        decisions = await self._store.prune_decisions(now - self._decisions_ms)
        audit_events = await self._store.prune_audit_events(now - self._audit_ms)
        slots = await self._store.prune_slots(now - self._rate_slot_retention_ms())
        if outcome.forgotten or outcome.changes_deleted or decisions or audit_events or slots:
            log.info(
                "retention forgot %d destroyed group states and deleted %d changes,"
                " %d decisions, %d audit events and %d rate-limit slots",
                outcome.forgotten,
                outcome.changes_deleted,
                decisions,
                audit_events,
                slots,
            )

    async def _run(self) -> None:
        while True:
            try:
                await self.prune_once()
            except StoreUnavailable as error:
                log.warning("retention pass failed, retrying in %.0fs: %s", self._interval_s, error)
            except Exception:
                log.exception("retention pass failed unexpectedly, retrying")
            await asyncio.sleep(self._interval_s)
