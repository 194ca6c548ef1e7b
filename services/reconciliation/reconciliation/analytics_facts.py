"""The facts analytics and the transactions report are computed from: one row per payment,
refund and dispute, as the latest event about it described it.

`record` runs inside the transaction that marks the event applied (events.apply), so an event
is reflected exactly once however often Kafka delivers it. Delivery may also replay an older
event after a newer one: each row keeps the event sequence it reflects and an older snapshot
never overwrites it (a refund event keeps its payment's sequence, so an equal sequence is the
next event of that payment on its partition, as for the books).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Histogram

from paygate.disputes.v1 import disputes_pb2
from paygate.events.v1 import events_pb2
from paygate.payments.v1 import payments_pb2

# Statuses in which the payment's money was captured: a successful payment.
SUCCESSFUL = ("SUCCESS", "PARTIALLY_REFUNDED", "REFUNDED")

# Each event id counts once (the first time it is applied), whichever replica consumed it: the
# dashboard's payments per second by method and outcome.
EVENTS = Counter(
    "payment_events_total",
    "Payment, refund and dispute events applied, each event id once, by type and method.",
    ["event_type", "payment_method"],
)
EVENT_LAG_SECONDS = Histogram(
    "payment_event_lag_seconds",
    "Time from an event's occurrence to its analytics facts being up to date (outbox relay,"
    " broker and consumer together).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
# The event types a label may take (the orchestrator's: payment.<status>, refund.*,
# dispute.*); anything else is counted as "other", so a label's values stay few.
_EVENT_TYPE = re.compile(r"(payment|refund|dispute)\.[a-z_]{1,30}")


@dataclass(frozen=True)
class PaymentFact:
    payment_id: str
    merchant_id: str
    payment_method: str
    provider: str
    status: str
    currency: str
    card_brand: str
    failure_reason: str
    fraud_decision: str
    provider_reference: str
    amount_paisa: int
    captured_paisa: int
    refunded_paisa: int
    fees_paisa: int
    tax_paisa: int
    created_at: datetime
    succeeded_at: datetime | None
    changed_at: datetime
    sequence: int


@dataclass(frozen=True)
class RefundFact:
    refund_id: str
    payment_id: str
    merchant_id: str
    kind: str
    status: str
    currency: str
    amount_paisa: int
    provider_reference: str
    failure_reason: str
    created_at: datetime
    processed_at: datetime | None
    sequence: int


@dataclass(frozen=True)
class DisputeFact:
    dispute_id: str
    payment_id: str
    merchant_id: str
    status: str
    phase: str
    reason_code: str
    currency: str
    amount_paisa: int
    created_at: datetime
    resolved_at: datetime | None
    sequence: int
    changed_at: datetime


def payment_facts(event: events_pb2.Event) -> tuple[PaymentFact, list[RefundFact]] | None:
    """The payment and refund facts of an event's payment snapshot; None without one."""
    payment = event.payment
    if not payment.payment_id:
        return None
    occurred = _time(event.occurred_at) if event.HasField("occurred_at") else datetime.now(UTC)
    status = payments_pb2.Payment.Status.Name(payment.status)
    created = _time(payment.created_at) if payment.HasField("created_at") else occurred
    merchant_id = payment.merchant_id or event.merchant_id
    fact = PaymentFact(
        payment_id=payment.payment_id,
        merchant_id=merchant_id,
        payment_method=payments_pb2.PaymentMethod.Name(payment.payment_method),
        provider=payment.provider,
        status=status,
        currency=payment.currency,
        card_brand=payment.card.brand,
        failure_reason=payment.failure_reason,
        fraud_decision=payment.fraud.decision,
        provider_reference=payment.external_txn_id,
        amount_paisa=payment.amount_paisa,
        captured_paisa=payment.captured_amount_paisa
        or (payment.amount_paisa if status in SUCCESSFUL else 0),
        refunded_paisa=payment.refunded_amount_paisa,
        fees_paisa=payment.fees_paisa,
        tax_paisa=payment.tax_paisa,
        created_at=created,
        succeeded_at=_succeeded_at(payment, status),
        changed_at=_time(payment.updated_at) if payment.HasField("updated_at") else occurred,
        sequence=event.sequence,
    )
    refunds = [
        RefundFact(
            refund_id=refund.refund_id,
            payment_id=payment.payment_id,
            merchant_id=merchant_id,
            kind=payments_pb2.Refund.Kind.Name(refund.kind),
            status=payments_pb2.Refund.Status.Name(refund.status),
            currency=refund.currency or payment.currency,
            amount_paisa=refund.amount_paisa,
            provider_reference=refund.external_refund_id,
            failure_reason=refund.failure_reason,
            created_at=_time(refund.created_at) if refund.HasField("created_at") else occurred,
            processed_at=_time(refund.processed_at) if refund.HasField("processed_at") else None,
            sequence=event.sequence,
        )
        for refund in payment.refunds
        if refund.refund_id
    ]
    return fact, refunds


