"""The webhook signer: Standard Webhooks headers, plus the seed's X-Webhook-Signature.

`webhook-signature` is `v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`
(https://www.standardwebhooks.com); after a secret rotation the signatures of the new and the
old secret are both sent, space-separated, as the spec allows. `X-Webhook-Signature` is the
hex HMAC-SHA256 of the body alone (the seed's header), likewise one per secret.

A secret is kept as the merchant gave it: `whsec_<base64>` stands for the decoded bytes,
anything else for its UTF-8 bytes (so the seed's `"webhook_secret_key"` works as is).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
GENERATED_SECRET_BYTES = 32
# Short keys are guessable; long ones are pointless (HMAC hashes longer keys first).
MIN_SECRET_BYTES = 16
MAX_SECRET_BYTES = 128
USER_AGENT = "paygate-webhooks/1"


def generate_secret() -> str:
    """`whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(GENERATED_SECRET_BYTES)).decode()


def secret_problem(secret: str) -> str | None:
    """Why `secret` cannot sign deliveries, or None."""
    try:
        key = secret_key(secret)
    except ValueError as exc:
        return str(exc)
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        return f"must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes once decoded"
    return None


def secret_key(secret: str) -> bytes:
    """The HMAC key a secret stands for."""
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX) :]
        try:
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"a secret starting with {SECRET_PREFIX} must be base64") from None
    return secret.encode()


def signature_headers(
    keys: Sequence[bytes], *, message_id: str, timestamp: int, body: bytes, event_type: str
) -> dict[str, str]:
    """Every header of one attempt; `keys` newest first (two during a rotation)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    standard = " ".join(
        "v1," + base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode()
        for k in keys
    )
    seed = " ".join(hmac.new(k, body, hashlib.sha256).hexdigest() for k in keys)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard,
        "x-webhook-signature": seed,
        "x-webhook-event": event_type,
    }
