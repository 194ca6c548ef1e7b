"""Storage-side records of merchants, payments and what hangs off them (the rows the
repository maps); their wire form is servicers/wire.py's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.domain.disputes import HOLDS_MONEY, DisputeStatus
from orchestrator.domain.states import Status


@dataclass(frozen=True)
class MerchantRecord:
    merchant_id: str
    name: str
    email: str
    vpa: str
    category: str
    status: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MerchantRecord:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TransitionRecord:
    from_status: str | None
    to_status: str
    reason: str
    created_at: datetime


@dataclass(frozen=True)
class AttemptRecord:
    """One try of a payment at a provider (see payment_attempts in migration 0012)."""

    attempt_number: int
    provider: str
    status: str  # SERVING, UNAVAILABLE or SKIPPED
    created_at: datetime


@dataclass(frozen=True)
class RefundRecord:
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

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RefundRecord:
        values = {f: row[f] for f in cls.__dataclass_fields__}
        values["currency"] = values["currency"].strip()
        return cls(**values)


@dataclass(frozen=True)
class PaymentRecord:
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
    payment_details: dict[str, str]
    payment_url: str
    capture_method: str
    provider: str
    external_txn_id: str
    gateway_response: dict[str, str]
    failure_reason: str
    version: int
    fraud_score: int | None
    fraud_decision: str | None
    fraud_signals: list[dict[str, Any]]
    expires_at: datetime | None
    processed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # While CAPTURING or CANCELLING: what is at the provider, and the status it started from.
    operation: str | None
    operation_from: str | None
    job_failures: int
    history: tuple[TransitionRecord, ...] = field(default=())
    refunds: tuple[RefundRecord, ...] = field(default=())
    disputes: tuple[DisputeRecord, ...] = field(default=())
    attempts: tuple[AttemptRecord, ...] = field(default=())

    @classmethod
    def from_row(
        cls,
        row: Mapping[str, Any],
        history: tuple[TransitionRecord, ...] = (),
        refunds: tuple[RefundRecord, ...] = (),
        disputes: tuple[DisputeRecord, ...] = (),
        attempts: tuple[AttemptRecord, ...] = (),
    ) -> PaymentRecord:
        values = {
            f: row[f]
            for f in cls.__dataclass_fields__
            if f not in ("history", "refunds", "disputes", "attempts")
        }
        values["status"] = Status(values["status"])
        values["currency"] = values["currency"].strip()
        return cls(**values, history=history, refunds=refunds, disputes=disputes, attempts=attempts)

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


@dataclass(frozen=True)
class DisputeRecord:
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

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DisputeRecord:
        values = {f: row[f] for f in cls.__dataclass_fields__}
        values["status"] = DisputeStatus(values["status"])
        values["currency"] = values["currency"].strip()
        return cls(**values)
