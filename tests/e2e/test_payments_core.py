"""Payments core, end to end through Envoy: UPI, wallets, net banking, capture, cancel,
refunds, idempotency, signed provider callbacks, the ledger and the event stream.

After every test the ledger's invariants are checked against the real database.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from devstack import Stack
from gateway_core.signing import sign_callback
from orchestrator.domain.states import EVENT_FOR_STATUS, Status

Token = Callable[..., str]
EventReader = Callable[..., Awaitable[list[dict[str, Any]]]]


pytestmark = pytest.mark.usefixtures("ledger_stays_consistent")


def upi(vpa: str = "success@upi", amount: int = 10000, **extra: Any) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": vpa},
        "description": "Order 42",
        **extra,
    }


def wallet(phone: str = "9999999999", amount: int = 10000, **extra: Any) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "WALLET",
        "payment_details": {"wallet": "PAYTM", "phone": phone},
        **extra,
    }


async def create(
    api: httpx.AsyncClient, merchant: dict[str, Any], body: dict[str, Any], **headers: str
) -> dict[str, Any]:
    reply = await api.post("/api/v1/payments", json=body, headers={**merchant["auth"], **headers})
    assert reply.status_code == 200, reply.text
    payment: dict[str, Any] = reply.json()
    return payment


async def wait_for(
    api: httpx.AsyncClient,
    merchant: dict[str, Any],
    payment_id: str,
    status: str,
    within: float = 15,
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    seen = ""
    while time.monotonic() < deadline:
        reply = await api.get(f"/api/v1/payments/{payment_id}", headers=merchant["auth"])
        assert reply.status_code == 200, reply.text
        payment: dict[str, Any] = reply.json()
        seen = payment["status"]
        if seen == status:
            return payment
        await asyncio.sleep(0.2)
    raise AssertionError(f"{payment_id} stayed {seen}, never {status}")


def error_reason(reply: httpx.Response) -> str:
    for detail in reply.json().get("details", []):
        if detail.get("@type", "").endswith("ErrorInfo"):
            return str(detail["reason"])
    return ""


def fields(reply: httpx.Response) -> list[str]:
    return [v["field"] for d in reply.json()["details"] for v in d.get("field_violations", [])]


async def balance(api: httpx.AsyncClient, merchant: dict[str, Any]) -> dict[str, Any]:
    reply = await api.get(
        f"/api/v1/admin/merchants/{merchant['merchant_id']}/balance", headers=merchant["admin"]
    )
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()
    return found


# UPI


async def test_upi_success_is_approved_and_posted_to_the_ledger(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await create(api, merchant, upi("success@upi"))
    assert payment["status"] == "PENDING"
    done = await wait_for(api, merchant, payment["payment_id"], "SUCCESS", within=5)
    assert done["fees_paisa"] == 0
    assert re.fullmatch(r"\d{12}", done["gateway_response"]["rrn"])
    assert done["processed_at"]
    assert [s["to_status"] for s in done["status_history"]] == ["CREATED", "PENDING", "SUCCESS"]
    # Only the method's own details: no empty wallet, phone, bank_code or card_token.
    assert done["payment_details"] == {"vpa": "success@upi", "upi_flow": "INTENT"}
    assert [(a["provider"], a["status"]) for a in done["attempts"]] == [("upi_core", "SERVING")]
    money = await balance(api, merchant)
    assert (money["captured_paisa"], money["payable_paisa"], money["fees_paisa"]) == (
        "10000",
        "10000",
        "0",
    )


async def test_upi_decline_fails_the_payment(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await create(api, merchant, upi("failure@upi"))
    failed = await wait_for(api, merchant, payment["payment_id"], "FAILED", within=5)
    assert failed["failure_reason"]
    assert (await balance(api, merchant))["captured_paisa"] == "0"


async def test_upi_timeout_is_resolved_by_status_inquiry(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    started = time.monotonic()
    payment = await create(api, merchant, upi("timeout@upi"))
    assert time.monotonic() - started < 4.5  # the switch's silence does not hang the merchant
    assert payment["status"] == "PENDING"
    done = await wait_for(api, merchant, payment["payment_id"], "SUCCESS", within=15)
    assert any("inquiry" in s["reason"] for s in done["status_history"])


async def test_unapproved_upi_payment_expires(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await create(api, merchant, upi("manual@upi", expire_after_seconds=2))
    expired = await wait_for(api, merchant, payment["payment_id"], "EXPIRED", within=10)
    assert expired["status_history"][-1]["from_status"] == "PENDING"


# Wallets and net banking


async def test_wallet_with_balance_succeeds_at_once_with_fee_gst_and_cashback(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await create(api, merchant, wallet("9999999999", amount=10000))
    assert payment["status"] == "SUCCESS"
    assert payment["provider"] == "paytm"
    assert (payment["fees_paisa"], payment["tax_paisa"]) == (190, 34)
    assert int(payment["gateway_response"]["cashback_paisa"]) > 0
    # Only the method's own details: no empty vpa, upi_flow, bank_code or card_token.
    assert payment["payment_details"] == {"wallet": "PAYTM", "phone": "9999999999"}
    money = await balance(api, merchant)
    assert money["payable_paisa"] == str(10000 - 190 - 34)
    assert (money["fees_paisa"], money["tax_paisa"]) == ("190", "34")


async def test_wallet_without_balance_fails_without_a_debit(
    api: httpx.AsyncClient, merchant: dict[str, Any], provider_books: Any
) -> None:
    payment = await create(api, merchant, wallet("9000000000"))
    assert payment["status"] == "FAILED"
    assert payment["failure_reason"] == "insufficient_balance"
    # The wallet was never asked to debit: it has no record of the payment at all.
    books = await provider_books.all()
    assert [p for p in books["payments"] if p["payment_id"] == payment["payment_id"]] == []


async def test_net_banking_redirects_then_the_bank_callback_completes_it(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    body = {
        "amount_paisa": 25000,
        "currency": "INR",
        "payment_method": "NET_BANKING",
        "payment_details": {"bank_code": "HDFC"},
        "callback_url": "https://merchant.example/return",
    }
    payment = await create(api, merchant, body)
    assert payment["status"] == "REQUIRES_ACTION"
    redirect = payment["next_action"]["redirect_url"]
    assert payment["next_action"]["type"] == "REDIRECT"
    async with httpx.AsyncClient(timeout=10) as browser:
        page = await browser.get(redirect)
        assert page.status_code == 200
        assert "<form" in page.text
        submitted = await browser.post(redirect, data={"action": "approve"})
        assert submitted.status_code == 303
        assert submitted.headers["location"].startswith("https://merchant.example/return")
    done = await wait_for(api, merchant, payment["payment_id"], "SUCCESS", within=5)
    assert done["fees_paisa"] == 475  # 1.9 % of ₹250
    # The bank's page is not a request field: only the bank code shows.
    assert done["payment_details"] == {"bank_code": "HDFC"}


async def test_net_banking_failure_at_the_bank_fails_the_payment(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    body = {
        "amount_paisa": 5000,
        "currency": "INR",
        "payment_method": "NET_BANKING",
        "payment_details": {"bank_code": "FAIL"},
    }
    payment = await create(api, merchant, body)
    async with httpx.AsyncClient(timeout=10) as browser:
        await browser.post(payment["next_action"]["redirect_url"], data={"action": "approve"})
    await wait_for(api, merchant, payment["payment_id"], "FAILED", within=5)


# Capture and cancel


async def test_manual_capture_then_a_second_capture_is_refused(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await create(api, merchant, wallet(capture_method="MANUAL"))
    assert payment["status"] == "AUTHORIZED"
    assert (await balance(api, merchant))["captured_paisa"] == "0"
    path = f"/api/v1/payments/{payment['payment_id']}/capture"
    captured = await api.post(path, json={}, headers=merchant["auth"])
    assert captured.status_code == 200, captured.text
    assert captured.json()["status"] == "SUCCESS"
    again = await api.post(path, json={}, headers=merchant["auth"])
    assert again.status_code == 409
    assert error_reason(again) == "PAYMENT_NOT_AUTHORIZED"
    assert (await balance(api, merchant))["captured_paisa"] == "10000"


async def test_cancel_a_pending_payment_then_cancel_again_is_refused(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await create(api, merchant, upi("manual@upi"))
    path = f"/api/v1/payments/{payment['payment_id']}/cancel"
    cancelled = await api.post(path, json={"reason": "customer left"}, headers=merchant["auth"])
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED"
    again = await api.post(path, json={}, headers=merchant["auth"])
    assert again.status_code == 409
    assert error_reason(again) == "PAYMENT_NOT_CANCELLABLE"


async def test_cancel_an_authorized_wallet_payment_voids_it(
    api: httpx.AsyncClient, merchant: dict[str, Any], provider_books: Any
) -> None:
    payment = await create(api, merchant, wallet(capture_method="MANUAL"))
    assert await provider_books.holds(payment["payment_id"]) == 10000  # debited, held
    path = f"/api/v1/payments/{payment['payment_id']}/cancel"
    cancelled = await api.post(path, json={}, headers=merchant["auth"])
    assert cancelled.json()["status"] == "CANCELLED"
    # The customer has the money back at the wallet, and the merchant was never credited.
    assert await provider_books.holds(payment["payment_id"]) == 0
    assert (await balance(api, merchant))["captured_paisa"] == "0"


# Refunds


async def test_partial_then_full_refund(api: httpx.AsyncClient, merchant: dict[str, Any]) -> None:
    payment = await create(api, merchant, wallet(amount=10000))
    path = f"/api/v1/payments/{payment['payment_id']}/refund"
    first = await api.post(
        path, json={"amount_paisa": 3000, "reason": "one item back"}, headers=merchant["auth"]
    )
    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["amount_paisa"]) == ("PROCESSED", 3000)
    partial = await wait_for(api, merchant, payment["payment_id"], "PARTIALLY_REFUNDED")
    assert partial["refunded_amount_paisa"] == 3000
    rest = await api.post(path, json={}, headers=merchant["auth"])
    assert rest.json()["amount_paisa"] == 7000
    done = await wait_for(api, merchant, payment["payment_id"], "REFUNDED")
    assert [r["status"] for r in done["refunds"]] == ["PROCESSED", "PROCESSED"]
    more = await api.post(path, json={"amount_paisa": 1}, headers=merchant["auth"])
    assert more.status_code == 400
    money = await balance(api, merchant)
    assert money["refunded_paisa"] == "10000"
    assert money["payable_paisa"] == str(-(190 + 34))  # fees are not returned on refunds


async def test_concurrent_refunds_never_exceed_the_captured_amount(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await create(api, merchant, upi("success@upi", amount=10000))
    await wait_for(api, merchant, payment["payment_id"], "SUCCESS", within=5)
    path = f"/api/v1/payments/{payment['payment_id']}/refund"
    replies = await asyncio.gather(
        *(api.post(path, json={"amount_paisa": 700}, headers=merchant["auth"]) for _ in range(20))
    )
    accepted = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code != 200]
    assert len(accepted) == 14  # 14 x 700 = 9800 fits in 10000; a 15th would not
    assert all(r.status_code == 400 for r in refused)
    assert all(error_reason(r) == "REFUND_EXCEEDS_CAPTURED" for r in refused)
    final = await wait_for(api, merchant, payment["payment_id"], "PARTIALLY_REFUNDED")
    assert final["refunded_amount_paisa"] == 9800


async def test_refund_of_an_unpaid_or_unknown_payment_is_refused(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    pending = await create(api, merchant, upi("manual@upi"))
    unpaid = await api.post(
        f"/api/v1/payments/{pending['payment_id']}/refund", json={}, headers=merchant["auth"]
    )
    assert unpaid.status_code == 400
    assert error_reason(unpaid) == "PAYMENT_NOT_CAPTURED"
    unknown = await api.post("/api/v1/payments/PAY_NOPE/refund", json={}, headers=merchant["auth"])
    assert unknown.status_code == 404


# Idempotency


async def test_concurrent_creates_with_one_key_make_one_payment(
    api: httpx.AsyncClient, merchant: dict[str, Any], stack: Stack
) -> None:
    """Concurrent duplicates: one payment; a duplicate that arrives while the first runs is
    told so (409 IDEMPOTENCY_IN_PROGRESS, as at Stripe), and every later one gets the first
    answer, byte for byte."""
    key = f"order-{uuid.uuid4()}"
    headers = {**merchant["auth"], "Idempotency-Key": key}
    replies = await asyncio.gather(
        *(api.post("/api/v1/payments", json=wallet(), headers=headers) for _ in range(20))
    )
    answers = [r for r in replies if r.status_code == 200]
    busy = [r for r in replies if r.status_code != 200]
    assert answers
    assert len({r.text for r in answers}) == 1
    assert {(r.status_code, error_reason(r)) for r in busy} <= {(409, "IDEMPOTENCY_IN_PROGRESS")}
    later = await api.post("/api/v1/payments", json=wallet(), headers=headers)
    assert later.text == answers[0].text
    conn = await asyncpg.connect(stack.dsn)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM orchestrator.payments WHERE merchant_id = $1",
            merchant["merchant_id"],
        )
    finally:
        await conn.close()
    assert count == 1


async def test_reusing_a_key_for_a_different_request_is_refused(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    key = f"order-{uuid.uuid4()}"
    await create(api, merchant, wallet(amount=1000), **{"Idempotency-Key": key})
    reply = await api.post(
        "/api/v1/payments",
        json=wallet(amount=2000),
        headers={**merchant["auth"], "Idempotency-Key": key},
    )
    assert reply.status_code == 409
    assert error_reason(reply) == "IDEMPOTENCY_KEY_REUSED"


# Provider callbacks


async def test_forged_or_replayed_callbacks_change_nothing(
    api: httpx.AsyncClient, merchant: dict[str, Any], stack: Stack
) -> None:
    payment = await create(api, merchant, upi("manual@upi"))
    document = {
        "event_id": f"evt-{uuid.uuid4()}",
        "provider": "upi_core",
        "transaction_ref": payment["payment_id"],
        "provider_txn_id": "UPI123",
        "status": "SUCCESS",
        "amount_paisa": 10000,
    }
    body = json.dumps(document).encode()
    path = "/api/v1/provider-callbacks/upi_core"
    headers = {"content-type": "application/json"}

    forged = await api.post(
        path, content=body, headers={**headers, "x-provider-signature": "t=1,v1=00"}
    )
    assert forged.status_code == 401
    unsigned = await api.post(path, content=body, headers=headers)
    assert unsigned.status_code == 401
    wrong_key = sign_callback("not-the-providers-secret", body)
    assert (
        await api.post(path, content=body, headers={**headers, "x-provider-signature": wrong_key})
    ).status_code == 401
    assert (await wait_for(api, merchant, payment["payment_id"], "PENDING"))["status"] == "PENDING"

    secret = stack.env["PROVIDER_CALLBACK_SECRET_UPI_CORE"]
    signed = {**headers, "x-provider-signature": sign_callback(secret, body)}
    first = await api.post(path, content=body, headers=signed)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "applied": True,
        "payment_id": payment["payment_id"],
        "status": "SUCCESS",
    }
    replay = await api.post(path, content=body, headers=signed)
    assert replay.json()["applied"] is False
    # The approval this test's callback reported, made at the switch too, so the provider's
    # books agree with the gateway's; its own callback is one more replay.
    async with httpx.AsyncClient(timeout=10) as control:
        approved = await control.post(
            f"{stack.env['SANDBOX_PUBLIC_URL']}/upi/transactions/{payment['payment_id']}/approve"
        )
        assert approved.status_code == 200, approved.text
    history = (await wait_for(api, merchant, payment["payment_id"], "SUCCESS"))["status_history"]
    assert [s["to_status"] for s in history].count("SUCCESS") == 1


# Listing, bad input, events


async def test_list_pages_through_the_callers_payments_with_filters(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    created = [await create(api, merchant, wallet(amount=1000 + i)) for i in range(5)]
    await create(api, merchant, wallet("9000000000"))
    seen: list[str] = []
    token = ""
    while True:
        reply = await api.get(
            "/api/v1/payments",
            params={"page_size": 2, "status": "SUCCESS", "page_token": token},
            headers=merchant["auth"],
        )
        assert reply.status_code == 200, reply.text
        page = reply.json()
        seen += [p["payment_id"] for p in page["payments"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == [p["payment_id"] for p in reversed(created)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            wallet() | {"payment_details": {"wallet": "BITCOIN", "phone": "9999999999"}},
            "payment_details.wallet",
        ),
        (
            wallet() | {"payment_details": {"wallet": "PAYTM", "phone": "123"}},
            "payment_details.phone",
        ),
        (upi(capture_method="MANUAL"), "capture_method"),
        (upi(amount=100_000_001), "amount_paisa"),
        (upi(expire_after_seconds=-5), "expire_after_seconds"),
        (
            {
                "amount_paisa": 100,
                "currency": "INR",
                "payment_method": "NET_BANKING",
                "payment_details": {"bank_code": "hdfc bank"},
            },
            "payment_details.bank_code",
        ),
    ],
)
async def test_bad_input_is_a_named_400_with_no_payment_and_no_event(
    api: httpx.AsyncClient,
    merchant: dict[str, Any],
    stack: Stack,
    body: dict[str, Any],
    field: str,
) -> None:
    reply = await api.post("/api/v1/payments", json=body, headers=merchant["auth"])
    assert reply.status_code == 400, reply.text
    assert field in fields(reply)
    listing = await api.get("/api/v1/payments", headers=merchant["auth"])
    assert listing.json()["payments"] == []
    conn = await asyncpg.connect(stack.dsn)
    try:
        events = await conn.fetchval(
            "SELECT count(*) FROM orchestrator.outbox WHERE position($1::bytea IN payload) > 0",
            merchant["merchant_id"].encode(),
        )
    finally:
        await conn.close()
    assert events == 0


async def test_events_on_kafka_match_the_state_changes_one_for_one(
    api: httpx.AsyncClient, merchant: dict[str, Any], kafka_events: EventReader
) -> None:
    payment = await create(api, merchant, wallet(amount=5000))
    path = f"/api/v1/payments/{payment['payment_id']}/refund"
    await api.post(path, json={"amount_paisa": 2000}, headers=merchant["auth"])
    final = await wait_for(api, merchant, payment["payment_id"], "PARTIALLY_REFUNDED")
    expected = [EVENT_FOR_STATUS[Status(s["to_status"])] for s in final["status_history"]]
    want = len(expected) + 2  # and refund.created, refund.processed
    events = await kafka_events(payment["payment_id"], want=want)
    status_events = [e["type"] for e in events if not e["type"].startswith("refund.")]
    assert status_events == expected
    assert [e["type"] for e in events if e["type"].startswith("refund.")] == [
        "refund.created",
        "refund.processed",
    ]
    assert len({e["event_id"] for e in events}) == len(events)