def dispute_fact(event: events_pb2.Event) -> DisputeFact | None:
    """The dispute fact of a dispute.* event; None for other events."""
    dispute = event.dispute
    if not dispute.dispute_id:
        return None
    occurred = _time(event.occurred_at) if event.HasField("occurred_at") else datetime.now(UTC)
    return DisputeFact(
        dispute_id=dispute.dispute_id,
        payment_id=dispute.payment_id or event.payment_id,
        merchant_id=dispute.merchant_id or event.merchant_id,
        status=disputes_pb2.Dispute.Status.Name(dispute.status),
        phase=disputes_pb2.Dispute.Phase.Name(dispute.phase),
        reason_code=dispute.reason_code,
        currency=dispute.currency,
        amount_paisa=dispute.amount_paisa,
        created_at=_time(dispute.created_at) if dispute.HasField("created_at") else occurred,
        resolved_at=_time(dispute.resolved_at) if dispute.HasField("resolved_at") else None,
        sequence=event.sequence,
        changed_at=_time(dispute.updated_at) if dispute.HasField("updated_at") else occurred,
    )


def observe(event: events_pb2.Event) -> None:
    """Count an event applied for the first time, and how long it took to get here."""
    method = (
        payments_pb2.PaymentMethod.Name(event.payment.payment_method)
        if event.payment.payment_id
        else ""
    )
    event_type = event.type if _EVENT_TYPE.fullmatch(event.type) else "other"
    EVENTS.labels(event_type=event_type, payment_method=method).inc()
    if event.HasField("occurred_at"):
        lag = datetime.now(UTC) - _time(event.occurred_at)
        EVENT_LAG_SECONDS.observe(max(lag.total_seconds(), 0.0))


def _succeeded_at(payment: payments_pb2.Payment, status: str) -> datetime | None:
    """The payment's first move to SUCCESS; for a successful payment whose history lacks it,
    when it was processed."""
    for transition in payment.status_history:
        if transition.to_status == payments_pb2.Payment.SUCCESS and transition.HasField("at"):
            return _time(transition.at)
    if status in SUCCESSFUL and payment.HasField("processed_at"):
        return _time(payment.processed_at)
    return None


