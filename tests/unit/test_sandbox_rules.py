"""The sandbox providers' rules as plain objects with a controlled clock: outcomes by magic
value, expiry, idempotency, refund limits, cashback arithmetic, cancels and the books."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway_core.errors import AlreadyExists, Conflict, FailedPrecondition, NotFound
from orchestrator.connectors.card import client as cards
from orchestrator.connectors.netbanking import client as netbanking
from orchestrator.connectors.upi import client as upi_core
from orchestrator.connectors.wallet import client as wallets
from sandbox import magic
from sandbox.books import books_document
from sandbox.magic import UPI_LATE_OUTCOME_SECONDS, WALLET_OFFERS, upi_outcome
from sandbox.netbanking import BankPayment, BankPaymentStatus, NetBanks
from sandbox.refunds import RefundStatus
from sandbox.upi import UpiStatus, UpiSwitch, UpiTransaction
from sandbox.wallets import DebitStatus, WalletBook

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
    with pytest.raises(FailedPrecondition) as unpaid:
        switch.refund("PAY_1", "RF_0", 1_000)
    assert unpaid.value.reason == "TRANSACTION_NOT_SUCCESSFUL"
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

    failed, _ = book.debit("PAYTM", "9000000000", "PAY_EMPTY", 100, None)
    debit, _ = book.debit("PAYTM", phone, "PAY_1", 4_000_000, None)
    refund, _ = book.refund("PAYTM", debit.wallet_txn_id, "PAY_1", "RF_1", 1_000_000)
    too_much, _ = book.refund("PAYTM", debit.wallet_txn_id, "PAY_1", "RF_2", 3_000_001)

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
        banks.get("ICIC", "PAY_1")


# --- Provider faults ---------------------------------------------------------------------


def test_hangs_outlast_the_orchestrators_deadlines_by_seconds() -> None:
    # (the deadline the sandbox assumes, its hang, the orchestrator's deadline) per provider
    providers = [
        (magic.UPI_DEADLINE_SECONDS, magic.UPI_HANG_SECONDS, upi_core.INITIATE_TIMEOUT_SECONDS),
        (magic.WALLET_DEADLINE_SECONDS, magic.WALLET_HANG_SECONDS, wallets.TIMEOUT_SECONDS),
        (
            magic.NETBANKING_DEADLINE_SECONDS,
            magic.NETBANKING_HANG_SECONDS,
            netbanking.TIMEOUT_SECONDS,
        ),
        (magic.CARD_DEADLINE_SECONDS, magic.CARD_HANG_SECONDS, cards.TIMEOUT_SECONDS),
    ]

    for assumed, hang, deadline in providers:
        assert assumed == deadline
        assert hang >= deadline + 3
    assert 2 <= magic.CARD_SLOW_AUTHORIZATION_SECONDS <= cards.TIMEOUT_SECONDS - 1


# --- Cancels ------------------------------------------------------------------------------


@pytest.mark.parametrize("vpa", ["success@upi", "timeout@upi", "manual@upi"])
def test_a_cancelled_pending_transaction_fails_for_good_without_callback(
    switch: UpiSwitch, clock: Clock, finished: list[UpiTransaction], vpa: str
) -> None:
    initiate(switch, vpa)

    cancelled = switch.cancel("PAY_1")
    clock.now += max(DELAY, UPI_LATE_OUTCOME_SECONDS) * 2

    assert (cancelled.status, cancelled.response_code) == (UpiStatus.FAILED, "PC")
    assert switch.get("PAY_1").status is UpiStatus.FAILED
    assert switch.cancel("PAY_1") is cancelled
    assert cancelled.status is UpiStatus.FAILED
    assert finished == []
    with pytest.raises(Conflict):
        switch.decide("PAY_1", approve=True)


def test_cancel_after_the_customer_paid_answers_success(
    switch: UpiSwitch, clock: Clock, finished: list[UpiTransaction]
) -> None:
    initiate(switch, "success@upi")
    clock.now += DELAY  # the approval fell due; nobody has looked yet

    answer = switch.cancel("PAY_1")

    assert answer.status is UpiStatus.SUCCESS
    assert re.fullmatch(r"\d{12}", answer.rrn)
    assert finished == [answer]  # the payment's own callback, not a cancel's
    assert switch.refund("PAY_1", "RF_1", 10_000).amount_paisa == 10_000


def test_cancel_leaves_a_failed_or_expired_transaction_as_it_is(
    switch: UpiSwitch, clock: Clock
) -> None:
    initiate(switch, "failure@upi", ref="PAY_FAILED")
    initiate(switch, "manual@upi", ref="PAY_EXPIRED", expires_at=clock.now + 1)
    clock.now += DELAY + 1

    failed = switch.cancel("PAY_FAILED")
    expired = switch.cancel("PAY_EXPIRED")

    assert (failed.status, failed.response_code) == (UpiStatus.FAILED, "U30")
    assert (expired.status, expired.response_code) == (UpiStatus.EXPIRED, "U69")
    with pytest.raises(NotFound):
        switch.cancel("PAY_NEVER")


def test_a_merchant_cancel_closes_a_pending_bank_payment_without_callback() -> None:
    reported: list[BankPayment] = []
    banks = NetBanks(on_final=reported.append)
    banks.initiate("SBIN", "PAY_1", 10_000, "https://shop.test/back", "")
    banks.initiate("SBIN", "PAY_2", 10_000, "https://shop.test/back", "")
    paid = banks.complete("SBIN", "PAY_2", approve=True)

    cancelled = banks.cancel("SBIN", "PAY_1")
    after_pay = banks.complete("SBIN", "PAY_1", approve=True)

    assert (cancelled.status, cancelled.failure_code) == (
        BankPaymentStatus.FAILED,
        "MERCHANT_CANCELLED",
    )
    assert after_pay is cancelled
    assert cancelled.status is BankPaymentStatus.FAILED
    assert banks.cancel("SBIN", "PAY_1") is cancelled
    assert banks.cancel("SBIN", "PAY_2").status is BankPaymentStatus.SUCCESS
    assert reported == [paid]
    with pytest.raises(NotFound):
        banks.cancel("HDFC", "PAY_1")


# --- Wallet and bank magic values ---------------------------------------------------------


def test_fault_phones_pass_the_gateways_mobile_number_rule_and_have_ample_balance() -> None:
    book = WalletBook()
    for phone in magic.MAGIC_PHONES:
        assert re.fullmatch(r"[6-9]\d{9}", phone)
        assert phone not in (magic.AMPLE_BALANCE_PHONE, magic.EMPTY_WALLET_PHONE)
        assert book.balance("PAYTM", phone) == magic.AMPLE_BALANCE_PAISA


def test_fault_bank_codes_are_four_capital_letters() -> None:
    for code in (magic.FAILING_BANK, magic.DOWN_BANK, magic.HANGING_BANK):
        assert re.fullmatch(r"[A-Z]{4}", code)
        assert code in magic.BANKS


def test_a_refund_failing_wallet_refunds_nothing() -> None:
    book = WalletBook()
    phone = "9000000004"
    debit, _ = book.debit("PHONEPE", phone, "PAY_1", 10_000, None)

    refund, created = book.refund("PHONEPE", debit.wallet_txn_id, "PAY_1", "RF_1", 4_000)
    again, created_again = book.refund("PHONEPE", debit.wallet_txn_id, "PAY_1", "RF_1", 4_000)

    assert (refund.status, refund.failure_code) == (RefundStatus.FAILED, "REFUND_NOT_ALLOWED")
    assert (created, created_again, again) == (True, False, refund)
    assert book.refunded_paisa("PHONEPE", "PAY_1") == 0
    assert book.balance("PHONEPE", phone) == magic.AMPLE_BALANCE_PAISA - 10_000


# --- Books --------------------------------------------------------------------------------


def test_books_show_what_each_provider_charged_and_refunded(
    switch: UpiSwitch, clock: Clock
) -> None:
    initiate(switch, "success@upi", ref="PAY_UPI")
    initiate(switch, "failure@upi", ref="PAY_UPI_FAILED")
    clock.now += DELAY
    switch.refund("PAY_UPI", "RF_UPI", 2_500)
    wallets = WalletBook()
    debit, _ = wallets.debit("GOOGLE_PAY", "9811111111", "PAY_W", 7_000, None)
    wallets.debit("AMAZON_PAY", "9000000000", "PAY_W_EMPTY", 7_000, None)
    wallets.refund("GOOGLE_PAY", debit.wallet_txn_id, "PAY_W", "RF_W", 7_000)
    wallets.refund("GOOGLE_PAY", debit.wallet_txn_id, "PAY_W", "RF_W_2", 1)
    banks = NetBanks(on_final=lambda payment: None)
    banks.initiate("HDFC", "PAY_NB", 30_000, "https://shop.test/back", "")
    banks.initiate("AXIS", "PAY_NB_PENDING", 30_000, "https://shop.test/back", "")
    banks.complete("HDFC", "PAY_NB", approve=True)

    books = books_document([switch, wallets, banks])

    assert books["payments"] == [
        {
            "provider": "upi_core",
            "payment_id": "PAY_UPI",
            "status": "SUCCESS",
            "amount_paisa": 10_000,
            "charged_paisa": 10_000,
            "authorized_paisa": 0,
            "captured_paisa": 0,
            "voided": False,
            "refunded_paisa": 2_500,
        },
        {
            "provider": "upi_core",
            "payment_id": "PAY_UPI_FAILED",
            "status": "FAILED",
            "amount_paisa": 10_000,
            "charged_paisa": 0,
            "authorized_paisa": 0,
            "captured_paisa": 0,
            "voided": False,
            "refunded_paisa": 0,
        },
        {
            "provider": "google_pay",
            "payment_id": "PAY_W",
            "status": "SUCCESS",
            "amount_paisa": 7_000,
            "charged_paisa": 7_000,
            "authorized_paisa": 0,
            "captured_paisa": 0,
            "voided": False,
            "refunded_paisa": 7_000,
        },
        {
            "provider": "amazon_pay",
            "payment_id": "PAY_W_EMPTY",
            "status": "FAILED",
            "amount_paisa": 7_000,
            "charged_paisa": 0,
            "authorized_paisa": 0,
            "captured_paisa": 0,
            "voided": False,
            "refunded_paisa": 0,
        },
        {
            "provider": "netbanking",
            "payment_id": "PAY_NB",
            "status": "SUCCESS",
            "amount_paisa": 30_000,
            "charged_paisa": 30_000,
            "authorized_paisa": 0,
            "captured_paisa": 0,
            "voided": False,
            "refunded_paisa": 0,
        },
        {
            "provider": "netbanking",
            "payment_id": "PAY_NB_PENDING",
            "status": "PENDING",
            "amount_paisa": 30_000,
            "charged_paisa": 0,
            "authorized_paisa": 0,
            "captured_paisa": 0,
            "voided": False,
            "refunded_paisa": 0,
        },
    ]
    assert books["refunds"] == [
        {
            "provider": "upi_core",
            "payment_id": "PAY_UPI",
            "refund_id": "RF_UPI",
            "amount_paisa": 2_500,
            "status": "PROCESSED",
        },
        {
            "provider": "google_pay",
            "payment_id": "PAY_W",
            "refund_id": "RF_W",
            "amount_paisa": 7_000,
            "status": "PROCESSED",
        },
        {
            "provider": "google_pay",
            "payment_id": "PAY_W",
            "refund_id": "RF_W_2",
            "amount_paisa": 1,
            "status": "FAILED",
        },
    ]


def test_books_settle_what_fell_due_and_filter_by_payment(switch: UpiSwitch, clock: Clock) -> None:
    initiate(switch, "timeout@upi", ref="PAY_LATE")
    initiate(switch, "manual@upi", ref="PAY_OTHER")
    clock.now += UPI_LATE_OUTCOME_SECONDS

    books = books_document([switch], payment_id="PAY_LATE")

    assert [(p["payment_id"], p["status"], p["charged_paisa"]) for p in books["payments"]] == [
        ("PAY_LATE", "SUCCESS", 10_000)
    ]
    assert books["refunds"] == []


def test_the_readme_documents_every_magic_value() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Sandbox test values", 1)[1].split("\n## ", 1)[0]
    cards = [" ".join(number[i : i + 4] for i in range(0, 16, 4)) for number in magic.MAGIC_CARDS]
    values = [*magic.MAGIC_VPAS, *magic.MAGIC_PHONES, *magic.BANKS, *cards]

    assert [value for value in values if f"`{value}`" not in section] == []
