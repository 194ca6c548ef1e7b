"""Receipt content, from an event to the email: amounts in rupees with Indian grouping, the
time in IST, the method without more of a card than its last four, the merchant's text escaped
in HTML, and which events and addresses get a receipt at all."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from webhook.receipts import (
    Receipt,
    customer_address,
    describe_method,
    ist,
    receipt_from_event,
    render_receipt,
    rupees,
)


def event(event_type: str = "payment.success", **payment: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "event_id": "EVT_01",
        "type": event_type,
        "occurred_at": "2026-12-05T18:45:12.123456789Z",
        "merchant_id": "MER_01",
        "payment_id": "PAY_01",
        "sequence": "3",
        "payment": {
            "payment_id": "PAY_01",
            "merchant_id": "MER_01",
            "amount_paisa": 10_000_000,
            "payment_method": "UPI",
            "payment_details": {"vpa": "asha@okbank"},
            "status": "SUCCESS",
            "metadata": {"customer_email": "asha@example.com"},
            "updated_at": "2026-12-05T18:45:12Z",
            **payment,
        },
    }
    if event_type.startswith("refund."):
        document["refund"] = {
            "refund_id": "REF_01",
            "amount_paisa": 20_000,
            "processed_at": "2026-12-06T04:00:00Z",
        }
    return document


@pytest.mark.parametrize(
    ("paisa", "text"),
    [
        (1, "₹0.01"),
        (10_000, "₹100.00"),
        (250_000, "₹2,500.00"),
        (10_000_000, "₹1,00,000.00"),
        (123_456_789, "₹12,34,567.89"),
        (1_000_000_000, "₹1,00,00,000.00"),
    ],
)
def test_amounts_are_rupees_with_indian_digit_grouping(paisa: int, text: str) -> None:
    assert rupees(paisa) == text


def test_times_are_shown_in_ist() -> None:
    assert ist(datetime(2026, 12, 5, 18, 45, tzinfo=UTC)) == "6 Dec 2026, 12:15 am IST"


@pytest.mark.parametrize(
    ("payment", "shown"),
    [
        ({"payment_method": "UPI", "payment_details": {"vpa": "asha@okbank"}}, "UPI (asha@okbank)"),
        (
            {"payment_method": "CARD", "card": {"brand": "VISA", "last4": "4242"}},
            "Visa card ending 4242",
        ),
        ({"payment_method": "CARD", "card": {"brand": "RUPAY", "last4": "4242x"}}, "RuPay card"),
        (
            {"payment_method": "CARD", "card": {"brand": "AMEX", "last4": "42424"}},
            "American Express card",
        ),
        (
            {"payment_method": "WALLET", "payment_details": {"wallet": "PHONEPE", "phone": "98"}},
            "PhonePe wallet",
        ),
        (
            {"payment_method": "NET_BANKING", "payment_details": {"bank_code": "HDFC"}},
            "Net banking (HDFC)",
        ),
    ],
)
def test_the_method_never_shows_more_than_a_cards_last_four(
    payment: dict[str, Any], shown: str
) -> None:
    assert describe_method(payment) == shown


def test_a_payment_success_asks_for_a_payment_receipt() -> None:
    receipt = receipt_from_event(event())

    assert receipt is not None
    assert (receipt.kind, receipt.amount_paisa, receipt.refund_id) == ("payment", 10_000_000, "")
    assert receipt.at == datetime(2026, 12, 5, 18, 45, 12, 123456, tzinfo=UTC)
    assert receipt.customer_email == "asha@example.com"


def test_a_processed_refund_asks_for_a_refund_receipt_of_the_refunded_amount() -> None:
    receipt = receipt_from_event(event("refund.processed"))

    assert receipt is not None
    assert (receipt.kind, receipt.amount_paisa, receipt.refund_id) == ("refund", 20_000, "REF_01")
    assert receipt.at == datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "event_type", ["payment.pending", "payment.failed", "refund.created", "refund.failed"]
)
def test_other_events_get_no_receipt(event_type: str) -> None:
    assert receipt_from_event(event(event_type)) is None


def receipt_to(address: str) -> Receipt:
    receipt = receipt_from_event(event(metadata={"customer_email": address}))
    assert receipt is not None
    return receipt


@pytest.mark.parametrize("address", ["", "   ", "not-an-address", "a@b", "two@@example.com"])
def test_a_missing_or_invalid_address_gets_no_receipt(address: str) -> None:
    assert customer_address(receipt_to(address)) is None


def test_a_valid_address_is_normalized() -> None:
    assert customer_address(receipt_to(" Asha@Example.COM ")) == "Asha@example.com"


def test_the_email_escapes_the_merchants_text_in_html_and_keeps_headers_on_one_line() -> None:
    receipt = receipt_from_event(event(description='<script>alert("x")</script>'))
    assert receipt is not None

    email = render_receipt(receipt, "Chai <Point>\r\nBcc: x@evil.example")

    assert email.subject == (
        "Receipt for your payment of ₹1,00,000.00 to Chai <Point> Bcc: x@evil.example"
    )
    assert "<script>" not in email.html
    assert "&lt;script&gt;" in email.html
    assert "Chai &lt;Point&gt;" in email.html
    assert '<script>alert("x")</script>' in email.text
    for body in (email.text, email.html):
        assert "₹1,00,000.00" in body
        assert "PAY_01" in body
        assert "UPI (asha@okbank)" in body
        assert "6 Dec 2026, 12:15 am IST" in body
