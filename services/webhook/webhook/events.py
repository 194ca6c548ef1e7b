"""What a merchant can subscribe to, and the body a delivery carries.

The event types are those the orchestrator publishes on `payments.events` (README), plus
`webhook.test`, which only the test endpoint sends. A delivery's body is the Standard Webhooks
payload `{"type", "timestamp", "data"}`: `data` is the payment (or, for `refund.*`, the refund;
for `dispute.*`, the dispute) as of the event, with the payment's event `sequence` so a
receiver can drop a stale status.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ALL_EVENTS = "*"
TEST_EVENT = "webhook.test"
EVENT_TYPES: tuple[str, ...] = (
    "payment.created",
    "payment.pending",
    "payment.requires_action",
    "payment.authorized",
    "payment.capturing",
    "payment.success",
    "payment.failed",
    "payment.expired",
    "payment.cancelling",
    "payment.cancelled",
    "payment.partially_refunded",
    "payment.refunded",
    "refund.created",
    "refund.processed",
    "refund.failed",
    "dispute.created",
    "dispute.under_review",
    "dispute.won",
    "dispute.lost",
    "dispute.accepted",
)
_KNOWN = frozenset(EVENT_TYPES)
MAX_EVENTS = len(EVENT_TYPES)


def event_filter_problem(events: Sequence[str]) -> str | None:
    """Why `events` is not a valid subscription, or None: at least one name from the event
    list, or `"*"` alone."""
    if not events:
        return f'must name at least one event type, or "{ALL_EVENTS}" for all'
    if ALL_EVENTS in events and len(events) > 1:
        return f'"{ALL_EVENTS}" subscribes to every event and cannot be combined with names'
    unknown = [e for e in events if e not in _KNOWN and e != ALL_EVENTS]
    if unknown:
        return f"unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}"
    if len(set(events)) != len(events):
        return "names an event type twice"
    return None


def subscribes_to(events: Iterable[str], event_type: str) -> bool:
    return any(e in (ALL_EVENTS, event_type) for e in events)


@dataclass(frozen=True)
class PaymentEvent:
    """One record of `payments.events`, as a delivery needs it."""

    event_id: str
    event_type: str
    merchant_id: str
    payment_id: str
    occurred_at: datetime
    callback_url: str
    body: bytes


class MalformedEvent(ValueError):
    """A record that is not an event of paygate.events.v1.Event (logged and skipped)."""


def parse_event(value: bytes) -> PaymentEvent:
    """The event in a `payments.events` record (proto3 JSON of paygate.events.v1.Event)."""
    try:
        document = json.loads(value)
        event_id = document["event_id"]
        event_type = document["type"]
        merchant_id = document["merchant_id"]
        payment: dict[str, Any] = document.get("payment") or {}
        occurred_at = _timestamp(document.get("occurred_at"))
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedEvent(f"not a payment event: {exc!r}") from None
    if not all(isinstance(v, str) and v for v in (event_id, event_type, merchant_id)):
        raise MalformedEvent("event_id, type and merchant_id must be non-empty strings")
    sequence = int(document.get("sequence") or 0)
    if event_type.startswith("refund."):
        snapshot = dict(document.get("refund") or {})
    elif event_type.startswith("dispute."):
        snapshot = dict(document.get("dispute") or {})
    else:
        snapshot = dict(payment)
    snapshot["sequence"] = sequence
    return PaymentEvent(
        event_id=event_id,
        event_type=event_type,
        merchant_id=merchant_id,
        payment_id=str(document.get("payment_id") or payment.get("payment_id") or ""),
        occurred_at=occurred_at,
        callback_url=str(payment.get("callback_url") or ""),
        body=encode_payload(event_type, occurred_at, snapshot),
    )


def encode_payload(event_type: str, at: datetime, data: dict[str, Any]) -> bytes:
    """The JSON body of a delivery, compact and with keys in a stable order."""
    document = {"type": event_type, "timestamp": rfc3339(at), "data": data}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _timestamp(value: object) -> datetime:
    if not isinstance(value, str) or not value:
        return datetime.now(UTC)
    # proto3 JSON writes nanoseconds and a Z; fromisoformat takes at most microseconds.
    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    return datetime.fromisoformat(text).astimezone(UTC)
