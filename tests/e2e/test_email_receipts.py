"""Email receipts, end to end: payments through Envoy, receipts read back from the SMTP server the
stack runs (aiosmtpd, every message kept in a Maildir at stack.mail_dir).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import mailbox
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from devstack.stack import Stack

pytestmark = pytest.mark.usefixtures("ledger_stays_consistent")

IST = timezone(timedelta(hours=5, minutes=30))
# The first receipt also waits for the receipts consumer to join its group (slow on Tansu).
PATIENCE_S = 90.0


def customer() -> str:
    return f"buyer-{uuid.uuid4().hex[:10]}@example.com"


def upi(amount: int, email_address: str | None) -> dict[str, Any]:
    metadata = {"order_id": uuid.uuid4().hex[:8]}
    if email_address is not None:
        metadata["customer_email"] = email_address
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "UPI",
        # A VPA of its own: success@upi's fraud velocity (₹1,00,000 a day, 3 a minute) is spent
        # by the modules before this one in a full run, and this test pays ₹1,00,000.
        "payment_details": {"vpa": f"buyer{uuid.uuid4().hex[:8]}@upi"},
        "description": "Order <b>42</b>",
        "metadata": metadata,
    }


def wallet(amount: int, email_address: str) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "WALLET",
        "payment_details": {"wallet": "PAYTM", "phone": "9999999999"},
        "metadata": {"customer_email": email_address},
    }


def mail_to(stack: Stack, address: str) -> list[EmailMessage]:
    assert stack.mail_dir is not None, "the test stack runs its own SMTP server"
    if not stack.mail_dir.exists():
        return []
    box = mailbox.Maildir(stack.mail_dir, create=False)
    found = []
    for key in box.iterkeys():
        raw = box.get_bytes(key)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if message["To"] == address:
            found.append(message)
    return found


async def wait_for_mail(stack: Stack, address: str, count: int = 1) -> list[EmailMessage]:
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        found = mail_to(stack, address)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.25)
    raise AssertionError(f"{count} email(s) to {address} never arrived")


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()


async def wait_for_log(stack: Stack, component: str, *needles: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        log = stack.log_text(component)
        if any(all(n in line for n in needles) for line in log.splitlines()):
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"no {component} log line with {needles}")


def ist_day(at: str) -> str:
    moment = datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone(IST)
    return f"{moment.day} {moment:%b} {moment.year}"


async def test_a_upi_receipt_shows_the_amount_in_rupees_with_indian_grouping(
    stack: Stack, payments: Any
) -> None:
    address = customer()
    payment = await payments.create(upi(10_000_000, address))
    paid = await payments.wait_for(payment["payment_id"], "SUCCESS")

    [receipt] = await wait_for_mail(stack, address)

    text, html = parts(receipt)
    merchant = payments.merchant["name"]
    assert receipt["Subject"] == f"Receipt for your payment of ₹1,00,000.00 to {merchant}"
    for body in (text, html):
        assert "₹1,00,000.00" in body
        assert payment["payment_id"] in body
        assert merchant in body
        assert f"UPI ({payment['payment_details']['vpa']})" in body
        assert f"{ist_day(paid['status_history'][-1]['at'])}, " in body
        assert " IST" in body
    # The merchant's text is escaped in the HTML part, and plain in the text part.
    assert "Order &lt;b&gt;42&lt;/b&gt;" in html
    assert "<b>42</b>" not in html
    assert "Order <b>42</b>" in text
    assert receipt["From"] == stack.env.get(
        "SMTP_FROM", "Paygate receipts <receipts@paygate.localhost>"
    )


async def test_a_card_receipt_names_the_brand_and_last_four_and_no_more_of_the_card(
    stack: Stack, payments: Any
) -> None:
    address = customer()
    payment = await payments.create(
        {
            "amount_paisa": 250_000,
            "currency": "INR",
            "payment_method": "CARD",
            "payment_details": {
                "card": {
                    "card_number": "4242424242424242",
                    "expiry_month": "12",
                    "expiry_year": "2030",
                    "cvv": "123",
                    "holder_name": "Asha Rao",
                }
            },
            "metadata": {"customer_email": address},
        }
    )
    await payments.wait_for(payment["payment_id"], "SUCCESS")

    [receipt] = await wait_for_mail(stack, address)

    text, html = parts(receipt)
    for body in (text, html):
        assert "Visa card ending 4242" in body
        assert "₹2,500.00" in body
    # Nothing of the card beyond its last four: not the number, its BIN or its holder.
    raw = receipt.as_string().replace(payment["payment_id"], "")
    for part in ("4242424242424242", "424242424242", "424242", "Asha Rao"):
        assert part not in raw


async def test_a_refund_gets_a_receipt_of_its_own(stack: Stack, payments: Any) -> None:
    address = customer()
    payment = await payments.create(wallet(150_000, address))
    assert payment["status"] == "SUCCESS"
    [paid] = await wait_for_mail(stack, address)

    reply = await payments.act(payment["payment_id"], "refund", {"amount_paisa": 20_000})
    assert reply.status_code == 200, reply.text
    refund = reply.json()

    receipts = await wait_for_mail(stack, address, count=2)

    [refunded] = [r for r in receipts if r["Message-ID"] != paid["Message-ID"]]
    text, html = parts(refunded)
    assert refunded["Subject"] == f"Refund of ₹200.00 from {payments.merchant['name']}"
    for body in (text, html):
        assert refund["refund_id"] in body
        assert payment["payment_id"] in body
        assert "₹200.00" in body
        assert "Paytm wallet" in body
        assert "9999999999" not in body
    assert "₹1,500.00" in parts(paid)[0]


async def test_no_receipt_without_a_valid_address_and_the_payment_is_unaffected(
    stack: Stack, payments: Any
) -> None:
    missing = await payments.create(upi(10_000, None))
    invalid = await payments.create(upi(10_000, "not-an-address"))
    for payment in (missing, invalid):
        await payments.wait_for(payment["payment_id"], "SUCCESS")
        await wait_for_log(
            stack, "webhook", "no valid metadata.customer_email", payment["payment_id"]
        )

    conn = await asyncpg.connect(stack.service_dsn("webhook"))
    try:
        queued = await conn.fetchval(
            "SELECT count(*) FROM webhook.emails WHERE body_text LIKE any($1)",
            [f"%{missing['payment_id']}%", f"%{invalid['payment_id']}%"],
        )
    finally:
        await conn.close()
    assert queued == 0
    assert mail_to(stack, "not-an-address") == []
    for payment in (missing, invalid):
        assert (await payments.get(payment["payment_id"]))["status"] == "SUCCESS"


async def test_an_event_consumed_twice_sends_one_receipt(
    stack: Stack, payments: Any, kafka_events: Any
) -> None:
    address = customer()
    payment = await payments.create(wallet(10_000, address))
    await wait_for_mail(stack, address)
    events = await kafka_events(payment["payment_id"], 3)
    [success] = [e for e in events if e["type"] == "payment.success"]

    # The broker delivers at least once: the same event again, as a redelivery would.
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            stack.env.get("KAFKA_TOPIC_PAYMENTS", "payments.events"),
            json.dumps(success).encode(),
            key=payment["payment_id"].encode(),
        )
    finally:
        await producer.stop()
    await wait_for_log(stack, "webhook", "receipt already queued", success["event_id"])

    await asyncio.sleep(2)  # a second email, if one were queued, would be sent by now
    assert len(mail_to(stack, address)) == 1
    assert datetime.now(UTC) > datetime.fromisoformat(success["occurred_at"].replace("Z", "+00:00"))
