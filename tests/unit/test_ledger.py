"""Journal entries: balanced by construction, integer paisa, debits positive, credits negative."""

from __future__ import annotations

import random

import pytest

from gateway_core.fees import DEFAULT_PRICING, Fee, Pricing, compute_fee
from orchestrator.domain.ledger import (
    JournalEntry,
    JournalKind,
    Posting,
    bank,
    capture_entry,
    fee_revenue,
    gst_payable,
    merchant_payable,
    payment_settlement_entry,
    provider_clearing,
    provider_fees,
    refund_entry,
    refund_settlement_entry,
)

MERCHANT = "MER_01JTEST"
PROVIDER = "upi_core"
PRICES = [*DEFAULT_PRICING.values(), Pricing("FIXED", rate_bps=150, fixed_paisa=1_000)]
AMOUNTS = [*range(1, 1001), *random.Random(7).sample(range(1001, 10**13), 2000)]


def lines(entry: JournalEntry) -> dict[str, int]:
    return {p.account.account_id: p.amount_paisa for p in entry.postings}


def capture(amount: int, fee: Fee) -> JournalEntry:
    return capture_entry(
        payment_id="PAY_1",
        merchant_id=MERCHANT,
        provider=PROVIDER,
        currency="INR",
        amount_paisa=amount,
        fee=fee,
    )


def refund(amount: int, refund_id: str = "RFD_1") -> JournalEntry:
    return refund_entry(
        payment_id="PAY_1",
        refund_id=refund_id,
        merchant_id=MERCHANT,
        provider=PROVIDER,
        currency="INR",
        amount_paisa=amount,
    )


def test_chart_of_accounts_names_each_account_by_kind_owner_and_currency() -> None:
    assert provider_clearing("upi_core", "INR").account_id == "provider_clearing:upi_core:INR"
    assert merchant_payable(MERCHANT, "INR").account_id == f"merchant_payable:{MERCHANT}:INR"
    assert fee_revenue("INR").account_id == "fee_revenue:INR"
    assert gst_payable("INR").account_id == "gst_payable:INR"
    assert merchant_payable(MERCHANT, "INR").merchant_id == MERCHANT
    assert provider_clearing("upi_core", "INR").merchant_id is None


