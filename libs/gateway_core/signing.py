"""Provider callbacks' signature: the sandbox signs, the orchestrator verifies.

A callback carries `x-provider-signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` where the MAC
is over `f"{t}."` followed by the raw body bytes, keyed by the provider's own
PROVIDER_CALLBACK_SECRET_<PROVIDER>. The timestamp inside the MAC makes a captured callback
useless once it falls out of the tolerance; several `v1=` values may be present so a sender can
sign with the old and the new secret while the secret rotates.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from gateway_core.errors import Unauthenticated

SIGNATURE_HEADER = "x-provider-signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


def sign_callback(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `x-provider-signature` value for `body`, signed now unless `timestamp` is given."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},{SCHEME}={_mac(secret, t, body)}"


def verify_callback(
    secret: str,
    body: bytes,
    header: str,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: int | None = None,
) -> None:
    """Raise Unauthenticated unless `header` signs `body` with `secret`, recently enough.

    Reasons: BAD_SIGNATURE (malformed header, or no `v1` matches), STALE_SIGNATURE (a valid
    signature whose timestamp is more than `tolerance_seconds` away from `now`).
    """
    timestamp, candidates = _parse(header)
    expected = _mac(secret, timestamp, body)
    # Every candidate is compared, in constant time, so timing tells nothing about which failed.
    matches = [hmac.compare_digest(expected, candidate) for candidate in candidates]
    if not any(matches):
        raise Unauthenticated("callback signature does not match", reason="BAD_SIGNATURE")
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise Unauthenticated(
            "callback signature timestamp is outside the tolerance", reason="STALE_SIGNATURE"
        )


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t" and value.isascii() and value.isdigit() and timestamp is None:
            timestamp = int(value)
        elif key == SCHEME and value:
            candidates.append(value.lower())
    if timestamp is None or not candidates:
        raise Unauthenticated("malformed callback signature header", reason="BAD_SIGNATURE")
    return timestamp, candidates
