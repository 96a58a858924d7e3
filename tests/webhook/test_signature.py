"""Chat's webhook signature: the documented vector, tolerance edges, rotation."""

from __future__ import annotations

import pytest

from adapter.signature import SignatureError, compute_sign, verify_sign

VECTOR_SIGN = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
T = 1669872112


def test_check_vector_from_the_protocol() -> None:
    """Token xxxxyyyy at RequestTime 1669872112 signs as Chat documents."""
    assert compute_sign("xxxxyyyy", str(T)) == VECTOR_SIGN


@pytest.mark.parametrize("now_s", [T - 60, T, T + 60])
def test_sign_is_accepted_within_the_tolerance_both_ways(now_s: int) -> None:
    """A RequestTime up to the tolerance before or after now is accepted."""
    verify_sign(("xxxxyyyy",), VECTOR_SIGN, str(T), now_s, 60)


@pytest.mark.parametrize("now_s", [T - 61, T + 61])
def test_sign_one_second_past_the_tolerance_is_stale(now_s: int) -> None:
    """One second beyond the tolerance, either way, is refused."""
    with pytest.raises(SignatureError, match="more than 60s away"):
        verify_sign(("xxxxyyyy",), VECTOR_SIGN, str(T), now_s, 60)


def test_any_rotated_token_and_uppercase_hex_are_accepted() -> None:
    """During a rotation either token signs; hex case does not matter."""
    verify_sign(("new", "xxxxyyyy"), VECTOR_SIGN.upper(), str(T), T, 60)
    verify_sign(("xxxxyyyy", "new"), compute_sign("new", str(T)), str(T), T, 60)


@pytest.mark.parametrize(
    ("sign", "request_time", "message"),
    [
        (compute_sign("other", str(T)), str(T), "Sign does not match"),
        (VECTOR_SIGN[:-1], str(T), "Sign does not match"),
        ("", str(T), "are required"),
        (None, str(T), "are required"),
        (VECTOR_SIGN, None, "are required"),
        (VECTOR_SIGN, "12a", "Unix seconds"),
        (VECTOR_SIGN, "-5", "Unix seconds"),
        (VECTOR_SIGN, " 1669872112", "Unix seconds"),
        (VECTOR_SIGN, "١٦٦٩٨٧٢١١٢", "Unix seconds"),
        ("é" * 64, str(T), "Sign does not match"),
    ],
)
def test_bad_signatures_are_refused(
    sign: str | None, request_time: str | None, message: str
) -> None:
    """Wrong, missing or malformed Sign/RequestTime raise SignatureError saying which."""
    with pytest.raises(SignatureError, match=message):
        verify_sign(("xxxxyyyy",), sign, request_time, T, 60)
