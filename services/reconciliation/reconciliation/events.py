"""What reconciliation knows: payments and refunds learned from `payments.events`.

Every event carries the payment as it was right after the change (with its refunds), so the
books here are a copy of the latest snapshot per payment: amount, what was captured, the
fee and tax our ledger computed, the provider and its reference, the status and the IST day
the provider settles it. A wallet takes the money when it authorizes, so a held wallet payment
is due on its authorization day, and a void of it (cancelled or expired uncaptured) is due
as the wallet's refund `VOID_<payment_id>`. Delivery is at least once and may replay older
events after newer ones: an event id already applied is skipped, and a snapshot older than
the stored one (by the payment's event sequence) never overwrites it. Refund events keep the
payment's sequence (a refund does not change the payment's version), so a snapshot of the
same sequence is newer: it is the next event of that payment on its partition. A dispute.*
event also records its dispute (`book_disputes`), which a provider's chargeback line settles.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import asyncpg
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from gateway_core.kafka import ConsumedEvent
from gateway_core.logging import get_logger
from paygate.disputes.v1 import disputes_pb2
from paygate.events.v1 import events_pb2
from paygate.payments.v1 import payments_pb2
from reconciliation import analytics_facts
from reconciliation.matching import ist_date

log = get_logger(__name__)

# Statuses in which the payment's money was captured.
_CAPTURED = frozenset({"SUCCESS", "PARTIALLY_REFUNDED", "REFUNDED"})
# Methods whose provider takes the money when it authorizes (a wallet debits at once), so it
# settles the debit on that day, and settles a void as a refund of it.
DEBIT_AT_AUTHORIZATION = frozenset({"WALLET"})
# How a held authorization ends without a capture.
_RELEASED = frozenset({payments_pb2.Payment.CANCELLED, payments_pb2.Payment.EXPIRED})


@dataclass(frozen=True)
class PaymentEntry:
    payment_id: str
    merchant_id: str
    provider: str
    method: str
    provider_reference: str
    amount_paisa: int
    captured_paisa: int
    fees_paisa: int
    tax_paisa: int
    status: str
    captured_at: datetime | None
    sequence: int

    @property
    def settlement_date(self) -> date | None:
        return ist_date(self.captured_at) if self.captured_at else None


@dataclass(frozen=True)
class RefundEntry:
    refund_id: str
    payment_id: str
    provider: str
    provider_reference: str
    amount_paisa: int
    status: str
    kind: str
    processed_at: datetime | None
    sequence: int

    @property
    def settlement_date(self) -> date | None:
        if self.status != "PROCESSED" or self.processed_at is None:
            return None
        return ist_date(self.processed_at)


def decode(value: bytes) -> events_pb2.Event:
    """The event from its Kafka value (proto3 JSON); ValueError if it is not one."""
    event = events_pb2.Event()
    try:
        json_format.Parse(value, event, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ValueError(f"not a paygate.events.v1.Event: {exc}") from None
    if not event.event_id or not (event.payment.payment_id or event.dispute.dispute_id):
        raise ValueError("event without event_id, payment or dispute")
    return event


def entries(event: events_pb2.Event) -> tuple[PaymentEntry, list[RefundEntry]]:
    """The book entries an event's payment snapshot describes."""
    payment = event.payment
    status = payments_pb2.Payment.Status.Name(payment.status)
    method = payments_pb2.PaymentMethod.Name(payment.payment_method)
    refunds = [
        RefundEntry(
            refund_id=refund.refund_id,
            payment_id=payment.payment_id,
            provider=payment.provider,
            provider_reference=refund.external_refund_id,
            amount_paisa=refund.amount_paisa,
            status=payments_pb2.Refund.Status.Name(refund.status),
            kind=payments_pb2.Refund.Kind.Name(refund.kind),
            processed_at=_time(refund.processed_at) if refund.HasField("processed_at") else None,
            sequence=event.sequence,
        )
        for refund in payment.refunds
        if refund.refund_id
    ]
    captured_at = _money_taken_at(payment, status, method)
    if released := _hold_released_at(payment, method):
        refunds.append(
            RefundEntry(
                refund_id=void_refund_id(payment.payment_id),
                payment_id=payment.payment_id,
                provider=payment.provider,
                provider_reference="",
                amount_paisa=payment.amount_paisa,
                status="PROCESSED",
                kind="VOID",
                processed_at=released,
                sequence=event.sequence,
            )
        )
    captured = payment.captured_amount_paisa or payment.amount_paisa if captured_at else 0
    entry = PaymentEntry(
        payment_id=payment.payment_id,
        merchant_id=payment.merchant_id,
        provider=payment.provider,
        method=method,
        provider_reference=payment.external_txn_id,
        amount_paisa=payment.amount_paisa,
        captured_paisa=captured,
        fees_paisa=payment.fees_paisa,
        tax_paisa=payment.tax_paisa,
        status=status,
        captured_at=captured_at,
        sequence=event.sequence,
    )
    return entry, refunds


