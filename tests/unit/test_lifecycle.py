"""The payment lifecycle as a pure function: given a payment and what happened, the status
change and its effects (events, ledger postings, the EMI discount, inquiry scheduling, refund
eligibility), with no server and no clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from gateway_core.errors import Aborted, FailedPrecondition, InvalidArgument
from orchestrator.connectors.card import CardDetails, emi
from orchestrator.domain.ledger import AccountKind
from orchestrator.domain.payment import Payment, Refund
from orchestrator.domain.states import OPEN, Status
from orchestrator.lifecycle import (
    Claim,
    Enter,
    LateSuccess,
    OpenRefund,
    Post,
    PublishPayment,
    PublishRefund,
    RefundAsked,
    RefundSettled,
    Report,
    ScheduleInquiry,
    SetColumns,
    decide,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
MakePayment = Callable[..., Payment]


def refund(amount: int, status: str = "PROCESSED", kind: str = "REFUND") -> Refund:
    return Refund(
        refund_id=f"RFD_{amount}_{status}",
        payment_id="PAY_TEST1",
        merchant_id="MER_TEST1",
        amount_paisa=amount,
        currency="INR",
        status=status,
        reason="",
        metadata={},
        external_refund_id="",
        failure_reason="",
        created_at=NOW,
        processed_at=NOW,
        kind=kind,
    )


def kinds(effects: tuple[object, ...]) -> list[str]:
    return [type(effect).__name__ for effect in effects]


def test_a_capture_enters_success_books_it_and_announces_it(make_payment: MakePayment) -> None:
    payment = make_payment(status=Status.PENDING, fees_paisa=400, tax_paisa=72)
    decision = decide(payment, Report(Status.SUCCESS, "callback", NOW, {"provider": "payu"}))
    assert kinds(decision.effects) == ["Enter", "ScheduleInquiry", "Post", "PublishPayment"]
    assert decision.transition == Enter(
        Status.PENDING,
        Status.SUCCESS,
        "callback",
        {"provider": "payu", "operation": None, "operation_from": None},
    )
    assert decision.effects[1] == ScheduleInquiry(None)  # nothing left to ask the provider
    posting = decision.effects[2]
    assert isinstance(posting, Post)
    assert posting.entry.kind == "capture"
    lines = {(p.account.kind, p.account.owner): p.amount_paisa for p in posting.entry.postings}
    assert lines[AccountKind.PROVIDER_CLEARING, "payu"] == 20_000
    assert lines[AccountKind.FEE_REVENUE, ""] == -400
    assert decision.effects[3] == PublishPayment("payment.success")


def test_a_no_cost_emi_capture_posts_the_discount_chosen_at_creation(
    make_payment: MakePayment,
) -> None:
    plan = next(p for p in emi.plans_for(600_000) if p.merchant_discount_paisa)
    payment = make_payment(
        status=Status.PENDING,
        amount_paisa=600_000,
        payment_details=CardDetails(
            card_token="tok_1",
            brand="VISA",
            emi_plan_id=plan.plan_id,
            emi_tenure_months=plan.tenure_months,
            emi_merchant_discount_paisa=plan.merchant_discount_paisa,
        ),
    )
    decision = decide(payment, Report(Status.SUCCESS, "authorized", NOW))
    entries = [e.entry for e in decision.effects if isinstance(e, Post)]
    assert [e.kind for e in entries] == ["capture", "adjustment"]
    assert entries[1].journal_id.endswith(":emi_discount")
    assert max(p.amount_paisa for p in entries[1].postings) == plan.merchant_discount_paisa


def test_an_open_payment_is_asked_about_again_when_told(make_payment: MakePayment) -> None:
    decision = decide(
        make_payment(status=Status.CREATED),
        Report(Status.PENDING, "waiting", NOW, inquire_after=timedelta(seconds=10)),
    )
    assert ScheduleInquiry(NOW + timedelta(seconds=10)) in decision.effects
    assert decision.effects[-1] == PublishPayment("payment.pending")


@pytest.mark.parametrize(
    ("status", "target"),
    [
        (Status.SUCCESS, Status.SUCCESS),
        (Status.FAILED, Status.SUCCESS),
        (Status.EXPIRED, Status.PENDING),
    ],
)
def test_a_late_or_repeated_report_changes_nothing(
    make_payment: MakePayment, status: Status, target: Status
) -> None:
    assert not decide(make_payment(status=status), Report(target, "late", NOW)).applied


def test_a_merchants_illegal_move_is_a_clear_error(make_payment: MakePayment) -> None:
    with pytest.raises(FailedPrecondition) as info:
        decide(make_payment(status=Status.FAILED), Report(Status.SUCCESS, "x", NOW, strict=True))
    assert info.value.reason == "ILLEGAL_TRANSITION"


def test_a_job_finishes_only_what_it_started(make_payment: MakePayment) -> None:
    payment = make_payment(status=Status.AUTHORIZED)
    event = Report(Status.FAILED, "x", NOW, only_from=OPEN)
    assert not decide(payment, event).applied


def test_a_claim_holds_the_payment_and_schedules_the_safety_inquiry(
    make_payment: MakePayment,
) -> None:
    payment = make_payment(status=Status.AUTHORIZED)
    event = Claim(
        "CAPTURE",
        frozenset({Status.AUTHORIZED}),
        lambda s: Aborted(f"{s}", reason="PAYMENT_NOT_AUTHORIZED"),
        "captured by the merchant",
        NOW,
        timedelta(seconds=5),
    )
    decision = decide(payment, event)
    assert decision.transition is not None
    assert decision.transition.target == Status.CAPTURING
    assert decision.transition.changes == {"operation": "CAPTURE", "operation_from": "AUTHORIZED"}
    assert ScheduleInquiry(NOW + timedelta(seconds=5)) in decision.effects


def test_a_second_operation_waits_and_a_wrong_status_gets_the_callers_refusal(
    make_payment: MakePayment,
) -> None:
    def claim(status: Status) -> None:
        decide(
            make_payment(status=status),
            Claim(
                "CAPTURE",
                frozenset({Status.AUTHORIZED}),
                lambda s: FailedPrecondition(f"{s}", reason="PAYMENT_NOT_AUTHORIZED"),
                "",
                NOW,
                timedelta(seconds=5),
            ),
        )

    with pytest.raises(Aborted) as busy:
        claim(Status.CANCELLING)
    assert busy.value.reason == "PAYMENT_OPERATION_IN_PROGRESS"
    with pytest.raises(FailedPrecondition) as refused:
        claim(Status.PENDING)
    assert refused.value.reason == "PAYMENT_NOT_AUTHORIZED"


def test_only_a_captured_payment_is_refundable(make_payment: MakePayment) -> None:
    with pytest.raises(FailedPrecondition) as info:
        decide(make_payment(status=Status.AUTHORIZED), RefundAsked("RFD_1", None, "", {}))
    assert info.value.reason == "PAYMENT_NOT_CAPTURED"


def test_a_refund_takes_what_is_left_and_never_more(make_payment: MakePayment) -> None:
    payment = make_payment(
        status=Status.PARTIALLY_REFUNDED,
        refunds=(refund(5_000), refund(3_000, "PENDING"), refund(1_000, "FAILED")),
    )
    decision = decide(payment, RefundAsked("RFD_1", None, "", {}))
    assert decision.effects == (
        OpenRefund("RFD_1", 12_000, "", {}),
        PublishRefund("refund.created", "RFD_1"),
    )
    with pytest.raises(InvalidArgument) as info:
        decide(payment, RefundAsked("RFD_2", 12_001, "", {}))
    assert info.value.reason == "REFUND_EXCEEDS_CAPTURED"


def test_a_processed_refund_is_booked_announced_then_moves_the_payment(
    make_payment: MakePayment,
) -> None:
    partial = refund(5_000)
    payment = make_payment(status=Status.SUCCESS, refunds=(partial,))
    decision = decide(payment, RefundSettled(partial))
    assert kinds(decision.effects) == [
        "Post",
        "PublishRefund",
        "Enter",
        "ScheduleInquiry",
        "PublishPayment",
    ]
    assert decision.transition is not None
    assert decision.transition.target == Status.PARTIALLY_REFUNDED
    full = make_payment(status=Status.PARTIALLY_REFUNDED, refunds=(partial, refund(15_000)))
    last = decide(full, RefundSettled(refund(15_000)))
    assert last.transition is not None
    assert last.transition.target == Status.REFUNDED


def test_a_failed_refund_is_only_announced(make_payment: MakePayment) -> None:
    failed = refund(5_000, "FAILED")
    decision = decide(make_payment(status=Status.SUCCESS, refunds=(failed,)), RefundSettled(failed))
    assert decision.effects == (PublishRefund("refund.failed", failed.refund_id),)


def test_a_processed_reversal_leaves_the_closed_payment_closed(make_payment: MakePayment) -> None:
    reversal = refund(20_000, kind="REVERSAL")
    payment = make_payment(status=Status.CANCELLED, refunds=(reversal,))
    decision = decide(payment, RefundSettled(reversal))
    assert decision.transition is None
    assert kinds(decision.effects) == ["Post", "PublishRefund"]


def test_a_late_success_on_a_cancel_closes_it_and_reverses_without_a_fee(
    make_payment: MakePayment,
) -> None:
    payment = make_payment(
        status=Status.CANCELLING, operation="CANCEL", operation_from="PENDING", fees_paisa=400
    )
    decision = decide(payment, LateSuccess("REV_PAY_TEST1", "paid late", {"provider": "payu"}))
    assert decision.transition is not None
    assert decision.transition.target == Status.CANCELLED
    assert OpenRefund("REV_PAY_TEST1", 20_000, "paid late", kind="REVERSAL") in decision.effects
    assert SetColumns({"fees_paisa": 0, "tax_paisa": 0}) in decision.effects
    capture = next(e.entry for e in decision.effects if isinstance(e, Post))
    lines = {(p.account.kind, p.account.owner): p.amount_paisa for p in capture.postings}
    assert (AccountKind.FEE_REVENUE, "") not in lines
    assert lines[AccountKind.PROVIDER_CLEARING, "payu"] == 20_000


def test_a_late_success_on_a_paid_payment_reverses_nothing(make_payment: MakePayment) -> None:
    assert not decide(make_payment(status=Status.SUCCESS), LateSuccess("REV", "x")).applied
