"""Chat's webhook signature: the documented vector, tolerance edges, rotation, bad formats."""

from __future__ import annotations

import time

import pytest

from adapter.signature import SignatureError, compute_sign, verify_sign
from tests.adapter.chat import MakeChat, answer
from tests.chat_samples import OK

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


@pytest.mark.parametrize("tolerance_s", [0, 1, 60, 300])
def test_tolerance_edges_hold_for_any_configured_tolerance(tolerance_s: int) -> None:
    """RequestTime exactly `tolerance_s` behind or ahead of now is accepted; one more is not."""
    for now_s in (T + tolerance_s, T - tolerance_s):
        verify_sign(("xxxxyyyy",), VECTOR_SIGN, str(T), now_s, tolerance_s)
    for now_s in (T + tolerance_s + 1, T - tolerance_s - 1):
        with pytest.raises(SignatureError, match=f"more than {tolerance_s}s away"):
            verify_sign(("xxxxyyyy",), VECTOR_SIGN, str(T), now_s, tolerance_s)


@pytest.mark.parametrize("fraction_s", [0.0, 0.001, 0.7, 0.999])
def test_tolerance_is_counted_in_whole_seconds_whatever_the_clocks_fraction(
    fraction_s: float,
) -> None:
    """Within any second of the clock, RequestTime exactly the tolerance behind or ahead is
    accepted and one second more either way is not."""
    now_s = T + fraction_s
    for request_time in (T - 60, T + 60):
        sign = compute_sign("xxxxyyyy", str(request_time))
        verify_sign(("xxxxyyyy",), sign, str(request_time), now_s, 60)
    for request_time in (T - 61, T + 61):
        sign = compute_sign("xxxxyyyy", str(request_time))
        with pytest.raises(SignatureError, match="more than 60s away"):
            verify_sign(("xxxxyyyy",), sign, str(request_time), now_s, 60)


def test_a_removed_token_no_longer_signs() -> None:
    """After a rotation drops the old token, its Sign is refused though the new one passes."""
    old_sign = compute_sign("old", str(T))
    verify_sign(("old", "new"), old_sign, str(T), T, 60)
    verify_sign(("new",), compute_sign("new", str(T)), str(T), T, 60)
    with pytest.raises(SignatureError, match="Sign does not match"):
        verify_sign(("new",), old_sign, str(T), T, 60)


@pytest.mark.parametrize("sign", [VECTOR_SIGN.upper(), VECTOR_SIGN[:32].upper() + VECTOR_SIGN[32:]])
def test_uppercase_hex_sign_is_accepted(sign: str) -> None:
    """Upper- or mixed-case hex is accepted: it spells the same 256-bit digest number."""
    assert int(sign, 16) == int(VECTOR_SIGN, 16)
    verify_sign(("xxxxyyyy",), sign, str(T), T, 60)


@pytest.mark.parametrize(
    "sign",
    [
        "g" + VECTOR_SIGN[1:],
        VECTOR_SIGN[:-1] + "z",
        VECTOR_SIGN + "0",
        "0" + VECTOR_SIGN,
        "0x" + VECTOR_SIGN,
        VECTOR_SIGN[:-2],
        " " + VECTOR_SIGN,
        VECTOR_SIGN + "\n",
        VECTOR_SIGN[:-1] + "\uff11",
        "0" * 64,
    ],
)
def test_sign_with_a_non_hex_char_or_wrong_length_is_refused(sign: str) -> None:
    """Only the 64 hex digits of the digest match: no prefix, padding or stray character."""
    with pytest.raises(SignatureError, match="Sign does not match"):
        verify_sign(("xxxxyyyy",), sign, str(T), T, 60)


@pytest.mark.parametrize(
    "request_time",
    [
        "+1669872112",
        "-1669872112",
        "1669872112 ",
        "1669872112\n",
        "\t1669872112",
        "1669872112.0",
        "1.669872112e9",
        "1_669_872_112",
        "0x63887ff0",
        "١٦٦٩٨٧٢١١٢",
        "\uff11\uff16\uff16\uff19\uff18\uff17\uff12\uff11\uff11\uff12",
        "\u00b9669872112",
    ],
)
def test_request_time_that_is_not_plain_ascii_digits_is_refused(request_time: str) -> None:
    """A sign, space, decimal point, underscore or non-ASCII digit makes RequestTime invalid.

    The Sign is computed over that very RequestTime, so only the format check can refuse it.
    """
    sign = compute_sign("xxxxyyyy", request_time)
    with pytest.raises(SignatureError, match="RequestTime must be Unix seconds"):
        verify_sign(("xxxxyyyy",), sign, request_time, T, 60)


@pytest.mark.parametrize(("sign", "request_time"), [(None, None), ("", ""), (VECTOR_SIGN, "")])
def test_missing_sign_or_request_time_is_refused(
    sign: str | None, request_time: str | None
) -> None:
    """An absent or empty Sign or RequestTime is refused as missing."""
    with pytest.raises(SignatureError, match="Sign and RequestTime are required"):
        verify_sign(("xxxxyyyy",), sign, request_time, T, 60)


@pytest.mark.parametrize("digits", [20, 309, 400, 4301, 5000])
def test_huge_request_time_is_refused_not_crashing(digits: int) -> None:
    """A RequestTime of many digits is refused as a SignatureError, not a stray exception.

    now is a float, as the app's clock gives it: past 308 digits RequestTime cannot be
    subtracted from it, and past 4300 it does not even convert to an int.
    """
    request_time = "9" * digits
    sign = compute_sign("xxxxyyyy", request_time)
    with pytest.raises(SignatureError):
        verify_sign(("xxxxyyyy",), sign, request_time, T + 0.25, 60)


