"""The sandbox's one refund book (sandbox.refunds): every provider's refund rules, without a
server. The providers' own tests (test_sandbox_rules, test_sandbox_cards*, test_sandbox_service)
check that each provider refunds through it in its own words."""

from __future__ import annotations

import pytest

from gateway_core.errors import AlreadyExists, FailedPrecondition
from sandbox.refunds import RefundBook, RefundStatus, RefundTerms, booked_refunds
from sandbox.settlements import Refunded

RECORDING = RefundTerms(reference_prefix="XRF", not_paid="NOT_PAID", exceeds_paid="TOO_MUCH")
RAISING = RefundTerms(
    reference_prefix="YRF",
    not_paid="NOT_PAID",
    exceeds_paid="TOO_MUCH",
    duplicate="DUPLICATE_REF",
    ids_per_payment=True,
    refusal_is_error=True,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_refund_replays_by_its_id_and_a_changed_amount_or_payment_is_refused() -> None:
    book = RefundBook("acme", RECORDING)

    first, created = book.refund("PAY_1", "RF_1", 4_000, paid_paisa=10_000)
    again, created_again = book.refund("PAY_1", "RF_1", 4_000, paid_paisa=10_000)
    with pytest.raises(AlreadyExists) as other_amount:
        book.refund("PAY_1", "RF_1", 3_000, paid_paisa=10_000)
    with pytest.raises(AlreadyExists) as other_payment:
        book.refund("PAY_2", "RF_1", 4_000, paid_paisa=10_000)

    assert (created, created_again, again) == (True, False, first)
    assert first.status is RefundStatus.PROCESSED
    assert first.provider_refund_id.startswith("XRF")
    assert other_amount.value.reason == other_payment.value.reason == "DUPLICATE_REFUND_ID"
    assert book.refunded_paisa("PAY_1") == 4_000
    assert book.refunded_paisa("PAY_2") == 0


def test_ids_per_payment_let_another_payment_use_the_same_refund_id() -> None:
    book = RefundBook("upi_like", RAISING)

    one, _ = book.refund("PAY_1", "RF_1", 1_000, paid_paisa=5_000)
    other, created = book.refund("PAY_2", "RF_1", 2_000, paid_paisa=5_000)
    with pytest.raises(AlreadyExists) as changed:
        book.refund("PAY_1", "RF_1", 1_001, paid_paisa=5_000)

    assert created
    assert one.provider_refund_id != other.provider_refund_id
    assert changed.value.reason == "DUPLICATE_REF"
    assert (book.refunded_paisa("PAY_1"), book.refunded_paisa("PAY_2")) == (1_000, 2_000)


def test_refunds_never_exceed_what_was_paid_and_failed_ones_give_nothing_back() -> None:
    book = RefundBook("acme", RECORDING)

    unpaid, _ = book.refund("PAY_0", "RF_0", 1, paid_paisa=0)
    first, _ = book.refund("PAY_1", "RF_1", 6_000, paid_paisa=10_000)
    over, _ = book.refund("PAY_1", "RF_2", 4_001, paid_paisa=10_000)
    rest, _ = book.refund("PAY_1", "RF_3", 4_000, paid_paisa=10_000)
    nothing_left, _ = book.refund("PAY_1", "RF_4", 1, paid_paisa=10_000)

    assert (unpaid.status, unpaid.failure_code, unpaid.provider_refund_id) == (
        RefundStatus.FAILED,
        "NOT_PAID",
        "",
    )
    assert (over.status, over.failure_code) == (RefundStatus.FAILED, "TOO_MUCH")
    assert (nothing_left.status, nothing_left.failure_code) == (RefundStatus.FAILED, "TOO_MUCH")
    assert (first.status, rest.status) == (RefundStatus.PROCESSED, RefundStatus.PROCESSED)
    assert book.refunded_paisa("PAY_1") == 10_000
    assert book.refunded_paisa("PAY_0") == 0


def test_a_provider_refusal_comes_after_the_amount_rules_and_is_kept() -> None:
    book = RefundBook("acme", RECORDING)

    over, _ = book.refund("PAY_1", "RF_1", 10_001, paid_paisa=10_000, refusal="REFUSED")
    refused, _ = book.refund("PAY_1", "RF_2", 1_000, paid_paisa=10_000, refusal="REFUSED")
    replay, created = book.refund("PAY_1", "RF_2", 1_000, paid_paisa=10_000)

    assert over.failure_code == "TOO_MUCH"
    assert (refused.status, refused.failure_code) == (RefundStatus.FAILED, "REFUSED")
    assert (replay, created) == (refused, False)  # a failed refund replays as failed
    assert book.refunded_paisa("PAY_1") == 0


def test_a_refusal_raised_as_an_error_records_nothing() -> None:
    book = RefundBook("upi_like", RAISING)

    with pytest.raises(FailedPrecondition) as unpaid:
        book.refund("PAY_1", "RF_1", 1_000, paid_paisa=0)
    with pytest.raises(FailedPrecondition) as over:
        book.refund("PAY_1", "RF_1", 5_001, paid_paisa=5_000)
    # Paid meanwhile: the same refund id now goes through.
    refund, created = book.refund("PAY_1", "RF_1", 1_000, paid_paisa=5_000)

    assert (unpaid.value.reason, over.value.reason) == ("NOT_PAID", "TOO_MUCH")
    assert "5001" in over.value.message
    assert (refund.status, created) == (RefundStatus.PROCESSED, True)
    assert [entry.refund_id for entry in book.booked_refunds()] == ["RF_1"]


def test_books_and_settlements_list_refunds_as_they_were_made() -> None:
    clock = Clock()
    book = RefundBook("acme", RECORDING, clock)

    first, _ = book.refund("PAY_1", "RF_1", 1_000, paid_paisa=5_000)
    clock.now += 60
    book.refund("PAY_2", "RF_2", 9_000, paid_paisa=5_000)
    clock.now += 60
    third, _ = book.refund("PAY_1", "RF_3", 2_000, paid_paisa=5_000)

    assert [(r.provider, r.payment_id, r.refund_id, r.status) for r in book.booked_refunds()] == [
        ("acme", "PAY_1", "RF_1", "PROCESSED"),
        ("acme", "PAY_2", "RF_2", "FAILED"),
        ("acme", "PAY_1", "RF_3", "PROCESSED"),
    ]
    assert book.settleable("PAY_1") == [
        Refunded(first.provider_refund_id, "RF_1", 1_000, 1_700_000_000.0),
        Refunded(third.provider_refund_id, "RF_3", 2_000, 1_700_000_120.0),
    ]
    assert book.settleable("PAY_2") == []


def test_several_providers_books_list_their_refunds_as_they_were_made() -> None:
    razorpay, payu = RefundBook("razorpay", RECORDING), RefundBook("payu", RECORDING)

    razorpay.refund("PAY_1", "RF_1", 1_000, paid_paisa=5_000)
    payu.refund("PAY_2", "RF_2", 1_000, paid_paisa=5_000)
    razorpay.refund("PAY_1", "RF_3", 1_000, paid_paisa=5_000)

    assert [(r.provider, r.refund_id) for r in booked_refunds([razorpay, payu])] == [
        ("razorpay", "RF_1"),
        ("payu", "RF_2"),
        ("razorpay", "RF_3"),
    ]
