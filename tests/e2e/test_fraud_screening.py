"""Fraud screening in the payment path, through Envoy, with the shipped rules file:
a block-band score fails the payment before any provider sees it, and a review-band score
forces a 3-D Secure challenge on a card that would otherwise pass frictionless."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from devstack import Stack
from fraud.velocity import attempt_of, key_for

HIGH_AMOUNT = 5_000_000  # ₹50,000: the shipped `high_amount` rule (50 points, REVIEW)
DOC_IP = "203.0.113.7"  # documentation range: the shipped `documentation_network_ip` rule


async def pay(gateway_url: str, auth: dict[str, str], body: dict[str, Any]) -> Any:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as api:
        reply = await api.post("/api/v1/payments", json=body, headers=auth)
        assert reply.status_code == 200, reply.text
        return reply.json()


async def test_a_block_score_fails_the_payment_with_no_provider_call(
    gateway_url: str, merchant_auth: dict[str, str]
) -> None:
    payment = await pay(
        gateway_url,
        merchant_auth,
        {
            "amount_paisa": HIGH_AMOUNT,
            "currency": "INR",
            "payment_method": "UPI",
            "payment_details": {"vpa": "success@upi"},
            "device": {"fingerprint_id": "dev-1", "ip_address": DOC_IP},
        },
    )
    assert payment["status"] == "FAILED"
    assert payment["failure_reason"] == "fraud_blocked"
    assert payment["fraud"]["decision"] == "BLOCK"
    assert payment["fraud"]["score"] >= 80
    assert any(s.startswith("rule:high_amount:") for s in payment["fraud"]["signals"])
    # Never sent to the UPI switch: no transaction reference, no PENDING step.
    assert payment["external_txn_id"] == ""
    assert [s["to_status"] for s in payment["status_history"]] == ["CREATED", "FAILED"]


async def test_a_review_score_forces_a_challenge_on_a_frictionless_card(
    gateway_url: str, merchant_auth: dict[str, str]
) -> None:
    body = {
        "amount_paisa": HIGH_AMOUNT,
        "currency": "INR",
        "payment_method": "CARD",
        "payment_details": {
            "card": {
                "card_number": "4242424242424242",
                "expiry_month": "12",
                "expiry_year": str(time.gmtime().tm_year + 2),
                "cvv": "123",
            }
        },
    }
    payment = await pay(gateway_url, merchant_auth, body)
    assert payment["fraud"]["decision"] == "REVIEW"
    assert payment["status"] == "REQUIRES_ACTION"
    acs = payment["next_action"]["redirect_url"]
    async with httpx.AsyncClient(timeout=10) as browser:
        assert (await browser.post(acs, data={"otp": "123456"})).status_code == 303
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as api:
        deadline = time.monotonic() + 10
        status = ""
        while time.monotonic() < deadline and status != "SUCCESS":
            got = await api.get(f"/api/v1/payments/{payment['payment_id']}", headers=merchant_auth)
            status = got.json()["status"]
    assert status == "SUCCESS"


async def test_an_ordinary_payment_is_allowed_and_its_score_is_shown(
    gateway_url: str, merchant_auth: dict[str, str]
) -> None:
    payment = await pay(
        gateway_url,
        merchant_auth,
        {
            "amount_paisa": 1500,
            "currency": "INR",
            "payment_method": "WALLET",
            "payment_details": {"wallet": "PAYTM", "phone": "9876501234"},
        },
    )
    assert payment["status"] == "SUCCESS"
    assert payment["fraud"]["decision"] == "ALLOW"
    assert payment["fraud"]["score"] < 50


async def test_a_scorer_that_stops_answering_sheds_payments_then_gets_the_fail_policy(
    gateway_url: str, merchant_auth: dict[str, str], stack: Stack
) -> None:
    """Overload never switches screening off (issue 13), and an outage still gets
    FRAUD_FAIL_POLICY. While the scorer answered a check in time within the last window (here,
    with the stack's 2 s deadline: two full checks, 8 s), a check that misses its deadline twice
    is congestion: its payment is refused with 503 and Retry-After, nothing stored, rather than
    let through unscored. Once the scorer has answered nothing for longer, it is down, and the
    policy (open: let through, and the payment says it was not scored) applies."""
    user = f"u_{uuid.uuid4().hex[:10]}"
    body = {
        "user_id": user,
        "amount_paisa": 2500,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": "success@upi"},
    }
    keys = [f"shed-{uuid.uuid4().hex}" for _ in range(8)]
    # One of them by card: it is tokenized before screening, and shedding deletes it again.
    card_body = {
        **body,
        "payment_method": "CARD",
        "payment_details": {
            "card": {
                "card_number": "4111111111111111",
                "expiry_month": "12",
                "expiry_year": str(time.gmtime().tm_year + 3),
                "cvv": "123",
            }
        },
    }
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as api:
        scored = await api.post("/api/v1/payments", json=body, headers=merchant_auth)
        assert scored.json()["fraud"]["decision"] == "ALLOW"
        answered_at = time.monotonic()
        stack.freeze("fraud")
        try:
            replies = await asyncio.gather(
                *(
                    api.post(
                        "/api/v1/payments",
                        json=card_body if key == keys[-1] else body,
                        headers={**merchant_auth, "Idempotency-Key": key},
                    )
                    for key in keys
                )
            )
            # Frozen for longer than the window since its last answer: an outage now.
            await asyncio.sleep(max(0.0, answered_at + 8.5 - time.monotonic()))
            outage = await api.post("/api/v1/payments", json=body, headers=merchant_auth)
        finally:
            stack.thaw("fraud")

        assert [r.status_code for r in replies] == [503] * len(keys), [r.text for r in replies]
        for reply in replies:
            assert reply.headers["retry-after"] == "1"
            error = reply.json()
            assert error["code"] == 14  # UNAVAILABLE
            [info] = [d for d in error["details"] if d["@type"].endswith("ErrorInfo")]
            assert info["reason"] == "OVERLOADED"
            assert info["metadata"]["cause"] == "fraud_check.deadline_while_scorer_answers"
        assert outage.status_code == 200, outage.text
        assert outage.json()["fraud"]["decision"] == "UNAVAILABLE"
        assert outage.json()["fraud"]["signals"] == ["fraud_check_unavailable:0"]
        listed = await api.get("/api/v1/payments", headers=merchant_auth)
        assert {p["payment_id"] for p in listed.json()["payments"]} == {
            scored.json()["payment_id"],
            outage.json()["payment_id"],
        }

        # Nothing was stored for a shed payment: its retry, same key, is a new, scored payment.
        retried = await api.post(
            "/api/v1/payments", json=body, headers={**merchant_auth, "Idempotency-Key": keys[0]}
        )
        assert retried.status_code == 200, retried.text
        assert retried.json()["fraud"]["decision"] == "ALLOW"

    # And its customer's velocity counts the shed creation and its retry once: the scorer
    # was given the Idempotency-Key, not only the new payment id.
    merchant_id = scored.json()["merchant_id"]
    valkey = aioredis.Redis(
        host=stack.env["REDIS_HOST"], port=int(stack.env["REDIS_PORT"]), decode_responses=True
    )
    try:
        window = key_for("user", f"{merchant_id}/{user}", "24h")
        members = {str(m) for m in await valkey.zrange(window, 0, -1)}
    finally:
        await valkey.aclose()
    assert f"{attempt_of(merchant_id, keys[0])}:2500" in members, members
    assert not [m for m in members if m.startswith(retried.json()["payment_id"])], members

    # The shed card payment left no card in the vault.
    conn = await asyncpg.connect(stack.dsn)
    try:
        cards = await conn.fetchval(
            "SELECT count(*) FROM vault.cards WHERE merchant_id = $1", merchant_id
        )
    finally:
        await conn.close()
    assert cards == 0