# --- through the app (its clock is the real one, so edges are kept a few seconds clear) ---

FULL = "Group.CallbackAfterGroupFull"


def signed(token: str, offset_s: int = 0) -> dict[str, str]:
    """Sign and RequestTime for `token`, `offset_s` away from now."""
    request_time = str(int(time.time()) + offset_s)
    return {"Sign": compute_sign(token, request_time), "RequestTime": request_time}


def test_app_accepts_either_token_during_a_rotation_and_not_a_removed_one(
    make_chat: MakeChat,
) -> None:
    """Both configured tokens sign; once the old one is removed its Sign gets 401, unsent."""
    rotating = make_chat(callback_tokens=("old", "new"))
    for token in ("old", "new"):
        assert rotating.post(FULL, {"GroupId": "g"}, **signed(token)).content == OK
    assert len(rotating.fake.calls) == 2
    rotated = make_chat(callback_tokens=("new",))
    result = rotated.post(FULL, {"GroupId": "g"}, **signed("old"))
    assert (result.status_code, answer(result)["ErrorCode"]) == (401, 401)
    assert rotated.post(FULL, {"GroupId": "g"}, **signed("new")).content == OK
    assert len(rotated.fake.calls) == 1


def test_app_accepts_an_uppercase_hex_sign(make_chat: MakeChat) -> None:
    """Uppercase hex is the same digest number, so the app accepts it as Chat's lowercase."""
    chat = make_chat(callback_tokens=("tok",))
    params = signed("tok")
    params["Sign"] = params["Sign"].upper()
    assert chat.post(FULL, {"GroupId": "g"}, **params).content == OK
    assert len(chat.fake.calls) == 1


@pytest.mark.parametrize("offset_s", [-55, 55])
def test_app_accepts_a_request_time_inside_the_tolerance_both_ways(
    make_chat: MakeChat, offset_s: int
) -> None:
    """A RequestTime 55 s behind or ahead of now is within the 60 s tolerance."""
    chat = make_chat(callback_tokens=("tok",), sign_tolerance_s=60)
    assert chat.post(FULL, {"GroupId": "g"}, **signed("tok", offset_s)).content == OK


@pytest.mark.parametrize("offset_s", [-65, 65])
def test_app_refuses_a_request_time_outside_the_tolerance_both_ways(
    make_chat: MakeChat, offset_s: int
) -> None:
    """A RequestTime 65 s behind or ahead of now is past the 60 s tolerance: 401, unsent."""
    chat = make_chat(callback_tokens=("tok",), sign_tolerance_s=60)
    result = chat.post(FULL, {"GroupId": "g"}, **signed("tok", offset_s))
    assert (result.status_code, answer(result)["ErrorCode"]) == (401, 401)
    assert "more than 60s away" in str(answer(result)["ErrorInfo"])
    assert chat.fake.calls == []


@pytest.mark.parametrize(("offset_s", "status"), [(-60, 200), (60, 200), (-61, 401), (61, 401)])
def test_app_holds_the_tolerance_in_whole_seconds(
    make_chat: MakeChat, offset_s: int, status: int
) -> None:
    """With the clock at 1700000000.7, RequestTime 60 s behind or ahead passes the 60 s
    tolerance and 61 s either way is 401."""
    chat = make_chat(callback_tokens=("tok",), sign_tolerance_s=60, clock=lambda: 1700000000.7)
    request_time = str(1700000000 + offset_s)
    params = {"Sign": compute_sign("tok", request_time), "RequestTime": request_time}
    result = chat.post(FULL, {"GroupId": "g", "EventTime": 1700000000000}, **params)
    assert result.status_code == status
    assert len(chat.fake.calls) == (1 if status == 200 else 0)


def _malformed(request_time: str) -> dict[str, str]:
    """A RequestTime in a bad format with the Sign computed over exactly that text."""
    return {"Sign": compute_sign("tok", request_time), "RequestTime": request_time}


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"Sign": compute_sign("tok", "0")},
        {"RequestTime": str(int(time.time()))},
        {"Sign": "", "RequestTime": ""},
        {**signed("tok"), "Sign": "g" * 64},
        {**signed("tok"), "Sign": "é" * 64},
        _malformed("+" + str(int(time.time()))),
        _malformed(str(int(time.time())) + ".0"),
        _malformed(" " + str(int(time.time()))),
        _malformed("".join(chr(0x0660 + int(d)) for d in str(int(time.time())))),
        _malformed("9" * 400),
        _malformed("9" * 5000),
    ],
    ids=[
        "nothing",
        "no-request-time",
        "no-sign",
        "empty",
        "non-hex-sign",
        "non-ascii-sign",
        "plus-sign",
        "decimal-point",
        "leading-space",
        "arabic-indic-digits",
        "400-digits",
        "5000-digits",
    ],
)
def test_app_answers_401_to_a_missing_or_malformed_signature(
    make_chat: MakeChat, params: dict[str, str]
) -> None:
    """Missing, non-hex or badly formatted Sign/RequestTime is 401 in Chat's JSON, unsent."""
    chat = make_chat(callback_tokens=("tok",))
    result = chat.post(FULL, {"GroupId": "g"}, **params)
    document = answer(result)
    assert (result.status_code, document["ActionStatus"], document["ErrorCode"]) == (
        401,
        "FAIL",
        401,
    )
    assert str(document["ErrorInfo"]).startswith("webhook signature rejected: ")
    assert chat.fake.calls == []
