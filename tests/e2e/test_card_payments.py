"""Card payments end to end through Envoy: vault tokenization, 3-D Secure (frictionless and
challenge), acquirer routing with failover, manual capture, refunds and EMI."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

Token = Callable[..., str]
FUTURE_YEAR = str(time.gmtime().tm_year + 3)


pytestmark = pytest.mark.usefixtures("ledger_stays_consistent")


def card(number: str, amount: int = 20000, **extra: Any) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "CARD",
        "payment_details": {
            "card": {
                "card_number": number,
                "expiry_month": "12",
                "expiry_year": FUTURE_YEAR,
                "cvv": "123",
                "holder_name": "Asha Rao",
            }
        },
        **extra,
    }


async def pay(api: httpx.AsyncClient, merchant: dict[str, Any], body: dict[str, Any]) -> Any:
    reply = await api.post("/api/v1/payments", json=body, headers=merchant["auth"])
    assert reply.status_code == 200, reply.text
    return reply.json()


async def wait_for(
    api: httpx.AsyncClient, merchant: dict[str, Any], payment_id: str, status: str
) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        payment = (await api.get(f"/api/v1/payments/{payment_id}", headers=merchant["auth"])).json()
        if payment["status"] == status:
            return payment
        await asyncio.sleep(0.2)
    raise AssertionError(f"{payment_id} never reached {status}")


async def test_frictionless_card_payment_succeeds_with_masked_card_data(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await pay(api, merchant, card("4242424242424242"))
    assert payment["status"] == "SUCCESS", payment
    assert payment["provider"] == "razorpay"
    assert payment["gateway_response"]["eci"] == "05"
    assert payment["gateway_response"]["auth_code"]
    assert payment["payment_details"]["card_token"].startswith("tok_")
    # Neither the raw card nor another method's empty fields.
    assert set(payment["payment_details"]) == {"card_token"}
    assert (payment["fees_paisa"], payment["tax_paisa"]) == (400, 72)  # 2 % + 18 % GST
    assert "4242424242424242" not in str(payment)


async def test_declined_cards_fail_with_the_reason(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    declined = await pay(api, merchant, card("4000000000000002"))
    assert (declined["status"], declined["failure_reason"]) == ("FAILED", "card_declined")
    broke = await pay(api, merchant, card("4000000000009995"))
    assert (broke["status"], broke["failure_reason"]) == ("FAILED", "insufficient_funds")


async def test_challenge_with_the_right_otp_succeeds_and_a_wrong_one_fails(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    async with httpx.AsyncClient(timeout=10) as browser:
        for otp, outcome in (("123456", "SUCCESS"), ("000000", "FAILED")):
            payment = await pay(api, merchant, card("4000000000003220"))
            assert payment["status"] == "REQUIRES_ACTION"
            acs = payment["next_action"]["redirect_url"]
            page = await browser.get(acs)
            assert page.status_code == 200
            assert 'name="otp"' in page.text
            posted = await browser.post(acs, data={"otp": otp})
            assert posted.status_code == 303
            await wait_for(api, merchant, payment["payment_id"], outcome)


async def test_issuer_decline_after_a_passed_challenge(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await pay(api, merchant, card("4000008400001629"))
    async with httpx.AsyncClient(timeout=10) as browser:
        await browser.post(payment["next_action"]["redirect_url"], data={"otp": "123456"})
    failed = await wait_for(api, merchant, payment["payment_id"], "FAILED")
    assert failed["failure_reason"] == "card_declined"


async def test_a_gateway_outage_fails_over_to_the_next_acquirer(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await pay(api, merchant, card("4000000000000119"))
    assert payment["status"] == "SUCCESS", payment
    assert payment["provider"] == "payu"
    assert [(a["attempt_number"], a["provider"], a["status"]) for a in payment["attempts"]] == [
        (1, "razorpay", "UNAVAILABLE"),
        (2, "payu", "SERVING"),
    ]
    assert "failed_over_from" not in payment["gateway_response"]


async def test_manual_capture_and_refund_through_the_acquirer(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await pay(api, merchant, card("5555555555554444", capture_method="MANUAL"))
    assert payment["status"] == "AUTHORIZED"
    path = f"/api/v1/payments/{payment['payment_id']}"
    captured = await api.post(f"{path}/capture", json={}, headers=merchant["auth"])
    assert captured.json()["status"] == "SUCCESS", captured.text
    refund = await api.post(f"{path}/refund", json={"amount_paisa": 5000}, headers=merchant["auth"])
    assert refund.json()["status"] == "PROCESSED", refund.text
    await wait_for(api, merchant, payment["payment_id"], "PARTIALLY_REFUNDED")


async def test_void_of_an_uncaptured_authorization(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await pay(api, merchant, card("4242424242424242", capture_method="MANUAL"))
    cancelled = await api.post(
        f"/api/v1/payments/{payment['payment_id']}/cancel", json={}, headers=merchant["auth"]
    )
    assert cancelled.json()["status"] == "CANCELLED", cancelled.text


async def test_no_cost_emi_payment_posts_the_merchants_discount(
    api: httpx.AsyncClient, merchant: dict[str, Any], mint_token: Token
) -> None:
    plans = await api.get(
        "/api/v1/emi/plans", params={"amount_paisa": 600_000}, headers=merchant["auth"]
    )
    plan = next(p for p in plans.json()["plans"] if p["plan_id"] == "emi_6m_no_cost")
    body = card("4242424242424242", amount=600_000)
    body["payment_details"]["emi_plan_id"] = "emi_6m_no_cost"
    payment = await pay(api, merchant, body)
    assert payment["status"] == "SUCCESS", payment
    assert payment["payment_details"]["emi_plan_id"] == "emi_6m_no_cost"
    admin = {"Authorization": f"Bearer {mint_token('ops-admin', role='admin')}"}
    balance = (
        await api.get(f"/api/v1/admin/merchants/{merchant['merchant_id']}/balance", headers=admin)
    ).json()
    fees = payment["fees_paisa"] + payment["tax_paisa"]
    assert plan["merchant_discount_paisa"] > 0
    assert balance["payable_paisa"] == str(600_000 - fees - plan["merchant_discount_paisa"])


async def test_an_abandoned_challenge_expires_the_payment(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await pay(api, merchant, card("4000000000003220", expire_after_seconds=2))
    assert payment["status"] == "REQUIRES_ACTION"
    expired = await wait_for(api, merchant, payment["payment_id"], "EXPIRED")
    assert expired["status_history"][-1]["from_status"] == "REQUIRES_ACTION"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"card_number": "4242424242424241"}, "payment_details.card.card_number"),
        ({"expiry_year": "2001"}, "payment_details.card.expiry_year"),
        ({"cvv": "12"}, "payment_details.card.cvv"),
    ],
)
async def test_bad_card_data_is_a_named_400_that_never_echoes_the_number(
    api: httpx.AsyncClient, merchant: dict[str, Any], changes: dict[str, str], field: str
) -> None:
    body = card("4242424242424242")
    body["payment_details"]["card"].update(changes)
    reply = await api.post("/api/v1/payments", json=body, headers=merchant["auth"])
    assert reply.status_code == 400, reply.text
    fields = [v["field"] for d in reply.json()["details"] for v in d.get("field_violations", [])]
    assert field in fields
    assert body["payment_details"]["card"]["card_number"] not in reply.text


async def test_saved_cards_are_listed_masked_paid_with_and_deleted(
    api: httpx.AsyncClient, merchant: dict[str, Any], mint_token: Token
) -> None:
    user = f"cust-{uuid.uuid4().hex[:8]}"
    details = {
        "card_number": "5555555555554444",
        "expiry_month": "07",
        "expiry_year": FUTURE_YEAR,
        "cvv": "321",
        "holder_name": "Asha Rao",
    }
    saved = await api.post(
        "/api/v1/payment-methods/tokenize",
        json={"user_id": user, "type": "CARD", "details": details},
        headers=merchant["auth"],
    )
    assert saved.status_code == 200, saved.text
    method = saved.json()
    assert method["display_name"] == "**** **** **** 4444"
    assert method["card"]["brand"] == "MASTERCARD"
    again = await api.post(
        "/api/v1/payment-methods/tokenize",
        json={"user_id": user, "type": "CARD", "details": details},
        headers=merchant["auth"],
    )
    assert again.json()["payment_method_id"] == method["payment_method_id"]

    listed = await api.get(f"/api/v1/users/{user}/payment-methods", headers=merchant["auth"])
    assert [m["payment_method_id"] for m in listed.json()["payment_methods"]] == [
        method["payment_method_id"]
    ]
    assert "5555555555554444" not in listed.text

    body = {
        "amount_paisa": 9900,
        "currency": "INR",
        "payment_method": "CARD",
        "user_id": user,
        "payment_details": {"card_token": method["token"]},
    }
    paid = await pay(api, merchant, body)
    assert paid["status"] == "SUCCESS", paid
    assert paid["card"] == {
        "last4": "4444",
        "brand": "MASTERCARD",
        "issuer": "",
        "expiry_month": "",
        "expiry_year": "",
    }

    admin = {"Authorization": f"Bearer {mint_token('ops-admin', role='admin')}"}
    other = (
        await api.post("/api/v1/admin/merchants", json={"name": "Other"}, headers=admin)
    ).json()
    stranger = {"Authorization": f"Bearer {mint_token(other['merchant_id'])}"}
    stolen = await api.post("/api/v1/payments", json=body, headers=stranger)
    assert stolen.status_code == 403, stolen.text
    assert "another merchant" in stolen.json()["message"]

    deleted = await api.delete(
        f"/api/v1/users/{user}/payment-methods/{method['payment_method_id']}",
        headers=merchant["auth"],
    )
    assert deleted.status_code == 200, deleted.text
    listed = await api.get(f"/api/v1/users/{user}/payment-methods", headers=merchant["auth"])
    assert listed.json()["payment_methods"] == []
