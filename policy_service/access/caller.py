"""The caller of the call being served.

The gRPC edge recognises the caller of every call (policy_service.api.rpc_interceptor, from
the access file) and serves the call with it bound here, so that what the call does can say
who asked: the decision record, the audit trail, the log line.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from chat_policy_shared.context_binding import Binding


@dataclass(frozen=True)
class Caller:
    """A caller as the access file names it."""

    name: str
    relays_chat: bool = False
    """True for the adapter: its Record* calls relay Chat's webhooks and are not audited."""


# Without an access file every caller is this one. It is taken for the adapter (its Record*
# calls are not audited, as before callers were checked); a ClearGroupFull is audited anyway.
ANONYMOUS = Caller("anonymous", relays_chat=True)

_current: ContextVar[Caller] = ContextVar("chat_policy_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the call being served (ANONYMOUS outside a call)."""
    return _current.get()


def calling_as(caller: Caller) -> Binding[Caller]:
    """Serve what runs inside as `caller`'s call."""
    return Binding(_current, caller)
