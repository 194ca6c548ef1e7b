"""Matching: every settlement line ends in exactly one outcome, decided against our books."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

from reconciliation.matching import (
    BookPayment,
    BookRefund,
    Books,
    Outcome,
    classify,
    ist_date,
    overdue_on,
    settlement_deadline,
)
from reconciliation.settlement_file import SettlementLine

AT = datetime(2026, 12, 5, 18, 29, 59, tzinfo=UTC)
PAYMENT = BookPayment(
    payment_id="PAY_1",
    provider_reference="RRN1",
    status="SUCCESS",
    captured_paisa=50_000,
    fees_paisa=950,
    tax_paisa=171,
    settled=False,
)
REFUND = BookRefund(
    refund_id="RFD_1",
    payment_id="PAY_1",
    provider_reference="RFN1",
    status="PROCESSED",
    amount_paisa=20_000,
    settled=False,
)


def line(**changes: object) -> SettlementLine:
    base = SettlementLine(
        line_number=2,
        provider_reference="RRN1",
        merchant_reference="PAY_1",
        type="payment",
        amount_paisa=50_000,
        fee_paisa=950,
        tax_paisa=171,
        settled_at=AT,
        settlement_id="setl_1",
        utr="UTR1",
        method="WALLET",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def books(payment: BookPayment | None = PAYMENT, refund: BookRefund | None = REFUND) -> Books:
    return Books(
        payments_by_reference={payment.provider_reference: payment} if payment else {},
        payments_by_id={payment.payment_id: payment} if payment else {},
        refunds_by_reference={refund.provider_reference: refund} if refund else {},
        refunds_by_id={refund.refund_id: refund} if refund else {},
    )


def test_a_line_that_agrees_is_matched_and_settles_the_payment() -> None:
    taken: set[str] = set()
    verdict = classify(line(), books(), taken)
    assert (verdict.outcome, verdict.payment_id, verdict.settles) == (
        Outcome.MATCHED,
        "PAY_1",
        "PAY_1",
    )
    assert taken == {"PAY_1"}


def test_our_id_finds_the_payment_when_the_reference_is_unknown() -> None:
    verdict = classify(line(provider_reference="OTHER"), books(), set())
    assert (verdict.outcome, verdict.payment_id) == (Outcome.MATCHED, "PAY_1")


def test_the_second_line_for_a_payment_is_a_duplicate_in_the_file_or_across_files() -> None:
    taken: set[str] = set()
    first, second = (classify(line(line_number=n), books(), taken) for n in (2, 3))
    assert (first.outcome, second.outcome) == (Outcome.MATCHED, Outcome.DUPLICATE)
    assert second.settles is None
    settled_before = books(replace(PAYMENT, settled=True))
    assert classify(line(), settled_before, set()).outcome is Outcome.DUPLICATE


def test_a_different_amount_or_fee_is_its_own_outcome_with_both_values() -> None:
    short = classify(line(amount_paisa=49_900), books(), set())
    assert (short.outcome, short.expected, short.actual) == (
        Outcome.AMOUNT_MISMATCH,
        "50000",
        "49900",
    )
    assert short.settles == "PAY_1"
    fee = classify(line(fee_paisa=1050, tax_paisa=189), books(), set())
    assert (fee.outcome, fee.expected, fee.actual) == (Outcome.FEE_MISMATCH, "950/171", "1050/189")
    tax = classify(line(tax_paisa=170), books(), set())
    assert tax.outcome is Outcome.FEE_MISMATCH


def test_settling_what_we_never_captured_is_a_status_mismatch() -> None:
    failed = replace(PAYMENT, status="FAILED", captured_paisa=0)
    verdict = classify(line(), books(failed), set())
    assert (verdict.outcome, verdict.expected, verdict.actual) == (
        Outcome.STATUS_MISMATCH,
        "FAILED",
        "SETTLED",
    )
    pending_refund = replace(REFUND, status="PENDING")
    refund_line = line(
        type="refund",
        provider_reference="RFN1",
        merchant_reference="RFD_1",
        amount_paisa=20_000,
        fee_paisa=0,
        tax_paisa=0,
    )
    assert classify(refund_line, books(refund=pending_refund), set()).outcome is (
        Outcome.STATUS_MISMATCH
    )


def test_a_line_we_have_no_record_of_is_missing_internally() -> None:
    stranger = line(provider_reference="XTR1", merchant_reference="pay_unknown")
    verdict = classify(stranger, books(), set())
    assert (verdict.outcome, verdict.payment_id, verdict.settles) == (
        Outcome.MISSING_INTERNALLY,
        None,
        None,
    )


def test_refund_lines_match_refunds_and_carry_no_fee() -> None:
    refund_line = line(
        type="refund",
        provider_reference="RFN1",
        merchant_reference="RFD_1",
        amount_paisa=20_000,
        fee_paisa=0,
        tax_paisa=0,
    )
    verdict = classify(refund_line, books(), set())
    assert (verdict.outcome, verdict.refund_id, verdict.payment_id) == (
        Outcome.MATCHED,
        "RFD_1",
        "PAY_1",
    )
    charged = classify(replace(refund_line, fee_paisa=100), books(), set())
    assert charged.outcome is Outcome.FEE_MISMATCH
    assert classify(replace(refund_line, amount_paisa=1), books(), set()).outcome is (
        Outcome.AMOUNT_MISMATCH
    )


def test_chargebacks_and_adjustments_have_no_counterpart_yet() -> None:
    for kind in ("chargeback", "adjustment"):
        verdict = classify(line(type=kind), books(), set())
        assert verdict.outcome is Outcome.MISSING_INTERNALLY
        assert verdict.settles is None


def test_only_matched_and_expected_need_no_person() -> None:
    assert {o for o in Outcome if not o.raises_exception} == {Outcome.MATCHED, Outcome.EXPECTED}


def test_deadlines_count_ist_days() -> None:
    # 18:30 UTC is midnight in India: the next IST day.
    assert ist_date(datetime(2026, 12, 5, 18, 29, 59, tzinfo=UTC)) == date(2026, 12, 5)
    assert ist_date(datetime(2026, 12, 5, 18, 30, tzinfo=UTC)) == date(2026, 12, 6)
    assert settlement_deadline(date(2026, 12, 5), 3) == date(2026, 12, 8)
    # The file of the 8th is the last chance of items of the 5th (T+3), and of the 8th (T+0).
    assert overdue_on(date(2026, 12, 8), 3) == date(2026, 12, 5)
    assert overdue_on(date(2026, 12, 8), 0) == date(2026, 12, 8)
