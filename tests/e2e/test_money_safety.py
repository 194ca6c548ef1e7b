"""Money safety end to end (issue 8): operations that race, callers that go away, providers
that hang or refuse, background jobs that meet a broken payment, authorizations nobody captures.

Every module's end checks the ledger and the providers' own books against the gateway's
(tests/e2e/conftest.py); these tests add what each scenario must end as.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from devstack import Stack

pytestmark = pytest.mark.usefixtures("ledger_stays_consistent")

AMPLE = "9999999999"  # the sandbox wallet with ₹10,00,000
FUTURE_YEAR = str(time.gmtime().tm_year + 3)


def wallet(phone: str = AMPLE, amount: int = 10000, **extra: Any) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "WALLET",
        "payment_details": {"wallet": "PHONEPE", "phone": phone},
        **extra,
    }


def upi(vpa: str, amount: int = 10000, **extra: Any) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": vpa},
        **extra,
    }


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


async def provider_holds(stack: Stack, payment_id: str) -> int:
    """What the providers still hold of this payment's money: charged less refunded."""
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.get(
            f"{stack.env['SANDBOX_PUBLIC_URL']}/books", params={"payment_id": payment_id}
        )
    reply.raise_for_status()
    return sum(
        int(p["charged_paisa"]) - int(p["refunded_paisa"])
        for p in reply.json()["payments"]
        if p["payment_id"] == payment_id
    )


async def merchant_balance(payments: Any) -> dict[str, Any]:
    merchant = payments.merchant
    reply = await payments.api.get(
        f"/api/v1/admin/merchants/{merchant['merchant_id']}/balance", headers=merchant["admin"]
    )
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()
    return found


# -- item 1: one operation at a time ------------------------------------------------------------


async def test_capture_racing_cancel_has_exactly_one_winner_and_the_money_agrees(
    payments: Any, stack: Stack
) -> None:
    """Sent together on a held wallet payment, capture and cancel cannot both win: before,
    cancel refunded the wallet while capture credited the merchant."""
    outcomes: list[str] = []
    for _ in range(6):
        held = await payments.create(wallet(capture_method="MANUAL"))
        assert held["status"] == "AUTHORIZED"
        captured, cancelled = await asyncio.gather(
            payments.act(held["payment_id"], "capture"),
            payments.act(held["payment_id"], "cancel", {"reason": "out of stock"}),
        )
        codes = sorted([captured.status_code, cancelled.status_code])
        assert codes == [200, 409], (captured.text, cancelled.text)
        loser = captured if captured.status_code == 409 else cancelled
        assert payments.reason(loser) in (
            "PAYMENT_OPERATION_IN_PROGRESS",
            "PAYMENT_NOT_AUTHORIZED",
            "PAYMENT_NOT_CANCELLABLE",
        ), loser.text
        final = "SUCCESS" if captured.status_code == 200 else "CANCELLED"
        done = await payments.wait_for(held["payment_id"], final)
        assert await provider_holds(stack, held["payment_id"]) == (
            10000 if final == "SUCCESS" else 0
        )
        assert done["captured_amount_paisa"] == (10000 if final == "SUCCESS" else 0)
        outcomes.append(final)
    money = await merchant_balance(payments)
    assert int(money["captured_paisa"]) == 10000 * outcomes.count("SUCCESS")


# -- item 5: an authorization nobody captures ---------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [wallet(capture_method="MANUAL"), card("4242424242424242", capture_method="MANUAL")],
    ids=["wallet", "card"],
)
async def test_an_uncaptured_authorization_is_voided_and_expires_after_its_ttl(
    payments: Any, stack: Stack, body: dict[str, Any]
) -> None:
    held = await payments.create(body)
    assert held["status"] == "AUTHORIZED"
    deadline = _parse(held["expires_at"])
    # AUTHORIZATION_TTL (5 days by default) from the authorization.
    assert 4.9 * 86400 < deadline - time.time() < 5.1 * 86400
    await time_travel_past_expiry(stack, held["payment_id"])
    expired = await payments.wait_for(held["payment_id"], "EXPIRED")
    assert [s["to_status"] for s in expired["status_history"]][-2:] == ["CANCELLING", "EXPIRED"]
    assert await provider_holds(stack, held["payment_id"]) == 0
    late = await payments.act(held["payment_id"], "capture")
    assert late.status_code == 409
    assert payments.reason(late) == "PAYMENT_NOT_AUTHORIZED"
    assert (await merchant_balance(payments))["captured_paisa"] == "0"


# -- item 3: one bad payment does not stop expiry for everyone ----------------------------------


async def test_a_poisoned_expiry_queue_does_not_stop_a_healthy_payment_expiring(
    payments: Any, stack: Stack
) -> None:
    """Payments whose expiry raises (here: stored without their bank code, as a bug or a
    hand edit might leave them) are ahead in the queue; a healthy one behind them still
    expires, and a payment the bank never heard of is resolved as EXPIRED too."""
    merchant_id = payments.merchant["merchant_id"]
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "orchestrator"})
    poisoned = [f"PAY_POISON_{uuid.uuid4().hex[:10].upper()}" for _ in range(60)]
    unknown_to_bank = f"PAY_NOBANK_{uuid.uuid4().hex[:10].upper()}"
    try:
        await conn.executemany(
            "INSERT INTO payments (payment_id, merchant_id, amount_paisa, currency,"
            " payment_method, status, payment_details, provider, expires_at)"
            " VALUES ($1, $2, 1000, 'INR', 'NET_BANKING', 'CREATED', $3, 'netbanking',"
            " now() - interval '1 hour')",
            [(p, merchant_id, "{}") for p in poisoned]
            + [(unknown_to_bank, merchant_id, '{"bank_code": "ZZZZ"}')],
        )
        healthy = await payments.create(upi("manual@upi", expire_after_seconds=2))
        expired = await payments.wait_for(healthy["payment_id"], "EXPIRED", within=20)
        assert expired["status_history"][-1]["from_status"] == "PENDING"
        await payments.wait_for(unknown_to_bank, "EXPIRED")
        rows = await conn.fetch(
            "SELECT status, job_failures FROM payments WHERE payment_id = ANY($1::text[])",
            poisoned,
        )
        # Each was tried, failed, and backed off; none moved, none blocked the rest.
        assert {r["status"] for r in rows} == {"CREATED"}
        assert min(r["job_failures"] for r in rows) >= 1
        assert await job_failures_counted(stack) >= len(poisoned)
    finally:
        # Out of the way of later modules' expiry rounds.
        await conn.execute(
            "UPDATE payments SET status = 'FAILED', failure_reason = 'test cleanup'"
            " WHERE payment_id = ANY($1::text[]) AND status = 'CREATED'",
            poisoned,
        )
        await conn.close()


async def job_failures_counted(stack: Stack) -> float:
    _, metrics_port = stack.ports.services["orchestrator"]
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('orchestrator_job_failures_total{job="expiry"')
    )


async def time_travel_past_expiry(stack: Stack, payment_id: str) -> None:
    """Move the payment's deadline into the past, as if its TTL had run out."""
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "orchestrator"})
    try:
        await conn.execute(
            "UPDATE payments SET expires_at = now() - interval '1 second' WHERE payment_id = $1",
            payment_id,
        )
    finally:
        await conn.close()


def _parse(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