def _time(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


_UPSERT_PAYMENT = """
INSERT INTO analytics_payments (payment_id, merchant_id, payment_method, provider, status,
    currency, card_brand, failure_reason, fraud_decision, provider_reference, amount_paisa,
    captured_paisa, refunded_paisa, fees_paisa, tax_paisa, created_at, succeeded_at,
    changed_at, sequence)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT (payment_id) DO UPDATE SET
    merchant_id = EXCLUDED.merchant_id, payment_method = EXCLUDED.payment_method,
    provider = EXCLUDED.provider, status = EXCLUDED.status, currency = EXCLUDED.currency,
    card_brand = EXCLUDED.card_brand, failure_reason = EXCLUDED.failure_reason,
    fraud_decision = EXCLUDED.fraud_decision, provider_reference = EXCLUDED.provider_reference,
    amount_paisa = EXCLUDED.amount_paisa, captured_paisa = EXCLUDED.captured_paisa,
    refunded_paisa = EXCLUDED.refunded_paisa, fees_paisa = EXCLUDED.fees_paisa,
    tax_paisa = EXCLUDED.tax_paisa, created_at = EXCLUDED.created_at,
    succeeded_at = EXCLUDED.succeeded_at, changed_at = EXCLUDED.changed_at,
    sequence = EXCLUDED.sequence, updated_at = now()
WHERE analytics_payments.sequence <= EXCLUDED.sequence
"""

_UPSERT_REFUND = """
INSERT INTO analytics_refunds (refund_id, payment_id, merchant_id, kind, status, currency,
    amount_paisa, provider_reference, failure_reason, created_at, processed_at, sequence)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (refund_id) DO UPDATE SET
    kind = EXCLUDED.kind, status = EXCLUDED.status, currency = EXCLUDED.currency,
    amount_paisa = EXCLUDED.amount_paisa, provider_reference = EXCLUDED.provider_reference,
    failure_reason = EXCLUDED.failure_reason, created_at = EXCLUDED.created_at,
    processed_at = EXCLUDED.processed_at, sequence = EXCLUDED.sequence, updated_at = now()
WHERE analytics_refunds.sequence <= EXCLUDED.sequence
"""

_UPSERT_DISPUTE = """
INSERT INTO analytics_disputes (dispute_id, payment_id, merchant_id, status, phase,
    reason_code, currency, amount_paisa, created_at, resolved_at, sequence, changed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (dispute_id) DO UPDATE SET
    status = EXCLUDED.status, phase = EXCLUDED.phase, reason_code = EXCLUDED.reason_code,
    currency = EXCLUDED.currency, amount_paisa = EXCLUDED.amount_paisa,
    created_at = EXCLUDED.created_at, resolved_at = EXCLUDED.resolved_at,
    sequence = EXCLUDED.sequence, changed_at = EXCLUDED.changed_at, updated_at = now()
WHERE (analytics_disputes.sequence, analytics_disputes.changed_at)
    <= (EXCLUDED.sequence, EXCLUDED.changed_at)
"""


async def record(conn: asyncpg.Connection, event: events_pb2.Event) -> None:
    """Bring the facts the event describes up to date (call inside the event's transaction)."""
    described = payment_facts(event)
    if described is not None:
        payment, refunds = described
        await conn.execute(
            _UPSERT_PAYMENT,
            payment.payment_id,
            payment.merchant_id,
            payment.payment_method,
            payment.provider,
            payment.status,
            payment.currency,
            payment.card_brand,
            payment.failure_reason,
            payment.fraud_decision,
            payment.provider_reference,
            payment.amount_paisa,
            payment.captured_paisa,
            payment.refunded_paisa,
            payment.fees_paisa,
            payment.tax_paisa,
            payment.created_at,
            payment.succeeded_at,
            payment.changed_at,
            payment.sequence,
        )
        if refunds:
            await conn.executemany(
                _UPSERT_REFUND,
                [
                    (
                        r.refund_id,
                        r.payment_id,
                        r.merchant_id,
                        r.kind,
                        r.status,
                        r.currency,
                        r.amount_paisa,
                        r.provider_reference,
                        r.failure_reason,
                        r.created_at,
                        r.processed_at,
                        r.sequence,
                    )
                    for r in refunds
                ],
            )
    dispute = dispute_fact(event)
    if dispute is not None:
        await conn.execute(
            _UPSERT_DISPUTE,
            dispute.dispute_id,
            dispute.payment_id,
            dispute.merchant_id,
            dispute.status,
            dispute.phase,
            dispute.reason_code,
            dispute.currency,
            dispute.amount_paisa,
            dispute.created_at,
            dispute.resolved_at,
            dispute.sequence,
            dispute.changed_at,
        )
