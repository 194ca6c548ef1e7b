"""Storage-side records of merchants and payments, and their mapping to the wire messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from orchestrator.connectors.upi.link import qr_png_data_url
from orchestrator.domain.disputes import HOLDS_MONEY, DisputeStatus
from orchestrator.domain.states import Status
from paygate.disputes.v1 import disputes_pb2
from paygate.merchants.v1 import merchants_pb2
from paygate.payments.v1 import payments_pb2


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

    def to_proto(self) -> merchants_pb2.Merchant:
        return merchants_pb2.Merchant(
            merchant_id=self.merchant_id,
            name=self.name,
            email=self.email,
            vpa=self.vpa,
            category=self.category,
            status=self.status,
            created_at=_ts(self.created_at),
        )


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

    def to_proto(self) -> payments_pb2.Refund:
        refund = payments_pb2.Refund(
            refund_id=self.refund_id,
            payment_id=self.payment_id,
            merchant_id=self.merchant_id,
            amount_paisa=self.amount_paisa,
            currency=self.currency,
            status=self.status,
            reason=self.reason,
            metadata=self.metadata,
            external_refund_id=self.external_refund_id,
            failure_reason=self.failure_reason,
            created_at=_ts(self.created_at),
            kind=self.kind,
        )
        if self.processed_at is not None:
            refund.processed_at.CopyFrom(_ts(self.processed_at))
        return refund


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

    def to_proto(self, *, with_qr: bool = True) -> payments_pb2.Payment:
        """The wire form. The QR code is derived from the link, not stored; events skip it."""
        payment = payments_pb2.Payment(
            payment_id=self.payment_id,
            merchant_id=self.merchant_id,
            user_id=self.user_id,
            amount_paisa=self.amount_paisa,
            currency=self.currency,
            payment_method=self.payment_method,
            status=self.status.value,
            fees_paisa=self.fees_paisa,
            tax_paisa=self.tax_paisa,
            description=self.description,
            callback_url=self.callback_url,
            metadata=self.metadata,
            payment_url=self.payment_url,
            capture_method=self.capture_method,
            provider=self.provider,
            external_txn_id=self.external_txn_id,
            gateway_response=self.gateway_response,
            failure_reason=self.failure_reason,
            created_at=_ts(self.created_at),
            updated_at=_ts(self.updated_at),
        )
        # Stored details may carry provider extras (redirect_url) that are not wire fields.
        json_format.ParseDict(
            self.payment_details, payment.payment_details, ignore_unknown_fields=True
        )
        if self.fraud_decision:
            payment.fraud.score = self.fraud_score or 0
            payment.fraud.decision = self.fraud_decision
            payment.fraud.signals.extend(f"{s['name']}:{s['points']}" for s in self.fraud_signals)
        if self.payment_details.get("last4"):
            payment.card.last4 = self.payment_details["last4"]
            payment.card.brand = self.payment_details.get("brand", "")
        if self.status in (Status.SUCCESS, Status.PARTIALLY_REFUNDED, Status.REFUNDED):
            payment.captured_amount_paisa = self.amount_paisa
        payment.refunded_amount_paisa = self.refunded_paisa
        payment.refunds.extend(r.to_proto() for r in self.refunds)
        payment.disputes.extend(d.to_proto() for d in self.disputes)
        payment.attempts.extend(
            payments_pb2.PaymentAttempt(
                attempt_number=a.attempt_number,
                provider=a.provider,
                status=a.status,
                created_at=_ts(a.created_at),
            )
            for a in self.attempts
        )
        if self.status == Status.REQUIRES_ACTION and self.payment_details.get("redirect_url"):
            payment.next_action.type = "REDIRECT"
            payment.next_action.redirect_url = self.payment_details["redirect_url"]
        if self.expires_at is not None:
            payment.expires_at.CopyFrom(_ts(self.expires_at))
        if self.processed_at is not None:
            payment.processed_at.CopyFrom(_ts(self.processed_at))
        if with_qr and self.payment_url and self.status == Status.PENDING:
            payment.qr_code = qr_png_data_url(self.payment_url)
        for step in self.history:
            payment.status_history.add(
                from_status=payments_pb2.Payment.Status.Value(step.from_status)
                if step.from_status
                else payments_pb2.Payment.STATUS_UNSPECIFIED,
                to_status=payments_pb2.Payment.Status.Value(step.to_status),
                reason=step.reason,
                at=_ts(step.created_at),
            )
        return payment


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

    def to_proto(self) -> disputes_pb2.Dispute:
        dispute = disputes_pb2.Dispute(
            dispute_id=self.dispute_id,
            payment_id=self.payment_id,
            merchant_id=self.merchant_id,
            provider=self.provider,
            provider_reference=self.provider_reference,
            amount_paisa=self.amount_paisa,
            currency=self.currency,
            reason_code=self.reason_code,
            reason=self.reason,
            phase=self.phase,
            status=self.status.value,
            respond_by=_ts(self.respond_by),
            # The fee with its GST: what the dispute cost the merchant whatever the outcome.
            fee_paisa=self.fee_paisa + self.tax_paisa,
            created_at=_ts(self.created_at),
            updated_at=_ts(self.updated_at),
        )
        if self.evidence is not None and self.evidence_submitted_at is not None:
            for name, text in self.evidence.items():
                setattr(dispute.evidence, name, text)
            dispute.evidence.submitted_at.CopyFrom(_ts(self.evidence_submitted_at))
        if self.resolved_at is not None:
            dispute.resolved_at.CopyFrom(_ts(self.resolved_at))
        return dispute


def _ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