@pytest.mark.parametrize(
    ("owner", "currency", "problem"),
    [
        ("", "INR", "owner"),
        ("MER:1", "INR", "owner"),
        ("M", "inr", "currency"),
        ("M", "RUPEE", "currency"),
    ],
)
def test_ambiguous_account_ids_are_refused(owner: str, currency: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        merchant_payable(owner, currency)


def test_capture_debits_the_provider_and_credits_merchant_fee_and_gst() -> None:
    entry = capture(10_000, Fee(fee_paisa=200, tax_paisa=36))
    assert entry.journal_id == "capture:PAY_1"
    assert entry.kind is JournalKind.CAPTURE
    assert entry.refund_id is None
    assert lines(entry) == {
        "provider_clearing:upi_core:INR": 10_000,
        f"merchant_payable:{MERCHANT}:INR": -9_764,
        "fee_revenue:INR": -200,
        "gst_payable:INR": -36,
    }
    assert entry.amount_paisa == 10_000


def test_upi_capture_leaves_out_the_zero_fee_lines() -> None:
    entry = capture(10_000, compute_fee(10_000, DEFAULT_PRICING["UPI"]))
    assert lines(entry) == {
        "provider_clearing:upi_core:INR": 10_000,
        f"merchant_payable:{MERCHANT}:INR": -10_000,
    }


def test_capture_whose_fee_takes_it_all_has_no_merchant_line() -> None:
    entry = capture(500, Fee(fee_paisa=424, tax_paisa=76))
    assert set(lines(entry)) == {
        "provider_clearing:upi_core:INR",
        "fee_revenue:INR",
        "gst_payable:INR",
    }


def test_refund_debits_the_merchant_the_whole_amount_and_returns_no_fee() -> None:
    entry = refund(3_000)
    assert entry.journal_id == "refund:PAY_1:RFD_1"
    assert entry.refund_id == "RFD_1"
    assert lines(entry) == {
        f"merchant_payable:{MERCHANT}:INR": 3_000,
        "provider_clearing:upi_core:INR": -3_000,
    }


def test_each_refund_of_a_payment_is_its_own_journal() -> None:
    assert refund(1, "RFD_1").journal_id != refund(1, "RFD_2").journal_id


@pytest.mark.parametrize("pricing", PRICES, ids=lambda p: p.method)
def test_property_every_capture_and_refund_balances_in_integer_paisa(pricing: Pricing) -> None:
    for amount in AMOUNTS:
        fee = compute_fee(amount, pricing)
        assert fee.total <= amount
        for entry in (capture(amount, fee), refund(amount)):
            amounts = [p.amount_paisa for p in entry.postings]
            assert sum(amounts) == 0
            assert all(type(a) is int and a != 0 for a in amounts)
            assert entry.amount_paisa == amount
        payable = lines(capture(amount, fee)).get(f"merchant_payable:{MERCHANT}:INR", 0)
        assert payable == -(amount - fee.total)


def entry_with(*postings: Posting, kind: JournalKind = JournalKind.ADJUSTMENT) -> JournalEntry:
    return JournalEntry(
        journal_id="adjustment:PAY_1",
        kind=kind,
        payment_id="PAY_1",
        refund_id=None,
        merchant_id=MERCHANT,
        currency="INR",
        postings=postings,
    )


def test_unbalanced_entry_is_a_bug_caught_on_construction() -> None:
    with pytest.raises(ValueError, match="sum to 1 paisa"):
        entry_with(Posting(fee_revenue("INR"), 101), Posting(gst_payable("INR"), -100))


def test_entry_with_zero_line_single_line_or_foreign_account_is_refused() -> None:
    with pytest.raises(ValueError, match="zero posting"):
        entry_with(Posting(fee_revenue("INR"), 0), Posting(gst_payable("INR"), 0))
    with pytest.raises(ValueError, match="two postings"):
        entry_with()
    with pytest.raises(ValueError, match="not in INR"):
        entry_with(Posting(fee_revenue("USD"), 1), Posting(gst_payable("INR"), -1))


def test_refund_id_goes_with_refunds_only() -> None:
    balanced = (Posting(fee_revenue("INR"), 1), Posting(gst_payable("INR"), -1))
    with pytest.raises(ValueError, match="refund_id"):
        entry_with(*balanced, kind=JournalKind.REFUND)


@pytest.mark.parametrize(
    ("amount", "fee"),
    [(0, Fee(0, 0)), (-5, Fee(0, 0)), (100, Fee(90, 11)), (100, Fee(-1, 0))],
)
def test_capture_refuses_impossible_amounts(amount: int, fee: Fee) -> None:
    with pytest.raises(ValueError, match="capture of PAY_1"):
        capture(amount, fee)


def test_refund_refuses_impossible_amounts() -> None:
    with pytest.raises(ValueError, match="positive"):
        refund(0)
    with pytest.raises(ValueError, match="refund_id"):
        refund(1, refund_id="")


# Settlement: the provider pays out what it owed, less its fee and GST


def test_a_payment_settlement_moves_the_receivable_to_the_bank_less_the_providers_fee() -> None:
    entry = payment_settlement_entry(
        payment_id="PAY_1",
        merchant_id=MERCHANT,
        provider="razorpay",
        currency="INR",
        amount_paisa=100_000,
        fee=Fee(2_000, 360),
    )

    assert (entry.journal_id, entry.kind, entry.refund_id) == (
        "settlement:PAY_1",
        JournalKind.SETTLEMENT,
        None,
    )
    assert lines(entry) == {
        provider_clearing("razorpay", "INR").account_id: -100_000,
        bank("razorpay", "INR").account_id: 97_640,
        provider_fees("razorpay", "INR").account_id: 2_360,
    }
    assert bank("razorpay", "INR").account_id == "bank:razorpay:INR"
    assert provider_fees("razorpay", "INR").account_id == "provider_fees:razorpay:INR"


def test_a_settlement_without_fee_has_no_fee_line() -> None:
    entry = payment_settlement_entry(
        payment_id="PAY_U",
        merchant_id=MERCHANT,
        provider=PROVIDER,
        currency="INR",
        amount_paisa=5_000,
        fee=Fee(0, 0),
    )

    assert lines(entry) == {
        provider_clearing(PROVIDER, "INR").account_id: -5_000,
        bank(PROVIDER, "INR").account_id: 5_000,
    }


def test_a_refund_settlement_gives_the_receivable_back_out_of_the_bank() -> None:
    entry = refund_settlement_entry(
        payment_id="PAY_1",
        refund_id="RFD_1",
        merchant_id=MERCHANT,
        provider="razorpay",
        currency="INR",
        amount_paisa=30_000,
    )

    assert (entry.journal_id, entry.refund_id) == ("settlement:PAY_1:RFD_1", "RFD_1")
    assert lines(entry) == {
        provider_clearing("razorpay", "INR").account_id: 30_000,
        bank("razorpay", "INR").account_id: -30_000,
    }


@pytest.mark.parametrize(
    ("amount", "fee"), [(0, Fee(0, 0)), (-5, Fee(0, 0)), (100, Fee(90, 20)), (100, Fee(-1, 0))]
)
def test_a_settlement_that_cannot_be_right_is_refused(amount: int, fee: Fee) -> None:
    with pytest.raises(ValueError, match="settlement of PAY_1"):
        payment_settlement_entry(
            payment_id="PAY_1",
            merchant_id=MERCHANT,
            provider="razorpay",
            currency="INR",
            amount_paisa=amount,
            fee=fee,
        )
