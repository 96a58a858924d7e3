"""Reading the access file (TOML) into AccessRules, with every problem at `FILE:LINE`.

```toml
open = ["health", "reflection"]            # anyone may call these (the default)
[callers.adapter]
relays_chat = true                         # its Record* calls relay Chat's webhooks
tokens = ["sha256:<64 hex>"]               # SHA-256 of each bearer token (several: rotation)
allow = ["creation.check", "group-state.write"]
[callers.billing]
certificates = ["spiffe://example.org/billing"]   # its client certificate's identity
allow = ["group-state.read"]
```
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

from policy_service.access.access_rules import AccessRules, Grant
from policy_service.access.caller import Caller
from policy_service.access.permissions import ALL, OPEN_BY_DEFAULT, PERMISSIONS
from policy_service.engine.toml_tables import (
    KeyLines,
    LocatedError,
    Problem,
    only_keys,
    parse_toml,
    read_file,
)

TOKEN_PREFIX = "sha256:"
_CALLER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TOKEN_DIGEST = re.compile(r"[0-9a-f]{64}")
_CALLER_KEYS = frozenset({"relays_chat", "tokens", "certificates", "allow"})


class AccessError(LocatedError):
    """The access file cannot be used; str() reads `FILE:LINE: caller 'NAME' field 'KEY':
    problem`, each part when known."""


def token_digest_line(token: str) -> str:
    """What the access file lists for a bearer token: `sha256:` and its SHA-256 in hex."""
    return TOKEN_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def load_access(path: Path) -> AccessRules:
    """Load and check an access file; AccessError naming the line at fault."""
    return parse_access(read_file(path, AccessError), str(path))


def parse_access(source: bytes, where: str = "access file") -> AccessRules:
    """Parse access-file TOML (`where` names it in errors)."""
    text, document = parse_toml(source, where, AccessError)
    lines = KeyLines(text, "callers")

    def error(problem: Problem, caller: str | None = None) -> AccessError:
        if caller is None:
            line = lines.line("", problem.key)
        else:
            line = lines.line(f"callers.{caller}", problem.key) or lines.line("callers", caller)
        subject = f"caller {caller!r}" if caller is not None else ""
        if problem.key:
            subject = f"{subject} field {problem.key!r}".strip()
        return AccessError(problem.message, where=where, line=line, subject=subject)

    try:
        only_keys(document, {"open", "callers"})
        open_permissions = frozenset(_permissions(document, "open", OPEN_BY_DEFAULT))
        if ALL in open_permissions:
            raise Problem("open", f"cannot hold {ALL!r}: without an access file all is open")
        callers = document.get("callers", {})
        if not isinstance(callers, dict):
            raise Problem("callers", "must be a table of callers ([callers.NAME])")
    except Problem as problem:
        raise error(problem) from None
    grants: list[Grant] = []
    token_owners: dict[bytes, str] = {}
    certificate_owners: dict[str, str] = {}
    for name, table in callers.items():
        try:
            grant = _grant(name, table)
            for digest in grant.token_digests:
                owner = token_owners.setdefault(digest, name)
                if owner != name or grant.token_digests.count(digest) > 1:
                    raise Problem("tokens", f"sha256:{digest.hex()} is listed for {owner!r} too")
            for identity in grant.certificates:
                owner = certificate_owners.setdefault(identity, name)
                if owner != name or grant.certificates.count(identity) > 1:
                    raise Problem("certificates", f"{identity!r} is listed for {owner!r} too")
        except Problem as problem:
            raise error(problem, name) from None
        grants.append(grant)
    revision = "sha256:" + hashlib.sha256(source).hexdigest()[:16]
    return AccessRules(tuple(grants), open_permissions, revision)


def _grant(name: str, table: object) -> Grant:
    """One caller's entry; Problem naming the key at fault."""
    if not _CALLER_NAME.fullmatch(name):
        raise Problem(None, "a caller's name is 1-64 of A-Z a-z 0-9 _ . -, first a letter or digit")
    if not isinstance(table, dict):
        raise Problem(None, "must be a table ([callers.NAME])")
    only_keys(table, _CALLER_KEYS)
    relays_chat = table.get("relays_chat", False)
    if not isinstance(relays_chat, bool):
        raise Problem("relays_chat", "must be true or false")
    digests = tuple(_token_digest(i, token) for i, token in enumerate(_strings(table, "tokens")))
    certificates = tuple(_strings(table, "certificates"))
    if any(not identity.strip() for identity in certificates):
        raise Problem("certificates", "an identity cannot be empty")
    if not digests and not certificates:
        raise Problem(None, "cannot be recognised: give it tokens or certificates")
    permissions = tuple(_permissions(table, "allow", frozenset()))
    allowed = frozenset(PERMISSIONS | {ALL}) if ALL in permissions else frozenset(permissions)
    return Grant(Caller(name, relays_chat), allowed, digests, certificates, permissions)


def _token_digest(index: int, line: str) -> bytes:
    """The digest a `sha256:HEX` entry names. The entry is not repeated in the message: it
    could be a token pasted by mistake."""
    hex_digest = line.removeprefix(TOKEN_PREFIX)
    if not line.startswith(TOKEN_PREFIX) or not _TOKEN_DIGEST.fullmatch(hex_digest):
        raise Problem(
            "tokens",
            f"entry {index + 1} is not sha256: and 64 lowercase hex digits (the SHA-256 of a"
            " token, as `chat-policy access token` prints it; never the token itself)",
        )
    return bytes.fromhex(hex_digest)


def _permissions(table: Mapping[str, object], key: str, default: frozenset[str]) -> list[str]:
    if key not in table:
        return sorted(default)
    names = _strings(table, key)
    for permission in names:
        if permission != ALL and permission not in PERMISSIONS:
            known = ", ".join(sorted(PERMISSIONS | {ALL}))
            raise Problem(key, f"unknown permission {permission!r} (expected one of {known})")
    return names


def _strings(table: Mapping[str, object], key: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Problem(key, "must be a list of strings")
    return value
