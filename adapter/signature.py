"""Chat's webhook signature: Sign = hex SHA-256 of token + RequestTime, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence


class SignatureError(Exception):
    """The request's Sign or RequestTime does not authenticate it; the message says why, and
    `reason` in one word (the auth_refusals metric's label)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def compute_sign(token: str, request_time: str) -> str:
    """The Sign Chat sends for `token` at `request_time` (Unix seconds, as sent)."""
    return hashlib.sha256((token + request_time).encode()).hexdigest()


def verify_sign(
    tokens: Sequence[str],
    sign: str | None,
    request_time: str | None,
    now_s: float,
    tolerance_s: int,
) -> None:
    """Raise SignatureError unless `sign` matches one of `tokens` at a fresh `request_time`.

    Fresh is at most `tolerance_s` from `now_s` either way, counted in whole seconds as
    RequestTime is: the fraction of the current second is dropped, so that exactly the
    tolerance is accepted wherever in that second the request arrives. Hex digits are
    compared case-insensitively (the digest is the same); every token is tried, so the time
    taken does not tell which one nearly matched.
    """
    if not sign or not request_time:
        raise SignatureError("signature_missing", "Sign and RequestTime are required")
    # Twelve digits reach the year 33658; longer is no Unix time (and would not fit a float).
    if not (request_time.isascii() and request_time.isdigit() and len(request_time) <= 12):
        raise SignatureError("request_time_malformed", "RequestTime must be Unix seconds")
    if abs(int(request_time) - math.floor(now_s)) > tolerance_s:
        raise SignatureError(
            "request_time_stale", f"RequestTime is more than {tolerance_s}s away from now"
        )
    given = sign.lower().encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, compute_sign(token, request_time).encode())
    if not matched:
        raise SignatureError("signature_mismatch", "Sign does not match")
