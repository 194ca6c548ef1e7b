"""The orchestrator's domain model: merchants, payments and what hangs off a payment.

Plain data that knows neither SQL rows nor protobuf: the repository maps rows to it
(`orchestrator.rows`), the servicers map it to the wire (`orchestrator.servicers.wire`).
A payment is one intent to take money; each provider it was tried at is a `PaymentAttempt`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from orchestrator.domain.disputes import HOLDS_MONEY, DisputeStatus
from orchestrator.domain.states import Status


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    name: str
    email: str
    vpa: str
    category: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class EmiTerms:
    """The EMI plan a card payment chose at creation, as its authorization and capture use it."""

    tenure_months: int
    merchant_discount_paisa: int  # what a no-cost plan costs the merchant (0 otherwise)


@runtime_checkable
class MethodDetails(Protocol):
    """A payment method's details as the payment keeps them: each connector's own dataclass
    (connectors/<method>/details.py), encoded to the stored JSON and decoded back by it."""

    def encode(self) -> dict[str, str]:
        """The stored form (only the fields that are set), which the wire form also reads."""
        ...

    def emi_terms(self, amount_paisa: int) -> EmiTerms | None:
        """The EMI plan the payment chose (None: none, or a method without EMI)."""
        ...


@dataclass(frozen=True)
class FraudSignal:
    """One reason the fraud service gave for its score."""

    name: str
    points: int
    detail: str = ""


@dataclass(frozen=True)
class FraudVerdict:
    score: int
    decision: str  # ALLOW, REVIEW, BLOCK, or UNAVAILABLE (the scorer did not answer)
    signals: tuple[FraudSignal, ...] = field(default=())

    @property
    def blocks(self) -> bool:
        return self.decision == "BLOCK"

    @property
    def wants_step_up(self) -> bool:
        return self.decision == "REVIEW"


@dataclass(frozen=True)
class StatusChange:
    """One step of a payment's status history (`from_status` is None for its creation)."""

    from_status: Status | None
    to_status: Status
    reason: str
    created_at: datetime


@dataclass(frozen=True)
class PaymentAttempt:
    """One try of a payment at a provider, in order."""

    attempt_number: int
    provider: str
    status: str  # SERVING, UNAVAILABLE or SKIPPED
    created_at: datetime


@dataclass(frozen=True)
class Refund:
    refund_id: str
    payment_id: str
    merchant_id: str
    amount_paisa: int
    currency: str
    status: str
    reason: str
    metadata: dict[str, str]
    external_refund_id: str
    failure_reason: str
    created_at: datetime
    processed_at: datetime | None
    kind: str = "REFUND"  # or "REVERSAL": money a provider took after the payment closed


@dataclass(frozen=True)
class Dispute:
    dispute_id: str
    payment_id: str
    merchant_id: str
    provider: str
    provider_reference: str
    amount_paisa: int
    currency: str
    reason_code: str
    reason: str
    phase: str
    status: DisputeStatus
    respond_by: datetime
    fee_paisa: int
    tax_paisa: int
    evidence: dict[str, str] | None
    evidence_submitted_at: datetime | None
    provider_notified_at: datetime | None
    notify_after: datetime
    notify_attempts: int
    resolved_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Payment:
    payment_id: str
    merchant_id: str
    user_id: str
    amount_paisa: int
    currency: str
    payment_method: str
    status: Status
    fees_paisa: int
    tax_paisa: int
    description: str
    callback_url: str
    metadata: dict[str, str]
    payment_details: MethodDetails
    payment_url: str
    capture_method: str
    provider: str
    external_txn_id: str
    gateway_response: dict[str, str]
    failure_reason: str
    version: int
    fraud: FraudVerdict | None
    expires_at: datetime | None
    processed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # While CAPTURING or CANCELLING: what is at the provider, and the status it started from.
    operation: str | None
    operation_from: str | None
    job_failures: int
    history: tuple[StatusChange, ...] = field(default=())
    refunds: tuple[Refund, ...] = field(default=())
    disputes: tuple[Dispute, ...] = field(default=())
    attempts: tuple[PaymentAttempt, ...] = field(default=())

    @property
    def refunded_paisa(self) -> int:
        return sum(r.amount_paisa for r in self.refunds if r.status == "PROCESSED")

    @property
    def refund_reserved_paisa(self) -> int:
        """Refunds processed or still in flight: what can no longer be refunded."""
        return sum(r.amount_paisa for r in self.refunds if r.status in ("PENDING", "PROCESSED"))

    @property
    def disputed_paisa(self) -> int:
        """What disputes hold for the customer: every dispute not won by the merchant."""
        return sum(d.amount_paisa for d in self.disputes if d.status in HOLDS_MONEY)
