"""The sandbox providers' rules as plain objects with a controlled clock: outcomes by magic
value, expiry, idempotency, refund limits and cashback arithmetic."""

from __future__ import annotations

import re

import pytest

from gateway_core.errors import AlreadyExists, Conflict, FailedPrecondition, NotFound
from sandbox.magic import UPI_LATE_OUTCOME_SECONDS, WALLET_OFFERS, upi_outcome
from sandbox.netbanking import BankPayment, BankPaymentStatus, NetBanks
from sandbox.upi import UpiStatus, UpiSwitch, UpiTransaction
from sandbox.wallets import DebitStatus, RefundStatus, WalletBook

DELAY = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def finished() -> list[UpiTransaction]:
    return []


@pytest.fixture
def switch(clock: Clock, finished: list[UpiTransaction]) -> UpiSwitch:
    return UpiSwitch(DELAY, on_final=finished.append, clock=clock)


def initiate(
    switch: UpiSwitch, vpa: str, ref: str = "PAY_1", expires_at: float | None = None
) -> UpiTransaction:
    txn, _ = switch.initiate(ref, vpa, 10_000, "COLLECT", "", expires_at)
    return txn


def test_vpas_outside_the_table_approve() -> None:
    assert upi_outcome("anyone@okhdfc") == upi_outcome("success@upi")
    assert upi_outcome("") == upi_outcome("success@upi")


def test_approval_happens_after_the_delay_and_is_reported_once(
    switch: UpiSwitch, clock: Clock, finished: list[UpiTransaction]
) -> None:
    txn = initiate(switch, "success@upi")
    clock.now += DELAY - 0.01
    assert switch.get("PAY_1").status is UpiStatus.PENDING

    clock.now += 0.01
    switch.settle(txn)
    switch.get("PAY_1")

    assert txn.status is UpiStatus.SUCCESS
    assert re.fullmatch(r"\d{12}", txn.rrn)
    assert re.fullmatch(r"\d{6}", txn.approval_code)
    assert finished == [txn]


def test_decline_fails_with_u30(
    switch: UpiSwitch, clock: Clock, finished: list[UpiTransaction]
) -> None:
    txn = initiate(switch, "failure@upi")
    clock.now += DELAY

    assert switch.get("PAY_1").status is UpiStatus.FAILED
    assert txn.response_code == "U30"
    assert finished == [txn]


@pytest.mark.parametrize(
    ("vpa", "final"), [("timeout@upi", UpiStatus.SUCCESS), ("latefail@upi", UpiStatus.FAILED)]
)
def test_hung_transactions_turn_final_late_and_never_call_back(
    switch: UpiSwitch,
    clock: Clock,
    finished: list[UpiTransaction],
    vpa: str,
    final: UpiStatus,
) -> None:
    initiate(switch, vpa)
    clock.now += UPI_LATE_OUTCOME_SECONDS - 0.01
    assert switch.get("PAY_1").status is UpiStatus.PENDING

    clock.now += 0.01

    assert switch.get("PAY_1").status is final
    assert finished == []


def test_a_timer_that_wakes_a_hair_early_still_settles(switch: UpiSwitch, clock: Clock) -> None:
    txn = initiate(switch, "success@upi")
    clock.now += DELAY - 0.001

    assert txn.resolve_at is not None
    switch.settle(txn, as_of=txn.resolve_at)

    assert txn.status is UpiStatus.SUCCESS
    assert txn.finished_at == txn.resolve_at


def test_manual_waits_for_a_decision_and_a_second_decision_conflicts(
    switch: UpiSwitch, clock: Clock, finished: list[UpiTransaction]
) -> None:
    txn = initiate(switch, "manual@upi")
    clock.now += 3600
    assert switch.get("PAY_1").status is UpiStatus.PENDING

    switch.decide("PAY_1", approve=False)

    assert (txn.status, txn.response_code) == (UpiStatus.FAILED, "ZA")
    assert finished == [txn]
    with pytest.raises(Conflict):
        switch.decide("PAY_1", approve=True)
    with pytest.raises(NotFound):
        switch.decide("PAY_404", approve=True)


def test_pending_past_expiry_expires_without_callback(
    switch: UpiSwitch, clock: Clock, finished: list[UpiTransaction]
) -> None:
    expires_at = clock.now + 60
    txn = initiate(switch, "manual@upi", expires_at=expires_at)
    clock.now += 61

    assert switch.get("PAY_1").status is UpiStatus.EXPIRED
    assert txn.finished_at == expires_at
    assert finished == []


def test_an_expiry_already_past_expires_at_once(switch: UpiSwitch, clock: Clock) -> None:
    txn = initiate(switch, "success@upi", expires_at=clock.now - 1)

    assert txn.status is UpiStatus.EXPIRED


