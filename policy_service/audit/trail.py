"""The audit trail as the service writes it: an audit event for each audited action, stored,
and one log line for each.

An event is stamped with the service's clock, the caller of the call being served
(policy_service.access.caller), the call's request ID (what its log lines carry) and this
replica (host name and process id). A state change's event goes into the store with the
change (GroupStateStore.record's `audit`) and is logged once stored; an action that failed,
or a reload, is appended on its own. A trail that cannot be stored is logged, never raised:
the action's own outcome stands.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket

from chat_policy_shared.logs import request_id
from policy_service.access.caller import current_caller
from policy_service.audit.audit_log import AuditEvent, AuditLog
from policy_service.clock import now_ms
from policy_service.errors import PolicyServiceError
from policy_service.groups.state import GroupKey

log = logging.getLogger(__name__)

# The caller of a reload: whoever changed the file or signalled the process, on its host.
LOCAL_CALLER = "local"
_NO_GROUP = GroupKey(0, "", "")


class AuditTrail:
    """Builds, stores and logs audit events, on the service's event loop."""

    def __init__(self, audit_log: AuditLog) -> None:
        self._log = audit_log
        self.replica = f"{socket.gethostname()}:{os.getpid()}"

    def event(
        self, action: str, key: GroupKey, *, reason: str = "", result: str = "OK", detail: str = ""
    ) -> AuditEvent:
        """A new audit event of the call being served, about `key`, stamped now."""
        return self._new(current_caller().name, action, key, reason, result, detail)

    def stored(self, event: AuditEvent) -> None:
        """Log an event that the store kept with its state change."""
        _log_line(event)

    async def failed(
        self, action: str, key: GroupKey, *, reason: str, result: str, detail: str
    ) -> None:
        """Store and log the event of a call that failed after reaching its method; if the
        store fails too, log that and return (the call's own error is what its caller gets)."""
        await self._append(self.event(action, key, reason=reason, result=result, detail=detail))

    async def reloaded(self, action: str, reason: str, loaded: bool, detail: str) -> None:
        """Store and log the event of a reload ("policy.reload", "access.reload"): loaded or
        refused (the last good kept), what started it and the revision or the error."""
        result = "OK" if loaded else "REFUSED"
        await self._append(self._new(LOCAL_CALLER, action, _NO_GROUP, reason, result, detail))

    def _new(
        self, caller: str, action: str, key: GroupKey, reason: str, result: str, detail: str
    ) -> AuditEvent:
        return AuditEvent(
            audit_id=secrets.token_hex(16),
            occurred_at_ms=now_ms(),
            caller=caller,
            action=action,
            sdk_app_id=key.sdk_app_id,
            group_id=key.group_id,
            topic_id=key.topic_id,
            reason=reason,
            result=result,
            detail=detail,
            request_id=request_id.get() or "",
            replica=self.replica,
        )

    async def _append(self, event: AuditEvent) -> None:
        _log_line(event)
        try:
            await self._log.append_audit_events([event])
        except PolicyServiceError as error:
            log.error(
                "audit event %s could not be stored: %s",
                event.audit_id,
                error,
                extra={"audit_id": event.audit_id},
            )


def _log_line(event: AuditEvent) -> None:
    """One line per audit event, with its fields."""
    where = ""
    if event.group_id:
        topic = f" topic {event.topic_id}" if event.topic_id else ""
        where = f" on group {event.group_id}{topic} of SdkAppid {event.sdk_app_id}"
    because = f" ({event.reason})" if event.reason else ""
    log.info(
        "audit: %s by %s%s%s: %s%s",
        event.action,
        event.caller,
        where,
        because,
        event.result,
        f", {event.detail}" if event.detail else "",
        extra={
            "audit_id": event.audit_id,
            "caller": event.caller,
            "action": event.action,
            "sdk_app_id": event.sdk_app_id,
            "group_id": event.group_id,
            "topic_id": event.topic_id,
            "reason": event.reason,
            "result": event.result,
            "detail": event.detail,
        },
    )