def void_refund_id(payment_id: str) -> str:
    """The refund a wallet makes when the gateway voids a held payment (the orchestrator names
    it so: a wallet has no void, it refunds the debit)."""
    return f"VOID_{payment_id}"


def _money_taken_at(payment: payments_pb2.Payment, status: str, method: str) -> datetime | None:
    """When the provider took the customer's money, which it settles that day: the capture (the
    move to SUCCESS); for a wallet, which debits when it authorizes, the authorization; for a
    payment the gateway closed and then reversed (money that arrived late and went back), the
    reversal's start."""
    taken = {payments_pb2.Payment.SUCCESS}
    if method in DEBIT_AT_AUTHORIZATION:
        taken.add(payments_pb2.Payment.AUTHORIZED)
    for transition in payment.status_history:
        if transition.to_status in taken and transition.HasField("at"):
            return _time(transition.at)
    if status in _CAPTURED:
        return _time(payment.processed_at) if payment.HasField("processed_at") else None
    for refund in payment.refunds:
        if refund.kind == payments_pb2.Refund.REVERSAL and refund.HasField("created_at"):
            return _time(refund.created_at)
    return None


def _hold_released_at(payment: payments_pb2.Payment, method: str) -> datetime | None:
    """When a wallet's held debit went back to the customer: the gateway voided the
    authorization (cancelled, or expired uncaptured), which the wallet settles as a refund."""
    if method not in DEBIT_AT_AUTHORIZATION:
        return None
    held = False
    for transition in payment.status_history:
        if transition.to_status == payments_pb2.Payment.AUTHORIZED:
            held = True
        elif held and transition.to_status in _RELEASED and transition.HasField("at"):
            return _time(transition.at)
    return None


def _dispute_version(event: events_pb2.Event) -> int:
    """How far the dispute got: its status's rank (statuses only move forward)."""
    return _DISPUTE_RANK.get(event.dispute.status, 0)


_DISPUTE_RANK = {
    disputes_pb2.Dispute.NEEDS_RESPONSE: 1,
    disputes_pb2.Dispute.UNDER_REVIEW: 2,
    disputes_pb2.Dispute.WON: 3,
    disputes_pb2.Dispute.LOST: 3,
    disputes_pb2.Dispute.ACCEPTED: 3,
}