def test_expiry_before_the_approval_wins(switch: UpiSwitch, clock: Clock) -> None:
    initiate(switch, "success@upi", expires_at=clock.now + DELAY / 2)
    clock.now += DELAY * 2

    assert switch.get("PAY_1").status is UpiStatus.EXPIRED


def test_unregistered_payer_fails_on_the_spot(
    switch: UpiSwitch, finished: list[UpiTransaction]
) -> None:
    txn = initiate(switch, "nouser@upi")

    assert (txn.status, txn.response_code) == (UpiStatus.FAILED, "ZH")
    assert finished == []


def test_initiation_is_idempotent_and_refuses_other_details(switch: UpiSwitch) -> None:
    first, created = switch.initiate("PAY_1", "success@upi", 10_000, "COLLECT", "", None)
    again, created_again = switch.initiate("PAY_1", "success@upi", 10_000, "COLLECT", "", None)

    assert (created, created_again) == (True, False)
    assert again is first
    with pytest.raises(AlreadyExists):
        switch.initiate("PAY_1", "success@upi", 20_000, "COLLECT", "", None)


def test_refunds_never_exceed_the_amount_and_replay_by_refund_ref(
    switch: UpiSwitch, clock: Clock
) -> None:
    initiate(switch, "success@upi")
    with pytest.raises(FailedPrecondition, match="only SUCCESS"):
        switch.refund("PAY_1", "RF_0", 1_000)
    clock.now += DELAY

    first = switch.refund("PAY_1", "RF_1", 6_000)

    assert switch.refund("PAY_1", "RF_1", 6_000) == first
    with pytest.raises(AlreadyExists):
        switch.refund("PAY_1", "RF_1", 5_000)
    with pytest.raises(FailedPrecondition) as raised:
        switch.refund("PAY_1", "RF_2", 4_001)
    assert raised.value.reason == "REFUND_EXCEEDS_AMOUNT"
    switch.refund("PAY_1", "RF_3", 4_000)


def test_cashback_is_basis_points_of_the_amount_capped_and_above_the_minimum() -> None:
    offers = {offer.wallet: offer for offer in WALLET_OFFERS}

    assert offers["PAYTM"].cashback_paisa(9_999) == 0  # below ₹100
    assert offers["PAYTM"].cashback_paisa(20_000) == 1_000  # 5 % of ₹200
    assert offers["PAYTM"].cashback_paisa(500_000) == 5_000  # capped at ₹50
    assert offers["PHONEPE"].cashback_paisa(100) == 2
    assert offers["AMAZON_PAY"].cashback_paisa(49_999) == 0
    assert offers["AMAZON_PAY"].cashback_paisa(50_000) == 5_000
    assert offers["AMAZON_PAY"].cashback_paisa(10_000_000) == 10_000
    assert "GOOGLE_PAY" not in offers


def test_a_debit_checks_the_balance_and_a_refund_returns_money() -> None:
    book = WalletBook()
    phone = "9876543210"

    failed = book.debit("PAYTM", "9000000000", "PAY_EMPTY", 100, None)
    debit = book.debit("PAYTM", phone, "PAY_1", 4_000_000, None)
    refund = book.refund("PAYTM", debit.wallet_txn_id, "PAY_1", "RF_1", 1_000_000)
    too_much = book.refund("PAYTM", debit.wallet_txn_id, "PAY_1", "RF_2", 3_000_001)

    assert (failed.status, failed.failure_code) == (DebitStatus.FAILED, "INSUFFICIENT_BALANCE")
    assert book.balance("PAYTM", "9000000000") == 0
    assert debit.status is DebitStatus.SUCCESS
    assert refund.status is RefundStatus.PROCESSED
    assert (too_much.status, too_much.failure_code) == (
        RefundStatus.FAILED,
        "REFUND_EXCEEDS_DEBIT",
    )
    assert book.balance("PAYTM", phone) == 5_000_000 - 4_000_000 + 1_000_000
    assert book.balance("PHONEPE", phone) == 5_000_000  # each wallet keeps its own balance


def test_the_bank_page_outcome_is_final_and_reported_once() -> None:
    reported: list[BankPayment] = []
    banks = NetBanks(on_final=reported.append)
    banks.initiate("HDFC", "PAY_1", 10_000, "https://shop.test/back?order=7", "")

    payment = banks.complete("HDFC", "PAY_1", approve=True)
    banks.complete("HDFC", "PAY_1", approve=False)

    assert payment.status is BankPaymentStatus.SUCCESS
    assert payment.bank_reference.startswith("HDFC")
    assert reported == [payment]
    assert payment.return_to() == ("https://shop.test/back?order=7&payment_id=PAY_1&status=SUCCESS")
    with pytest.raises(NotFound):
        banks.get("ICICI", "PAY_1")
