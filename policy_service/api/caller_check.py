"""Who is calling: the bearer token and client certificate of a gRPC call, checked against
the access file in force (policy_service.access).

A client certificate's identity is what grpc's auth context says of the peer's certificate
(mutual TLS): its first URI subject alternative name (`peer_uri`, e.g. a SPIFFE ID), else its
first DNS name (`peer_dns`), else its subject's common name (`x509_common_name`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grpc

from policy_service.access.access_reload import AccessHolder
from policy_service.access.caller import Caller

AUTHORIZATION_METADATA = "authorization"

# Identity keys of grpc's auth context, in the order they name a certificate.
_SAN_KEYS = ("peer_uri", "peer_dns")
_COMMON_NAME_KEY = "x509_common_name"


def certificate_identity(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The identity of the peer's client certificate, None without one."""
    for key in _SAN_KEYS:
        for value in auth_context.get(key, ()):
            return value.decode(errors="replace")
    for value in auth_context.get(_COMMON_NAME_KEY, ()):
        if value:
            return value.decode(errors="replace")
    return None


class CallerCheck:
    """Admits each call by the access rules a holder has now (reloads apply to the next
    call); reads client certificates only when the server asks for them (mutual TLS)."""

    def __init__(self, holder: AccessHolder, mutual_tls: bool) -> None:
        self._holder = holder
        self._mutual_tls = mutual_tls

    def admit(
        self,
        method: str,
        permission: str,
        authorization: str | None,
        context: grpc.aio.ServicerContext,
    ) -> Caller:
        """The caller of this call to `method`, from its `authorization` metadata (None:
        none) and its context's client certificate; UnknownCaller or MethodNotAllowed if it
        may not make it."""
        certificate = certificate_identity(context.auth_context()) if self._mutual_tls else None
        return self._holder.rules.admit(method, permission, authorization, certificate)
