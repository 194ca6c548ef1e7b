"""The card acquirers' and the ACS's rules as plain objects with a controlled clock: card checks,
the magic table, challenge expiry, authorization holds and what 3-D Secure data is honoured."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from gateway_core.cards import luhn_valid
from gateway_core.errors import AlreadyExists, Unavailable
from paygate.sandbox.v1 import cards_pb2
from sandbox import magic
from sandbox.acquirers import (
    Acquirers,
    AuthorizationStatus,
    CaptureStatus,
    ThreeDsData,
    VoidStatus,
)
from sandbox.acs import Acs, Authentication, AuthenticationStatus
from sandbox.books import books_document
from sandbox.callbacks import ProviderCallback
from sandbox.cards import Card, brand_of, read_card
from sandbox.magic import CardOutcome
from sandbox.validation import Violations

TTL = 600.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 15, 12, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def finished() -> list[Authentication]:
    return []


@pytest.fixture
def acs(clock: Clock, finished: list[Authentication]) -> Acs:
    return Acs(on_final=finished.append, clock=clock, challenge_ttl_seconds=TTL)


@pytest.fixture
def acquirers(acs: Acs, clock: Clock) -> Acquirers:
    return Acquirers(acs, clock=clock)


def a_card(number: str, cvv: str = "123", month: str = "12", year: str = "2030") -> Card:
    problems = Violations()
    card = read_card(
        problems,
        cards_pb2.CardDetails(card_number=number, expiry_month=month, expiry_year=year, cvv=cvv),
        "card",
    )
    problems.raise_if_any()
    assert card is not None
    return card


def start(
    acs: Acs, number: str, payment_id: str = "PAY_1", challenge_requested: bool = False
) -> Authentication:
    authentication, _ = acs.authenticate(
        "razorpay",
        payment_id,
        "MER_1",
        a_card(number),
        10_000,
        "INR",
        challenge_requested=challenge_requested,
        return_url="https://shop.test/return",
        callback_url="",
    )
    return authentication


# --- Card data ----------------------------------------------------------------------------


def test_every_magic_card_is_a_valid_card_number() -> None:
    assert all(luhn_valid(number) for number in magic.MAGIC_CARDS)
    assert set(magic.MAGIC_CARDS.values()) == set(CardOutcome)


def test_fault_cards_are_4000_0000_0000_5xxx_clear_of_the_dispute_card() -> None:
    fault_outcomes = {
        CardOutcome.SLOW_AUTHORIZATION,
        CardOutcome.AUTHORIZATION_TIMEOUT,
        CardOutcome.ALL_ACQUIRERS_DOWN,
        CardOutcome.THREE_DS_TIMEOUT,
        CardOutcome.THREE_DS_DOWN,
        CardOutcome.CAPTURE_TIMEOUT,
        CardOutcome.VOID_TIMEOUT,
        CardOutcome.VOID_REFUSED,
    }
    faults = {n: outcome for n, outcome in magic.MAGIC_CARDS.items() if outcome in fault_outcomes}

    assert set(faults.values()) == fault_outcomes
    assert all(re.fullmatch(r"4000000000005\d{3}", number) for number in faults)
    # The dispute card (issue 11) approves and is charged back after capture: no fault.
    assert magic.MAGIC_CARDS["4000000000000259"] is CardOutcome.CHARGEBACK
    assert "4000000000000259" not in faults


def test_cards_outside_the_table_approve() -> None:
    assert magic.card_outcome("4111111111111111") is CardOutcome.APPROVE


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4242424242424242", "VISA"),
        ("5555555555554444", "MASTERCARD"),
        ("2223003122003222", "MASTERCARD"),
        ("378282246310005", "AMEX"),
        ("36227206271667", "DINERS"),
        ("6521000000000008", "RUPAY"),
        ("9999999999999995", "UNKNOWN"),
    ],
)
def test_brand_detection(number: str, brand: str) -> None:
    assert brand_of(number) == brand


def test_read_card_keeps_no_card_number_or_cvv() -> None:
    card = a_card("4242 4242 4242 4242", cvv="321")

    assert (card.brand, card.last4, card.masked) == ("VISA", "4242", "**** 4242")
    assert "4242424242424242" not in repr(card)
    assert "321" not in repr(card).replace(card.fingerprint, "")
    assert card.fingerprint == a_card("4242424242424242").fingerprint
    assert card.fingerprint != a_card("4111111111111111").fingerprint


def test_a_card_is_valid_through_its_expiry_month(clock: Clock) -> None:
    march = a_card("4242424242424242", month="03", year="26")
    february = a_card("4242424242424242", month="02", year="2026")

    assert not march.expired(clock.now)
    assert february.expired(clock.now)
    clock.now = datetime(2026, 3, 31, 23, 59, tzinfo=UTC).timestamp()
    assert not march.expired(clock.now)
    clock.now = datetime(2026, 4, 1, tzinfo=UTC).timestamp()
    assert march.expired(clock.now)


def test_cvv_length_follows_the_brand() -> None:
    assert a_card("378282246310005", cvv="1234").cvv_ok
    assert not a_card("378282246310005", cvv="123").cvv_ok
    assert not a_card("4242424242424242", cvv="1234").cvv_ok
    assert not a_card("4242424242424242", cvv="12a").cvv_ok
    assert a_card("4242424242424242", cvv="").cvv_ok


# --- ACS ----------------------------------------------------------------------------------


def test_challenge_expires_after_the_ttl_once(
    acs: Acs, clock: Clock, finished: list[Authentication]
) -> None:
    authentication = start(acs, "4000000000003220")
    clock.now += TTL - 0.01
    assert (
        acs.get(authentication.authentication_id).status is AuthenticationStatus.CHALLENGE_REQUIRED
    )

    clock.now += 0.02
    expired = acs.get(authentication.authentication_id)
    late = acs.submit_otp(authentication.authentication_id, magic.ACS_OTP)

    assert expired.status is AuthenticationStatus.FAILED
    assert expired.callback_status == "EXPIRED"
    assert late.status is AuthenticationStatus.FAILED
    assert finished == [authentication]
    assert authentication.finished_at == authentication.created_at + TTL


def test_a_timer_settles_as_of_the_due_moment(acs: Acs, finished: list[Authentication]) -> None:
    authentication = start(acs, "4000000000003220")
    assert authentication.expires_at is not None

    acs.settle(authentication, as_of=authentication.expires_at)

    assert finished == [authentication]
    assert authentication.failure_code == "CHALLENGE_EXPIRED"


def test_frictionless_authentication_calls_nothing_back(
    acs: Acs, finished: list[Authentication]
) -> None:
    authentication = start(acs, "4242424242424242")

    assert authentication.status is AuthenticationStatus.AUTHENTICATED
    assert not authentication.challenged
    assert authentication.expires_at is None
    assert finished == []


def test_challenge_callback_document(acs: Acs) -> None:
    authentication = start(acs, "5555555555554444", challenge_requested=True)
    acs.submit_otp(authentication.authentication_id, " 123456 ")

    document = json.loads(authentication.to_callback().body())

    assert document["provider"] == "acs"
    assert document["transaction_ref"] == "PAY_1"
    assert document["status"] == "SUCCESS"
    assert document["eci"] == "02"
    assert document["authentication_value"] == authentication.authentication_value
    assert document["three_ds_transaction_id"] == authentication.authentication_id
    assert document["protocol_version"] == "2.2.0"
    assert "5555555555554444" not in json.dumps(document)


def test_extra_callback_fields_never_replace_the_common_ones() -> None:
    callback = ProviderCallback(
        provider="acs",
        transaction_ref="PAY_1",
        provider_txn_id="TDS_1",
        status="SUCCESS",
        amount_paisa=1,
        occurred_at=datetime.now(UTC),
        extra={"status": "FAILED", "eci": "05"},
    )

    document = json.loads(callback.body())

    assert (document["status"], document["eci"]) == ("SUCCESS", "05")


def test_authenticating_a_payment_again_with_another_card_is_refused(acs: Acs) -> None:
    start(acs, "4242424242424242")

    with pytest.raises(AlreadyExists):
        start(acs, "5555555555554444")


# --- Acquirers ----------------------------------------------------------------------------


def test_uncaptured_authorization_expires_after_the_hold(
    acquirers: Acquirers, clock: Clock
) -> None:
    auth, _ = acquirers.authorize(
        "payu", "PAY_1", "MER_1", a_card("4242424242424242"), 5_000, "INR"
    )
    clock.now += magic.CARD_AUTHORIZATION_HOLD_SECONDS + 1

    result = acquirers.capture("payu", auth.acquirer_txn_id, "PAY_1", 5_000)

    assert (result.status, result.failure_code) == (CaptureStatus.FAILED, "AUTHORIZATION_EXPIRED")


def test_failover_card_is_down_only_on_the_first_gateway(acquirers: Acquirers) -> None:
    card = a_card("4000000000000119")

    with pytest.raises(Unavailable):
        acquirers.authorize("razorpay", "PAY_1", "MER_1", card, 5_000, "INR")
    approved, _ = acquirers.authorize("ccavenue", "PAY_1", "MER_1", card, 5_000, "INR")

    assert approved.status is AuthorizationStatus.APPROVED
    assert approved.acquirer_txn_id.startswith("CCAV_")


def test_3ds_data_is_honoured_only_for_its_payment_card_and_amount(
    acs: Acs, acquirers: Acquirers
) -> None:
    authentication = start(acs, "4000000000003220")
    acs.submit_otp(authentication.authentication_id, magic.ACS_OTP)
    data = ThreeDsData(
        authentication.eci,
        authentication.authentication_value,
        authentication.authentication_id,
    )
    card = a_card("4000000000003220")

    other_amount, _ = acquirers.authorize(
        "razorpay", "PAY_1", "MER_1", card, 9_999, "INR", three_ds=data
    )
    other_card, _ = acquirers.authorize(
        "payu", "PAY_1", "MER_1", a_card("4242424242424242"), 10_000, "INR", three_ds=data
    )
    wrong_eci, _ = acquirers.authorize(
        "ccavenue",
        "PAY_1",
        "MER_1",
        card,
        10_000,
        "INR",
        three_ds=ThreeDsData("02", authentication.authentication_value),
    )

    assert other_amount.decline == magic.DECLINE_AUTHENTICATION_FAILED
    assert other_card.decline == magic.DECLINE_AUTHENTICATION_FAILED
    assert wrong_eci.decline == magic.DECLINE_AUTHENTICATION_FAILED


def test_3ds_value_from_one_gateway_is_honoured_by_another_after_failover(
    acs: Acs, acquirers: Acquirers
) -> None:
    authentication = start(acs, "4000000000003220")
    acs.submit_otp(authentication.authentication_id, magic.ACS_OTP)
    data = ThreeDsData(authentication.eci, authentication.authentication_value)

    auth, _ = acquirers.authorize(
        "payu", "PAY_1", "MER_1", a_card("4000000000003220"), 10_000, "INR", three_ds=data
    )

    assert auth.status is AuthorizationStatus.APPROVED


def test_an_authorization_needing_a_challenge_can_be_authorized_again(
    acs: Acs, acquirers: Acquirers
) -> None:
    card = a_card("4000000000003220")
    first, _ = acquirers.authorize("razorpay", "PAY_1", "MER_1", card, 10_000, "INR")
    txn_id = first.acquirer_txn_id
    authentication = start(acs, "4000000000003220")
    acs.submit_otp(authentication.authentication_id, magic.ACS_OTP)

    second, _ = acquirers.authorize(
        "razorpay",
        "PAY_1",
        "MER_1",
        card,
        10_000,
        "INR",
        three_ds=ThreeDsData(authentication.eci, authentication.authentication_value),
    )

    assert first.status is AuthorizationStatus.REQUIRES_CHALLENGE
    assert second.status is AuthorizationStatus.APPROVED
    assert second.acquirer_txn_id == txn_id


def test_every_acquirer_is_down_for_the_all_acquirers_down_card(acquirers: Acquirers) -> None:
    card = a_card("4000000000005035")

    for gateway in magic.CARD_GATEWAYS:
        with pytest.raises(Unavailable) as raised:
            acquirers.authorize(gateway, "PAY_1", "MER_1", card, 5_000, "INR")
        assert raised.value.reason == "ACQUIRER_UNAVAILABLE"
    assert books_document([acquirers])["payments"] == []


def test_a_refused_void_leaves_the_authorization_capturable(acquirers: Acquirers) -> None:
    auth, _ = acquirers.authorize(
        "razorpay", "PAY_1", "MER_1", a_card("4000000000005399"), 5_000, "INR"
    )

    refused = acquirers.void("razorpay", auth.acquirer_txn_id, "PAY_1")
    again = acquirers.void("razorpay", auth.acquirer_txn_id, "PAY_1")
    captured = acquirers.capture("razorpay", auth.acquirer_txn_id, "PAY_1", 5_000)

    assert (refused.status, refused.failure_code, refused.applied) == (
        VoidStatus.FAILED,
        "VOID_NOT_ALLOWED",
        False,
    )
    assert again == refused
    assert (captured.status, captured.captured_paisa) == (CaptureStatus.CAPTURED, 5_000)
    assert not auth.voided


def test_capture_and_void_say_whether_this_call_applied_them(acquirers: Acquirers) -> None:
    card = a_card("4242424242424242")
    to_capture, _ = acquirers.authorize("payu", "PAY_C", "MER_1", card, 5_000, "INR")
    to_void, _ = acquirers.authorize("payu", "PAY_V", "MER_1", card, 5_000, "INR")

    first_capture = acquirers.capture("payu", to_capture.acquirer_txn_id, "PAY_C", 4_000)
    repeat_capture = acquirers.capture("payu", to_capture.acquirer_txn_id, "PAY_C", 4_000)
    first_void = acquirers.void("payu", to_void.acquirer_txn_id, "PAY_V")
    repeat_void = acquirers.void("payu", to_void.acquirer_txn_id, "PAY_V")

    assert (first_capture.applied, repeat_capture.applied) == (True, False)
    assert repeat_capture.status is CaptureStatus.CAPTURED
    assert (first_void.applied, repeat_void.applied) == (True, False)
    assert repeat_void.status is VoidStatus.VOIDED


def test_card_books_charge_only_what_was_captured(acquirers: Acquirers) -> None:
    card = a_card("4242424242424242")
    captured, _ = acquirers.authorize("razorpay", "PAY_CAP", "MER_1", card, 9_000, "INR")
    acquirers.capture("razorpay", captured.acquirer_txn_id, "PAY_CAP", 6_000)
    acquirers.refund("razorpay", captured.acquirer_txn_id, "PAY_CAP", "RF_1", 1_000)
    acquirers.refund("razorpay", captured.acquirer_txn_id, "PAY_CAP", "RF_2", 9_000)
    voided, _ = acquirers.authorize("payu", "PAY_VOID", "MER_1", card, 4_000, "INR")
    acquirers.void("payu", voided.acquirer_txn_id, "PAY_VOID")
    acquirers.authorize("ccavenue", "PAY_HELD", "MER_1", card, 3_000, "INR")
    acquirers.authorize(
        "razorpay", "PAY_DECLINED", "MER_1", a_card("4000000000000002"), 2_000, "INR"
    )

    books = books_document([acquirers])

    columns = [
        (
            p["provider"],
            p["payment_id"],
            p["status"],
            p["amount_paisa"],
            p["authorized_paisa"],
            p["captured_paisa"],
            p["voided"],
            p["charged_paisa"],
            p["refunded_paisa"],
        )
        for p in books["payments"]
    ]
    assert columns == [
        ("razorpay", "PAY_CAP", "APPROVED", 9_000, 9_000, 6_000, False, 6_000, 1_000),
        ("payu", "PAY_VOID", "APPROVED", 4_000, 4_000, 0, True, 0, 0),
        ("ccavenue", "PAY_HELD", "APPROVED", 3_000, 3_000, 0, False, 0, 0),
        ("razorpay", "PAY_DECLINED", "DECLINED", 2_000, 0, 0, False, 0, 0),
    ]
    assert books["refunds"] == [
        {
            "provider": "razorpay",
            "payment_id": "PAY_CAP",
            "refund_id": "RF_1",
            "amount_paisa": 1_000,
            "status": "PROCESSED",
        },
        {
            "provider": "razorpay",
            "payment_id": "PAY_CAP",
            "refund_id": "RF_2",
            "amount_paisa": 9_000,
            "status": "FAILED",
        },
    ]
