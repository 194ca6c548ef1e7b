"""The payment lifecycle, pure: `decide(payment, event) -> Decision`.

Given a payment as stored and what happened to it, `decide` says what follows, as data: the
status change (if any, checked against the state machine in domain/states.py), and its effects
(events to publish, ledger postings, the EMI discount, when to ask the provider next, the
refund opened and whether it may be). It reads no clock of its own (`now` comes in the
event) and touches no storage: `Repository.persist` carries a Decision out in one transaction.

A refused event raises the client error the merchant sees (ILLEGAL_TRANSITION, a refund above
what is refundable, ...); an event that changes nothing returns `Decision.nothing()`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gateway_core.errors import Aborted, FailedPrecondition, GatewayError, invalid_field
from gateway_core.fees import Fee
from orchestrator.domain.ledger import (
    JournalEntry,
    capture_entry,
    emi_discount_entry,
    refund_entry,
)
from orchestrator.domain.payment import Payment, Refund
from orchestrator.domain.states import (
    CAPTURED,
    CLOSED_UNPAID,
    EVENT_FOR_STATUS,
    IN_OPERATION,
    OPEN,
    Status,
    can_transition,
    ensure_transition,
)

# Columns a status change may set alongside the status.
CHANGEABLE = frozenset(
    {
        "external_txn_id",
        "gateway_response",
        "failure_reason",
        "processed_at",
        "payment_details",
        "provider",
        "expires_at",
        "operation",
        "operation_from",
    }
)
REASON_IN_PROGRESS = "PAYMENT_OPERATION_IN_PROGRESS"

# Events: what happened to a payment, or what is asked of it.


@dataclass(frozen=True)
class Report:
    """Move the payment to `target` (a provider's report, a job, the flow engine).

    strict (a merchant's request): an illegal move raises. Otherwise an impossible move is
    nothing, so late or repeated reports never overwrite a final status. only_from: nothing
    unless the payment is in one of these now (a job finishing what it started must not
    finish someone else's operation)."""

    target: Status
    reason: str
    now: datetime
    changes: Mapping[str, Any] = field(default_factory=dict)
    strict: bool = False
    only_from: frozenset[Status] | None = None
    inquire_after: timedelta | None = None  # still open: ask the provider again this soon


@dataclass(frozen=True)
class Claim:
    """Hold the payment for an operation at the provider: CAPTURE (to CAPTURING), CANCEL or
    EXPIRE (to CANCELLING). `refusal(status)` is the error when it is not `allowed_from`."""

    operation: str
    allowed_from: frozenset[Status]
    refusal: Callable[[Status], GatewayError]
    reason: str
    now: datetime
    inquire_after: timedelta


@dataclass(frozen=True)
class RefundAsked:
    """The merchant asks to refund `amount_paisa` (None: everything still refundable)."""

    refund_id: str
    amount_paisa: int | None
    reason: str
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class RefundSettled:
    """The provider's answer on a refund, already recorded on `refund` (PROCESSED/FAILED)."""

    refund: Refund


@dataclass(frozen=True)
class LateSuccess:
    """A provider took the money of a payment the gateway had closed (or is cancelling)."""

    refund_id: str
    reason: str
    changes: Mapping[str, Any] = field(default_factory=dict)


Event = Report | Claim | RefundAsked | RefundSettled | LateSuccess

# Effects, carried out in order by Repository.persist.


@dataclass(frozen=True)
class Enter:
    """The status change: the payment enters `target` (history row, version + 1)."""

    source: Status
    target: Status
    reason: str
    changes: Mapping[str, Any]


@dataclass(frozen=True)
class SetColumns:
    """Columns changed without a status change."""

    changes: Mapping[str, Any]


@dataclass(frozen=True)
class ScheduleInquiry:
    """When to ask the provider next; None: nothing is left to ask."""

    at: datetime | None


@dataclass(frozen=True)
class OpenRefund:
    """A PENDING refund. If it exists already the decision was carried out before: the
    effects after it are skipped."""

    refund_id: str
    amount_paisa: int
    reason: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    kind: str = "REFUND"  # or "REVERSAL"


@dataclass(frozen=True)
class Post:
    """A ledger journal entry."""

    entry: JournalEntry


@dataclass(frozen=True)
class PublishPayment:
    """A payment event, carrying the payment as it stands after the effects before it."""

    event_type: str


@dataclass(frozen=True)
class PublishRefund:
    event_type: str
    refund_id: str


Effect = Enter | SetColumns | ScheduleInquiry | OpenRefund | Post | PublishPayment | PublishRefund


@dataclass(frozen=True)
class Decision:
    effects: tuple[Effect, ...] = ()

    @classmethod
    def nothing(cls) -> Decision:
        return cls()

    @property
    def applied(self) -> bool:
        return bool(self.effects)

    @property
    def transition(self) -> Enter | None:
        return next((e for e in self.effects if isinstance(e, Enter)), None)


def decide(payment: Payment, event: Event) -> Decision:
    if isinstance(event, Report):
        return _report(payment, event)
    if isinstance(event, Claim):
        return _claim(payment, event)
    if isinstance(event, RefundAsked):
        return _refund_asked(payment, event)
    if isinstance(event, RefundSettled):
        return _refund_settled(payment, event)
    return _late_success(payment, event)


def _report(payment: Payment, event: Report) -> Decision:
    if event.only_from is not None and payment.status not in event.only_from:
        return Decision.nothing()
    if payment.status == event.target or (
        not event.strict and not can_transition(payment.status, event.target)
    ):
        return Decision.nothing()
    inquiry = event.now + event.inquire_after if event.inquire_after is not None else None
    return Decision(_enter(payment, event.target, event.reason, event.changes, inquiry))


def _claim(payment: Payment, event: Claim) -> Decision:
    if payment.status in IN_OPERATION:
        raise Aborted(
            f"payment {payment.payment_id} is {payment.status}: another operation is at the "
            "provider; retry when it has finished",
            reason=REASON_IN_PROGRESS,
            metadata={"status": payment.status.value},
        )
    if payment.status not in event.allowed_from:
        raise event.refusal(payment.status)
    target = Status.CAPTURING if event.operation == "CAPTURE" else Status.CANCELLING
    changes = {"operation": event.operation, "operation_from": payment.status.value}
    inquiry = event.now + event.inquire_after
    return Decision(_enter(payment, target, event.reason, changes, inquiry))


def _enter(
    payment: Payment,
    target: Status,
    reason: str,
    changes: Mapping[str, Any],
    inquiry: datetime | None,
) -> tuple[Effect, ...]:
    """The effects of entering `target`: the change, when to ask next, the postings a capture
    makes, and the event that announces it."""
    ensure_transition(payment.status, target)
    unknown = set(changes) - CHANGEABLE
    if unknown:
        raise ValueError(f"not changeable with a transition: {sorted(unknown)}")
    columns = dict(changes)
    if target not in IN_OPERATION:
        columns.setdefault("operation", None)
        columns.setdefault("operation_from", None)
    effects: list[Effect] = [Enter(payment.status, target, reason, columns)]
    if inquiry is not None:
        effects.append(ScheduleInquiry(inquiry))
    elif target not in OPEN and target not in IN_OPERATION:
        effects.append(ScheduleInquiry(None))  # nothing left to ask the provider
    if target == Status.SUCCESS:
        effects.extend(_capture_postings(payment, columns.get("provider", payment.provider)))
    effects.append(PublishPayment(EVENT_FOR_STATUS[target]))
    return tuple(effects)


def _capture_postings(payment: Payment, provider: str) -> list[Effect]:
    """The capture journal, and a no-cost EMI's discount as the card chose it at creation."""
    postings: list[Effect] = [
        Post(
            capture_entry(
                payment_id=payment.payment_id,
                merchant_id=payment.merchant_id,
                provider=provider,
                currency=payment.currency,
                amount_paisa=payment.amount_paisa,
                fee=Fee(payment.fees_paisa, payment.tax_paisa),
            )
        )
    ]
    terms = payment.payment_details.emi_terms(payment.amount_paisa)
    if terms is not None and terms.merchant_discount_paisa:
        postings.append(
            Post(
                emi_discount_entry(
                    payment_id=payment.payment_id,
                    merchant_id=payment.merchant_id,
                    provider=provider,
                    currency=payment.currency,
                    discount_paisa=terms.merchant_discount_paisa,
                )
            )
        )
    return postings


def refundable_paisa(payment: Payment) -> int:
    """What may still be refunded: the capture less refunds processed or in flight, less what
    disputes took (or may keep) back for the customer."""
    return payment.amount_paisa - payment.refund_reserved_paisa - payment.disputed_paisa


def _refund_asked(payment: Payment, event: RefundAsked) -> Decision:
    if payment.status not in CAPTURED:
        raise FailedPrecondition(
            f"only captured payments can be refunded; this one is {payment.status}",
            reason="PAYMENT_NOT_CAPTURED",
        )
    refundable = refundable_paisa(payment)
    amount = refundable if event.amount_paisa is None else event.amount_paisa
    if amount <= 0 or amount > refundable:
        raise invalid_field(
            "amount_paisa",
            f"must be between 1 and the refundable {refundable} paisa",
            reason="REFUND_EXCEEDS_CAPTURED",
        )
    return Decision(
        (
            OpenRefund(event.refund_id, amount, event.reason, event.metadata),
            PublishRefund("refund.created", event.refund_id),
        )
    )


def _refund_settled(payment: Payment, event: RefundSettled) -> Decision:
    refund = event.refund
    if refund.status != "PROCESSED":
        return Decision((PublishRefund("refund.failed", refund.refund_id),))
    effects: list[Effect] = [
        Post(
            refund_entry(
                payment_id=payment.payment_id,
                refund_id=refund.refund_id,
                merchant_id=payment.merchant_id,
                provider=payment.provider,
                currency=payment.currency,
                amount_paisa=refund.amount_paisa,
            )
        ),
        PublishRefund("refund.processed", refund.refund_id),
    ]
    if refund.kind != "REVERSAL":  # a reversed payment stays closed; its money went back
        target = (
            Status.REFUNDED
            if payment.refunded_paisa >= payment.amount_paisa
            else Status.PARTIALLY_REFUNDED
        )
        effects.extend(_enter(payment, target, f"refund {refund.refund_id}", {}, None))
    return Decision(tuple(effects))


def _late_success(payment: Payment, event: LateSuccess) -> Decision:
    """Book what happened and open the refund that gives it back. The payment stays closed (a
    CANCELLING one becomes CANCELLED: the merchant's cancel stands); the capture is posted
    without a fee (the merchant never sold anything) and the fee shown goes to zero."""
    effects: list[Effect] = []
    if payment.status == Status.CANCELLING and payment.operation_from in OPEN:
        effects.extend(_enter(payment, Status.CANCELLED, event.reason, event.changes, None))
    elif payment.status in CLOSED_UNPAID:
        if event.changes:
            effects.append(SetColumns(event.changes))
    else:
        return Decision.nothing()  # not closed: nothing to reverse
    effects += [
        OpenRefund(event.refund_id, payment.amount_paisa, event.reason, kind="REVERSAL"),
        SetColumns({"fees_paisa": 0, "tax_paisa": 0}),
        Post(
            capture_entry(
                payment_id=payment.payment_id,
                merchant_id=payment.merchant_id,
                provider=event.changes.get("provider", payment.provider),
                currency=payment.currency,
                amount_paisa=payment.amount_paisa,
                fee=Fee(0, 0),
            )
        ),
        PublishRefund("refund.created", event.refund_id),
    ]
    return Decision(tuple(effects))
