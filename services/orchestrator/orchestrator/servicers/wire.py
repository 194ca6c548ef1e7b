"""The one home of the orchestrator's protobuf mapping: the domain model to wire messages, for
the servicers' answers and the outbox's event payloads."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from orchestrator.connectors.base import CardFields, DetailsInput
from orchestrator.connectors.upi.link import qr_png_data_url
from orchestrator.domain.payment import Dispute, Merchant, Payment, Refund
from orchestrator.domain.states import Status
from paygate.disputes.v1 import disputes_pb2
from paygate.events.v1 import events_pb2
from paygate.merchants.v1 import merchants_pb2
from paygate.payments.v1 import payments_pb2


def details_input(given: payments_pb2.PaymentDetails) -> DetailsInput:
    """A request's payment details for the connectors, which know no protobuf."""
    card = given.card
    return DetailsInput(
        vpa=given.vpa,
        upi_flow=given.upi_flow,
        wallet=given.wallet,
        phone=given.phone,
        bank_code=given.bank_code,
        card_token=given.card_token,
        card=CardFields(
            card_number=card.card_number,
            expiry_month=card.expiry_month,
            expiry_year=card.expiry_year,
            cvv=card.cvv,
            holder_name=card.holder_name,
        ),
        emi_plan_id=given.emi_plan_id,
    )


def merchant_message(record: Merchant) -> merchants_pb2.Merchant:
    return merchants_pb2.Merchant(
        merchant_id=record.merchant_id,
        name=record.name,
        email=record.email,
        vpa=record.vpa,
        category=record.category,
        status=record.status,
        created_at=_ts(record.created_at),
    )


def refund_message(record: Refund) -> payments_pb2.Refund:
    refund = payments_pb2.Refund(
        refund_id=record.refund_id,
        payment_id=record.payment_id,
        merchant_id=record.merchant_id,
        amount_paisa=record.amount_paisa,
        currency=record.currency,
        status=record.status,
        reason=record.reason,
        metadata=record.metadata,
        external_refund_id=record.external_refund_id,
        failure_reason=record.failure_reason,
        created_at=_ts(record.created_at),
        kind=record.kind,
    )
    if record.processed_at is not None:
        refund.processed_at.CopyFrom(_ts(record.processed_at))
    return refund


def payment_message(record: Payment, *, with_qr: bool = True) -> payments_pb2.Payment:
    """The wire form. The QR code is derived from the link, not stored; events skip it."""
    payment = payments_pb2.Payment(
        payment_id=record.payment_id,
        merchant_id=record.merchant_id,
        user_id=record.user_id,
        amount_paisa=record.amount_paisa,
        currency=record.currency,
        payment_method=record.payment_method,
        status=record.status.value,
        fees_paisa=record.fees_paisa,
        tax_paisa=record.tax_paisa,
        description=record.description,
        callback_url=record.callback_url,
        metadata=record.metadata,
        payment_url=record.payment_url,
        capture_method=record.capture_method,
        provider=record.provider,
        external_txn_id=record.external_txn_id,
        gateway_response=record.gateway_response,
        failure_reason=record.failure_reason,
        created_at=_ts(record.created_at),
        updated_at=_ts(record.updated_at),
    )
    details = record.payment_details.encode()
    # The stored details carry more than the wire's fields (last4, redirect_url, EMI terms).
    json_format.ParseDict(details, payment.payment_details, ignore_unknown_fields=True)
    if record.fraud is not None:
        payment.fraud.score = record.fraud.score
        payment.fraud.decision = record.fraud.decision
        payment.fraud.signals.extend(f"{s.name}:{s.points}" for s in record.fraud.signals)
    if details.get("last4"):
        payment.card.last4 = details["last4"]
        payment.card.brand = details.get("brand", "")
    if record.status in (Status.SUCCESS, Status.PARTIALLY_REFUNDED, Status.REFUNDED):
        payment.captured_amount_paisa = record.amount_paisa
    payment.refunded_amount_paisa = record.refunded_paisa
    payment.refunds.extend(refund_message(r) for r in record.refunds)
    payment.disputes.extend(dispute_message(d) for d in record.disputes)
    payment.attempts.extend(
        payments_pb2.PaymentAttempt(
            attempt_number=a.attempt_number,
            provider=a.provider,
            status=a.status,
            created_at=_ts(a.created_at),
        )
        for a in record.attempts
    )
    if record.status == Status.REQUIRES_ACTION and details.get("redirect_url"):
        payment.next_action.type = "REDIRECT"
        payment.next_action.redirect_url = details["redirect_url"]
    if record.expires_at is not None:
        payment.expires_at.CopyFrom(_ts(record.expires_at))
    if record.processed_at is not None:
        payment.processed_at.CopyFrom(_ts(record.processed_at))
    if with_qr and record.payment_url and record.status == Status.PENDING:
        payment.qr_code = qr_png_data_url(record.payment_url)
    for step in record.history:
        payment.status_history.add(
            from_status=payments_pb2.Payment.Status.Value(step.from_status)
            if step.from_status
            else payments_pb2.Payment.STATUS_UNSPECIFIED,
            to_status=payments_pb2.Payment.Status.Value(step.to_status),
            reason=step.reason,
            at=_ts(step.created_at),
        )
    return payment


def dispute_message(record: Dispute) -> disputes_pb2.Dispute:
    dispute = disputes_pb2.Dispute(
        dispute_id=record.dispute_id,
        payment_id=record.payment_id,
        merchant_id=record.merchant_id,
        provider=record.provider,
        provider_reference=record.provider_reference,
        amount_paisa=record.amount_paisa,
        currency=record.currency,
        reason_code=record.reason_code,
        reason=record.reason,
        phase=record.phase,
        status=record.status.value,
        respond_by=_ts(record.respond_by),
        # The fee with its GST: what the dispute cost the merchant whatever the outcome.
        fee_paisa=record.fee_paisa + record.tax_paisa,
        created_at=_ts(record.created_at),
        updated_at=_ts(record.updated_at),
    )
    if record.evidence is not None and record.evidence_submitted_at is not None:
        for name, text in record.evidence.items():
            setattr(dispute.evidence, name, text)
        dispute.evidence.submitted_at.CopyFrom(_ts(record.evidence_submitted_at))
    if record.resolved_at is not None:
        dispute.resolved_at.CopyFrom(_ts(record.resolved_at))
    return dispute


def encode_event(
    *,
    event_id: str,
    event_type: str,
    payment: Payment,
    sequence: int,
    refund: Refund | None = None,
    dispute: Dispute | None = None,
) -> bytes:
    """An outbox event's payload (`outbox.EventEncoder`): the events.v1.Event as JSON with
    proto field names. Events carry no QR code: it is derived from the link on reading."""
    event = events_pb2.Event(
        event_id=event_id,
        type=event_type,
        occurred_at=_ts(datetime.now(UTC)),
        merchant_id=payment.merchant_id,
        payment_id=payment.payment_id,
        payment=payment_message(payment, with_qr=False),
        sequence=sequence,
        refund=refund_message(refund) if refund is not None else None,
        dispute=dispute_message(dispute) if dispute is not None else None,
    )
    text = json_format.MessageToJson(
        event,
        preserving_proto_field_name=True,
        indent=None,
        always_print_fields_with_no_presence=False,
    )
    return text.encode()


def _ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
