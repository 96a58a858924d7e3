"""The access file in force: who each caller is, how each is recognised, and the one check
every call passes (admit).

A caller is recognised by a bearer token (the `authorization: Bearer TOKEN` metadata) or by
its client certificate's identity (mutual TLS). Tokens are kept only as their SHA-256: the
file never holds a secret. A call's token is hashed and its digest looked up in a dict; the
lookup's timing depends on the digest of what the caller sent, not on any stored token, and
learning which digests are near a stored one does not help anyone find a token that hashes
to it (that is a preimage of SHA-256). The stored digest is then compared with
hmac.compare_digest all the same, so that no byte-by-byte comparison of secret-derived data
is ever made.

Hashing costs more than the rest of the check (hashlib's SHA-256 took about 4 µs inside a
busy server here), so a token once found good is remembered by its `authorization` value,
for the life of these rules (a reload makes new rules: a token taken out of the file stops
working at once). Only good tokens are remembered, so the memory is bounded by the file. A
lookup there compares a stored value's bytes with the sent one only after their 64-bit string
hashes are equal (SipHash under a random key of the process), so a wrong token is never
compared byte by byte with a good one, and learns nothing from the timing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from policy_service.access.caller import Caller
from policy_service.errors import MethodNotAllowed, UnknownCaller

UNIDENTIFIED = Caller("unidentified")
"""Who calls an open method (health, reflection) without a credential of a caller."""

_BEARER = "bearer "

# Good `authorization` values remembered per rules; beyond this many (a caller sending its
# token in many spellings), the others are hashed at every call.
MAX_REMEMBERED_TOKENS = 1024


@dataclass(frozen=True)
class Grant:
    """One caller of the access file: who it is and what it may call."""

    caller: Caller
    allowed: frozenset[str]
    """The permissions it holds (ALL expanded to every permission, and ALL itself)."""

    token_digests: tuple[bytes, ...]
    """SHA-256 of each bearer token it may present."""

    certificates: tuple[str, ...]
    """Client certificate identities that are its (URI SAN, DNS SAN or subject CN)."""

    permissions: tuple[str, ...]
    """The permissions as the file names them, for people."""


class AccessRules:
    """The callers of an access file and what anyone may call (`open`)."""

    def __init__(self, grants: tuple[Grant, ...], open: frozenset[str], revision: str) -> None:
        """Rules of `grants` (their tokens and certificates already told apart), `open`
        permissions, and the file's revision (sha256:HEX16)."""
        self.grants, self.open, self.revision = grants, open, revision
        self._by_token = {d: (d, g) for g in grants for d in g.token_digests}
        self._good_tokens: dict[str, Grant] = {}
        self.by_certificate: Mapping[str, Grant] = {c: g for g in grants for c in g.certificates}

    def admit(
        self, method: str, permission: str, authorization: str | None, certificate: str | None
    ) -> Caller:
        """The caller of a call to `method` (which needs `permission`), from its
        `authorization` metadata and its client certificate's identity (each None when
        absent); UnknownCaller or MethodNotAllowed when it may not make it."""
        token_grant = None if authorization is None else self._token_grant(method, authorization)
        certificate_grant = None if certificate is None else self.by_certificate.get(certificate)
        if (
            token_grant is not None
            and certificate_grant is not None
            and token_grant is not certificate_grant
        ):
            raise UnknownCaller(
                method,
                f"the bearer token names caller {token_grant.caller.name!r} but the client"
                f" certificate names caller {certificate_grant.caller.name!r}",
            )
        grant: Grant | None = token_grant or certificate_grant
        if grant is None:
            if permission in self.open:
                return UNIDENTIFIED
            if certificate is not None:
                raise UnknownCaller(
                    method,
                    f"client certificate {certificate!r} is not a caller's in the access file,"
                    " and no bearer token was sent",
                )
            raise UnknownCaller(
                method,
                "no credential: send the metadata 'authorization: Bearer TOKEN' or a client"
                " certificate the access file lists",
            )
        if permission in grant.allowed or permission in self.open:
            return grant.caller
        raise MethodNotAllowed(grant.caller.name, method, permission)

    def _token_grant(self, method: str, authorization: str) -> Grant:
        """The caller whose token `authorization` carries; UnknownCaller if none is."""
        remembered = self._good_tokens.get(authorization)
        if remembered is not None:
            return remembered
        if authorization[:7].lower() != _BEARER or len(authorization) == 7:
            raise UnknownCaller(method, "the authorization metadata must be 'Bearer TOKEN'")
        digest = hashlib.sha256(authorization[7:].encode()).digest()
        found = self._by_token.get(digest)
        if found is None or not hmac.compare_digest(found[0], digest):
            raise UnknownCaller(method, "the bearer token is not one the access file lists")
        if len(self._good_tokens) < MAX_REMEMBERED_TOKENS:
            self._good_tokens[authorization] = found[1]
        return found[1]
