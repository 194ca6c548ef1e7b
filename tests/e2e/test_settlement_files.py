"""The simulated providers' settlement files, end to end: payments made through Envoy with
`metadata.sandbox_settlement`, which the gateway forwards to each provider; each provider's file
for today (IST) fetched over HTTP with its report key, as reconciliation will fetch it."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from devstack.stack import Stack
from gateway_core.money import rupees_string

pytestmark = pytest.mark.usefixtures("ledger_stays_consistent")

HEADER = (
    "provider_reference,merchant_reference,type,amount,fee,tax,currency,settled_at,"
    "settlement_id,utr,method"
)
FUTURE_YEAR = str(datetime.now().year + 3)


def today() -> str:
    return datetime.now(ZoneInfo("Asia/Kolkata")).date().isoformat()


class Reports:
    """The sandbox's settlement-report API, as a provider's customer calls it."""

    def __init__(self, stack: Stack) -> None:
        self.base = stack.env["SANDBOX_PUBLIC_URL"]
        self.keys: dict[str, str] = json.loads(stack.env["PROVIDER_REPORT_KEYS"])

    async def fetch(self, provider: str, day: str, key: str | None = None) -> httpx.Response:
        key = self.keys.get(provider, "") if key is None else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.get(
                f"{self.base}/settlements/{provider}/{day}.csv", headers=headers
            )

    async def lines(self, provider: str, day: str) -> list[dict[str, str]]:
        reply = await self.fetch(provider, day)
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"].startswith("text/csv")
        assert reply.text.splitlines()[0] == HEADER
        return list(csv.DictReader(io.StringIO(reply.text)))

    async def release(self, provider: str, body: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(f"{self.base}/settlements/{provider}/release", json=body)


@pytest.fixture
def reports(stack: Stack) -> Reports:
    return Reports(stack)


def upi(instruction: str = "", amount: int = 10_000) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": "success@upi"},
        "metadata": {"order_id": "42", **_note(instruction)},
    }


def _note(instruction: str) -> dict[str, str]:
    return {"sandbox_settlement": instruction} if instruction else {}


def about(lines: list[dict[str, str]], *references: str) -> list[dict[str, str]]:
    return [line for line in lines if line["merchant_reference"] in references]


async def test_each_method_settles_from_the_providers_books_with_the_discrepancies_asked_for(
    payments: Any, reports: Reports
) -> None:
    duplicated = await payments.create(upi("DUPLICATE", 12_345))
    omitted = await payments.create(upi("OMIT"))
    card = await payments.create(
        {
            "amount_paisa": 20_000,
            "currency": "INR",
            "payment_method": "CARD",
            "payment_details": {
                "card": {
                    "card_number": "4111111111111111",
                    "expiry_month": "12",
                    "expiry_year": FUTURE_YEAR,
                    "cvv": "123",
                }
            },
            "metadata": _note("AMOUNT_MISMATCH"),
        }
    )
    wallet = await payments.create(
        {
            "amount_paisa": 50_000,
            "currency": "INR",
            "payment_method": "WALLET",
            "payment_details": {"wallet": "PHONEPE", "phone": "9999999999"},
            "metadata": _note("FEE_MISMATCH"),
        }
    )
    bank = await payments.create(
        {
            "amount_paisa": 25_000,
            "currency": "INR",
            "payment_method": "NET_BANKING",
            "payment_details": {"bank_code": "HDFC"},
            "metadata": _note("EXTRA"),
        }
    )
    async with httpx.AsyncClient(timeout=10) as browser:
        approved = await browser.post(
            bank["next_action"]["redirect_url"], data={"action": "approve"}
        )
        assert approved.status_code == 303
    for made in (duplicated, omitted, card, wallet, bank):
        await payments.wait_for(made["payment_id"], "SUCCESS")
    refunded = await payments.act(card["payment_id"], "refund", {"amount_paisa": 5_000})
    assert refunded.status_code == 200, refunded.text
    card = await payments.get(card["payment_id"])
    (refund,) = card["refunds"]
    assert refund["status"] == "PROCESSED"
    duplicated = await payments.get(duplicated["payment_id"])
    wallet = await payments.get(wallet["payment_id"])
    bank = await payments.get(bank["payment_id"])
    day = today()

    upi_lines = await reports.lines("upi_core", day)
    ours = about(upi_lines, duplicated["payment_id"], omitted["payment_id"])
    line = {
        "provider_reference": duplicated["external_txn_id"],
        "merchant_reference": duplicated["payment_id"],
        "type": "payment",
        "amount": "123.45",
        "fee": "0.00",
        "tax": "0.00",
        "currency": "INR",
        "method": "UPI",
    }
    assert [{k: v for k, v in x.items() if k in line} for x in ours] == [line, line]
    # One settlement, one transfer: the same id and UTR on every line, settled today (IST).
    assert len({(x["settlement_id"], x["utr"]) for x in upi_lines}) == 1
    assert all(x["settled_at"].startswith(f"{day}T") for x in upi_lines)
    assert all(x["settled_at"].endswith("+05:30") for x in upi_lines)

    card_lines = about(
        await reports.lines(card["provider"], day), card["payment_id"], refund["refund_id"]
    )
    assert [
        (x["provider_reference"], x["type"], x["amount"], x["fee"], x["tax"], x["method"])
        for x in card_lines
    ] == [
        # 100 paisa short, fee and GST as the gateway charged them (2 % + 18 %).
        (
            card["external_txn_id"],
            "payment",
            "199.00",
            rupees_string(card["fees_paisa"]),
            rupees_string(card["tax_paisa"]),
            "CARD",
        ),
        (refund["external_refund_id"], "refund", "50.00", "0.00", "0.00", "CARD"),
    ]
    assert (card["fees_paisa"], card["tax_paisa"]) == (400, 72)

    (wallet_line,) = about(await reports.lines("phonepe", day), wallet["payment_id"])
    # The gateway charged 9.50 + 1.71; the wallet one rupee more, with its GST.
    assert (wallet["fees_paisa"], wallet["tax_paisa"]) == (950, 171)
    assert (wallet_line["provider_reference"], wallet_line["amount"]) == (
        wallet["external_txn_id"],
        "500.00",
    )
    assert (wallet_line["fee"], wallet_line["tax"]) == ("10.50", "1.89")

    bank_lines = await reports.lines("netbanking", day)
    (bank_line,) = about(bank_lines, bank["payment_id"])
    assert (bank_line["provider_reference"], bank_line["amount"], bank_line["fee"]) == (
        bank["external_txn_id"],
        "250.00",
        rupees_string(bank["fees_paisa"]),
    )
    position = bank_lines.index(bank_line)
    stranger = bank_lines[position + 1]
    assert stranger["merchant_reference"].startswith("pay_")
    assert stranger["provider_reference"] not in (bank["external_txn_id"], "")
    assert (stranger["type"], stranger["amount"]) == ("payment", "250.00")


async def test_an_omitted_payment_settles_on_the_day_it_is_released(
    payments: Any, reports: Reports
) -> None:
    omitted = await payments.create(upi("OMIT", 30_000))
    paid = await payments.wait_for(omitted["payment_id"], "SUCCESS")
    day = today()
    later = (datetime.fromisoformat(day) + timedelta(days=2)).date().isoformat()

    assert about(await reports.lines("upi_core", day), paid["payment_id"]) == []
    early = await reports.release(
        "upi_core", {"payment_id": paid["payment_id"], "date": "2020-01-01"}
    )
    assert early.status_code == 400
    assert early.json()["error"]["reason"] == "RELEASE_BEFORE_DUE"
    released = await reports.release("upi_core", {"payment_id": paid["payment_id"], "date": later})
    assert released.status_code == 200, released.text

    assert about(await reports.lines("upi_core", day), paid["payment_id"]) == []
    (line,) = about(await reports.lines("upi_core", later), paid["payment_id"])
    assert (line["provider_reference"], line["amount"]) == (paid["external_txn_id"], "300.00")
    assert line["settled_at"].startswith(later)


async def test_only_the_providers_key_opens_its_settlement_files(reports: Reports) -> None:
    day = today()

    missing = await reports.fetch("upi_core", day, key="")
    wrong = await reports.fetch("upi_core", day, key="not-the-key-" + "x" * 32)
    anothers = await reports.fetch("upi_core", day, key=reports.keys["razorpay"])
    assert [r.status_code for r in (missing, wrong, anothers)] == [401, 401, 401]
    assert missing.json()["error"]["reason"] == "REPORT_KEY_INVALID"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "provider_reference" not in wrong.text
    assert (await reports.fetch("nobank", day, key="x")).status_code == 404
    assert (await reports.fetch("upi_core", "2026-13-45")).status_code == 400


async def test_a_day_without_settlements_is_a_header_only_file(reports: Reports) -> None:
    reply = await reports.fetch("ccavenue", "2001-01-01")

    assert reply.status_code == 200
    assert reply.text == HEADER + "\n"


async def test_the_sandbox_lists_every_provider_with_its_method(reports: Reports) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.get(f"{reports.base}/settlements/providers")

    assert reply.status_code == 200
    assert reply.json() == [
        {"provider": "upi_core", "method": "UPI"},
        {"provider": "razorpay", "method": "CARD"},
        {"provider": "payu", "method": "CARD"},
        {"provider": "ccavenue", "method": "CARD"},
        {"provider": "paytm", "method": "WALLET"},
        {"provider": "phonepe", "method": "WALLET"},
        {"provider": "google_pay", "method": "WALLET"},
        {"provider": "amazon_pay", "method": "WALLET"},
        {"provider": "netbanking", "method": "NET_BANKING"},
    ]
    assert set(reports.keys) == {entry["provider"] for entry in reply.json()}


async def test_the_events_carry_what_the_file_is_matched_with(
    payments: Any, reports: Reports, kafka_events: Any
) -> None:
    """Reconciliation learns payments and refunds from payments.events only: each line of the
    file must find its payment (or refund) there by reference, amount, fee, tax and date."""
    made = await payments.create(
        {
            "amount_paisa": 40_000,
            "currency": "INR",
            "payment_method": "WALLET",
            "payment_details": {"wallet": "AMAZON_PAY", "phone": "9999999999"},
        }
    )
    await payments.wait_for(made["payment_id"], "SUCCESS")
    refunded = await payments.act(made["payment_id"], "refund", {"amount_paisa": 15_000})
    assert refunded.status_code == 200, refunded.text
    await payments.wait_for(made["payment_id"], "PARTIALLY_REFUNDED")
    day = today()
    events = await kafka_events(made["payment_id"], want=4)
    (succeeded,) = [e for e in events if e["type"] == "payment.success"]
    (processed,) = [e for e in events if e["type"] == "refund.processed"]
    payment, refund = succeeded["payment"], processed["refund"]
    paid_line, refund_line = about(
        await reports.lines("amazon_pay", day), made["payment_id"], refund["refund_id"]
    )

    assert (payment["provider"], payment["status"]) == ("amazon_pay", "SUCCESS")
    assert payment["external_txn_id"] == paid_line["provider_reference"]
    assert rupees_string(int(payment["amount_paisa"])) == paid_line["amount"]
    assert rupees_string(int(payment["fees_paisa"])) == paid_line["fee"] == "7.60"
    assert rupees_string(int(payment["tax_paisa"])) == paid_line["tax"] == "1.37"
    captured_at = datetime.fromisoformat(payment["processed_at"].replace("Z", "+00:00"))
    assert captured_at.astimezone(ZoneInfo("Asia/Kolkata")).date().isoformat() == day
    assert refund["external_refund_id"] == refund_line["provider_reference"]
    assert (refund["payment_id"], refund["status"]) == (made["payment_id"], "PROCESSED")
    assert rupees_string(int(refund["amount_paisa"])) == refund_line["amount"] == "150.00"
    assert "processed_at" in refund