def _time(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


_UPSERT_PAYMENT = """
INSERT INTO book_payments (payment_id, merchant_id, provider, method, provider_reference,
    amount_paisa, captured_paisa, fees_paisa, tax_paisa, status, captured_at, settlement_date,
    sequence)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (payment_id) DO UPDATE SET
    provider = EXCLUDED.provider, method = EXCLUDED.method,
    provider_reference = EXCLUDED.provider_reference, amount_paisa = EXCLUDED.amount_paisa,
    captured_paisa = EXCLUDED.captured_paisa, fees_paisa = EXCLUDED.fees_paisa,
    tax_paisa = EXCLUDED.tax_paisa, status = EXCLUDED.status,
    captured_at = EXCLUDED.captured_at, settlement_date = EXCLUDED.settlement_date,
    sequence = EXCLUDED.sequence, updated_at = now()
WHERE book_payments.sequence <= EXCLUDED.sequence
"""

# A dispute's status only moves forward (NEEDS_RESPONSE, then UNDER_REVIEW, then a final one),
# so the furthest status seen wins whatever order the events arrive in.
_UPSERT_DISPUTE = """
INSERT INTO book_disputes (dispute_id, payment_id, provider, provider_reference, amount_paisa,
    status, opened_at, version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (dispute_id) DO UPDATE SET
    status = EXCLUDED.status, version = EXCLUDED.version, updated_at = now()
WHERE book_disputes.version < EXCLUDED.version
"""

_UPSERT_REFUND = """
INSERT INTO book_refunds (refund_id, payment_id, provider, provider_reference, amount_paisa,
    status, kind, processed_at, settlement_date, sequence)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (refund_id) DO UPDATE SET
    provider = EXCLUDED.provider, provider_reference = EXCLUDED.provider_reference,
    amount_paisa = EXCLUDED.amount_paisa, status = EXCLUDED.status, kind = EXCLUDED.kind,
    processed_at = EXCLUDED.processed_at, settlement_date = EXCLUDED.settlement_date,
    sequence = EXCLUDED.sequence, updated_at = now()
WHERE book_refunds.sequence <= EXCLUDED.sequence
"""


async def apply(conn: asyncpg.Connection, event: events_pb2.Event) -> bool:
    """Record what the event says, once; False when this event id was applied before. The
    analytics facts are brought up to date in the same transaction."""
    async with conn.transaction():
        first = await conn.fetchval(
            "INSERT INTO applied_events (event_id, payment_id) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING RETURNING true",
            event.event_id,
            event.payment.payment_id or event.dispute.payment_id or event.payment_id,
        )
        if not first:
            return False
        await analytics_facts.record(conn, event)
        if not event.payment.payment_id:
            # A dispute event without the payment's snapshot: nothing for the books.
            return True
        payment, refunds = entries(event)
        await conn.execute(
            _UPSERT_PAYMENT,
            payment.payment_id,
            payment.merchant_id,
            payment.provider,
            payment.method,
            payment.provider_reference,
            payment.amount_paisa,
            payment.captured_paisa,
            payment.fees_paisa,
            payment.tax_paisa,
            payment.status,
            payment.captured_at,
            payment.settlement_date,
            payment.sequence,
        )
        if event.HasField("dispute"):
            dispute = event.dispute
            await conn.execute(
                _UPSERT_DISPUTE,
                dispute.dispute_id,
                dispute.payment_id,
                dispute.provider,
                dispute.provider_reference,
                dispute.amount_paisa,
                disputes_pb2.Dispute.Status.Name(dispute.status),
                _time(dispute.created_at),
                _dispute_version(event),
            )
        if refunds:
            await conn.executemany(
                _UPSERT_REFUND,
                [
                    (
                        r.refund_id,
                        r.payment_id,
                        r.provider,
                        r.provider_reference,
                        r.amount_paisa,
                        r.status,
                        r.kind,
                        r.processed_at,
                        r.settlement_date,
                        r.sequence,
                    )
                    for r in refunds
                ],
            )
    return True


class EventIngestor:
    """The `payments.events` handler: applies each event to the books, idempotently."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def __call__(self, consumed: ConsumedEvent) -> None:
        try:
            event = decode(consumed.value)
        except ValueError as exc:
            # A record that is not an event can never be applied: skip it, loudly.
            log.error(
                "skipping a record that is not a payment event",
                topic=consumed.topic,
                partition=consumed.partition,
                offset=consumed.offset,
                error=str(exc),
            )
            return
        async with self._pool.acquire() as conn:
            if await apply(conn, event):
                analytics_facts.observe(event)
