"""The provider-failure matrix: timeouts and outages of the acquirer, the 3-D Secure server, the
wallet, the bank and the fraud service. Each ends in a definite state, and the module's end
checks the ledger and the providers' books against the gateway's (tests/e2e/conftest.py).

Callbacks with a wrong amount or a wrong provider are in test_provider_callbacks.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from devstack import Stack

pytestmark = pytest.mark.usefixtures("ledger_stays_consistent")

FUTURE_YEAR = str(time.gmtime().tm_year + 3)


def card(number: str, amount: int = 20000) -> dict[str, Any]:
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
    }


def wallet(phone: str, amount: int = 10000) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "WALLET",
        "payment_details": {"wallet": "PAYTM", "phone": phone},
    }


def bank(code: str, amount: int = 25000, **extra: Any) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "NET_BANKING",
        "payment_details": {"bank_code": code},
        **extra,
    }


def upi(vpa: str = "success@upi") -> dict[str, Any]:
    return {
        "amount_paisa": 7500,
        "currency": "INR",
        "payment_method": "UPI",
        "payment_details": {"vpa": vpa},
    }


# (what fails, the request, the final status, the failure_reason when FAILED)
MATRIX = [
    ("acquirer times out", card("4000000000005043"), "SUCCESS", ""),
    ("every acquirer is down", card("4000000000005035"), "FAILED", "gateways_unavailable"),
    ("3-D Secure times out", card("4000000000005142"), "FAILED", "authentication_unavailable"),
    ("3-D Secure is down", card("4000000000005134"), "FAILED", "authentication_unavailable"),
    ("wallet times out", wallet("9000000001"), "SUCCESS", ""),
    ("bank is down", bank("DOWN"), "FAILED", "provider_unavailable"),
    ("bank times out", bank("HANG", expire_after_seconds=5), "EXPIRED", "expired"),
]


@pytest.mark.parametrize(
    ("body", "final", "failure"),
    [case[1:] for case in MATRIX],
    ids=[case[0] for case in MATRIX],
)
async def test_a_provider_fault_ends_in_a_definite_state(
    payments: Any, stack: Stack, provider_books: Any, body: dict[str, Any], final: str, failure: str
) -> None:
    started = time.monotonic()
    payment = await payments.create(body)
    # A silent provider costs the merchant one provider deadline at most, not a hang.
    assert time.monotonic() - started < 12
    done = await payments.wait_for(payment["payment_id"], final, within=40)
    assert done["failure_reason"] == failure
    held = await provider_books.holds(payment["payment_id"])
    assert held == (body["amount_paisa"] if final == "SUCCESS" else 0)


async def test_a_wallet_that_is_down_is_a_clear_503_and_no_payment(payments: Any) -> None:
    reply = await payments.api.post(
        "/api/v1/payments", json=wallet("9000000002"), headers=payments.merchant["auth"]
    )
    assert reply.status_code == 503, reply.text
    assert payments.reason(reply) == "PROVIDER_UNAVAILABLE"
    listed = await payments.api.get("/api/v1/payments", headers=payments.merchant["auth"])
    assert listed.json()["payments"] == []


async def test_a_hung_fraud_service_lets_payments_through_marked_unscored(
    payments: Any, stack: Stack
) -> None:
    """FRAUD_FAIL_POLICY=open (the default): a scorer that does not answer within its
    deadline lets the payment through, and the payment says it was not scored."""
    stack.freeze("fraud")
    try:
        payment = await payments.create(upi())
    finally:
        stack.thaw("fraud")
    assert payment["fraud"]["decision"] == "UNAVAILABLE"
    await payments.wait_for(payment["payment_id"], "SUCCESS")


async def test_a_fraud_service_that_is_down_lets_payments_through_until_it_is_back(
    payments: Any, stack: Stack
) -> None:
    stack.crash("fraud")
    try:
        payment = await payments.create(upi())
    finally:
        await stack.revive("fraud")
    assert payment["fraud"]["decision"] == "UNAVAILABLE"
    await payments.wait_for(payment["payment_id"], "SUCCESS")
    # The orchestrator reconnects within its capped backoff (1 s, grpc_client.CHANNEL_OPTIONS);
    # until then payments still go through, marked unscored.
    deadline = time.monotonic() + 5
    while True:
        scored = await payments.create(upi())
        if scored["fraud"]["decision"] != "UNAVAILABLE":
            break
        assert time.monotonic() < deadline, "fraud scoring did not come back"
        await asyncio.sleep(0.2)
    assert scored["fraud"]["decision"] == "ALLOW"
