"""Provider callback signatures: what the sandbox signs, the orchestrator accepts; nothing else."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway_core.errors import Unauthenticated
from gateway_core.signing import sign_callback, verify_callback

SECRET = "provider-secret"
BODY = b'{"event_id":"EVT_1","status":"SUCCESS","amount_paisa":10000}'
NOW = 1_700_000_000


def reason_of(secret: str, body: bytes, header: str, **kwargs: int) -> str:
    with pytest.raises(Unauthenticated) as raised:
        verify_callback(secret, body, header, **kwargs)
    return raised.value.reason


def test_header_carries_the_timestamp_and_the_hex_hmac_of_timestamp_dot_body() -> None:
    header = sign_callback(SECRET, BODY, timestamp=NOW)

    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"


def test_signature_made_now_verifies() -> None:
    verify_callback(SECRET, BODY, sign_callback(SECRET, BODY))


def test_a_tampered_body_is_a_bad_signature() -> None:
    header = sign_callback(SECRET, BODY, timestamp=NOW)

    tampered = BODY.replace(b"10000", b"99999")
    assert reason_of(SECRET, tampered, header, now=NOW) == "BAD_SIGNATURE"


def test_another_secret_is_a_bad_signature() -> None:
    header = sign_callback("someone-else", BODY, timestamp=NOW)

    assert reason_of(SECRET, BODY, header, now=NOW) == "BAD_SIGNATURE"


def test_a_changed_timestamp_is_a_bad_signature() -> None:
    signature = sign_callback(SECRET, BODY, timestamp=NOW).split(",")[1]

    assert reason_of(SECRET, BODY, f"t={NOW + 1},{signature}", now=NOW) == "BAD_SIGNATURE"


@pytest.mark.parametrize(
    "header",
    ["", "garbage", f"t={NOW}", "v1=abcd", f"t=soon,v1={'0' * 64}", f"t=-5,v1={'0' * 64}"],
)
def test_malformed_headers_are_bad_signatures(header: str) -> None:
    assert reason_of(SECRET, BODY, header, now=NOW) == "BAD_SIGNATURE"


def test_an_old_signature_is_stale() -> None:
    header = sign_callback(SECRET, BODY, timestamp=NOW - 301)

    assert reason_of(SECRET, BODY, header, now=NOW) == "STALE_SIGNATURE"


def test_a_signature_from_the_future_beyond_the_tolerance_is_stale() -> None:
    header = sign_callback(SECRET, BODY, timestamp=NOW + 301)

    assert reason_of(SECRET, BODY, header, now=NOW) == "STALE_SIGNATURE"


def test_the_tolerance_is_inclusive_and_configurable() -> None:
    header = sign_callback(SECRET, BODY, timestamp=NOW - 300)

    verify_callback(SECRET, BODY, header, now=NOW)
    assert reason_of(SECRET, BODY, header, now=NOW, tolerance_seconds=60) == "STALE_SIGNATURE"


def test_any_of_several_v1_values_may_match_during_a_secret_rotation() -> None:
    old = sign_callback("old-secret", BODY, timestamp=NOW)
    new = sign_callback("new-secret", BODY, timestamp=NOW).split(",")[1]
    header = f"{old}, {new}"

    verify_callback("old-secret", BODY, header, now=NOW)
    verify_callback("new-secret", BODY, header, now=NOW)
    assert reason_of("third-secret", BODY, header, now=NOW) == "BAD_SIGNATURE"


def test_unknown_schemes_are_ignored() -> None:
    header = f"{sign_callback(SECRET, BODY, timestamp=NOW)},v0=deadbeef"

    verify_callback(SECRET, BODY, header, now=NOW)
