"""Provider callbacks through Envoy: each provider's own key, and reports bound to the payment.

Every provider signs with its own PROVIDER_CALLBACK_SECRET_<PROVIDER>, and the orchestrator
verifies with the key of the provider named in the path, so a key that leaks forges nobody
else's callbacks. A callback must name that provider and carry the payment's amount; the 3-D
Secure completion must carry the transaction id of the payment's own challenge. A refused
callback changes nothing: the customer can still complete the payment afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from devstack import Stack
from gateway_core.signing import sign_callback

pytestmark = pytest.mark.usefixtures("ledger_stays_consistent")

FUTURE_YEAR = str(time.gmtime().tm_year + 3)
CHALLENGE_CARD = "4000000000003220"
FRICTIONLESS_CARD = "4242424242424242"


def key(stack: Stack, provider: str) -> str:
    return stack.env[f"PROVIDER_CALLBACK_SECRET_{provider.upper()}"]


async def post_callback(
    api: httpx.AsyncClient, provider: str, document: dict[str, Any], secret: str
) -> httpx.Response:
    body = json.dumps(document).encode()
    return await api.post(
        f"/api/v1/provider-callbacks/{provider}",
        content=body,
        headers={
            "content-type": "application/json",
            "x-provider-signature": sign_callback(secret, body),
        },
    )


def reason(reply: httpx.Response) -> str:
    return str(next(d["reason"] for d in reply.json()["details"] if "reason" in d))


def fields(reply: httpx.Response) -> list[str]:
    return [v["field"] for d in reply.json()["details"] for v in d.get("field_violations", [])]


async def pay(api: httpx.AsyncClient, merchant: dict[str, Any], body: dict[str, Any]) -> Any:
    reply = await api.post("/api/v1/payments", json=body, headers=merchant["auth"])
    assert reply.status_code == 200, reply.text
    return reply.json()


async def status_of(api: httpx.AsyncClient, merchant: dict[str, Any], payment_id: str) -> str:
    reply = await api.get(f"/api/v1/payments/{payment_id}", headers=merchant["auth"])
    assert reply.status_code == 200, reply.text
    return str(reply.json()["status"])


async def wait_for(
    api: httpx.AsyncClient, merchant: dict[str, Any], payment_id: str, status: str
) -> None:
    deadline = time.monotonic() + 15
    while (seen := await status_of(api, merchant, payment_id)) != status:
        assert time.monotonic() < deadline, f"{payment_id} stayed {seen}, never {status}"
        await asyncio.sleep(0.2)


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


def upi_report(payment: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {
        "event_id": f"evt-{uuid.uuid4()}",
        "provider": "upi_core",
        "transaction_ref": payment["payment_id"],
        "provider_txn_id": "UPI-E2E",
        "status": "SUCCESS",
        "amount_paisa": payment["amount_paisa"],
        **changes,
    }


def challenge_id(payment: dict[str, Any]) -> str:
    """The 3-D Secure transaction id of the payment's challenge: the ACS page's last segment."""
    url = str(payment["next_action"]["redirect_url"])
    return urlsplit(url).path.rsplit("/", 1)[-1]


def acs_report(payment: dict[str, Any], three_ds: str, **changes: Any) -> dict[str, Any]:
    return {
        "event_id": f"evt-{uuid.uuid4()}",
        "provider": "acs",
        "transaction_ref": payment["payment_id"],
        "provider_txn_id": three_ds,
        "three_ds_transaction_id": three_ds,
        "status": "SUCCESS",
        "amount_paisa": payment["amount_paisa"],
        "eci": "05",
        "authentication_value": "AAABBBCCC",
        **changes,
    }


async def test_a_callback_signed_with_another_providers_key_is_401_and_changes_nothing(
    api: httpx.AsyncClient, merchant: dict[str, Any], stack: Stack
) -> None:
    payment = await pay(
        api,
        merchant,
        {
            "amount_paisa": 10000,
            "currency": "INR",
            "payment_method": "UPI",
            "payment_details": {"vpa": "manual@upi"},
        },
    )
    report = upi_report(payment)

    for other in ("netbanking", "acs"):
        forged = await post_callback(api, "upi_core", report, key(stack, other))
        assert forged.status_code == 401, forged.text
        assert reason(forged) == "BAD_SIGNATURE"
        # The other provider's key vouches for its own path only, never for this report.
        elsewhere = await post_callback(
            api, other, report | {"provider": other}, key(stack, "upi_core")
        )
        assert elsewhere.status_code == 401, elsewhere.text
    assert await status_of(api, merchant, payment["payment_id"]) == "PENDING"

    genuine = await post_callback(api, "upi_core", report, key(stack, "upi_core"))
    assert genuine.status_code == 200, genuine.text
    assert genuine.json()["status"] == "SUCCESS"
    # The approval the report spoke of, made at the switch too, so its books agree.
    async with httpx.AsyncClient(timeout=10) as control:
        approved = await control.post(
            f"{stack.env['SANDBOX_PUBLIC_URL']}/upi/transactions/{payment['payment_id']}/approve"
        )
        assert approved.status_code == 200, approved.text


@pytest.mark.parametrize(
    ("changes", "status", "why"),
    [
        ({"amount_paisa": None}, 400, "body.amount_paisa"),
        ({"amount_paisa": "10000"}, 400, "body.amount_paisa"),
        ({"amount_paisa": 1}, 400, "AMOUNT_MISMATCH"),
        ({"provider": "netbanking"}, 400, "PROVIDER_MISMATCH"),
        ({"provider": None}, 400, "body.provider"),
    ],
)
async def test_a_callback_must_carry_the_payments_amount_and_its_own_provider(
    api: httpx.AsyncClient,
    merchant: dict[str, Any],
    stack: Stack,
    changes: dict[str, Any],
    status: int,
    why: str,
) -> None:
    payment = await pay(
        api,
        merchant,
        {
            "amount_paisa": 10000,
            "currency": "INR",
            "payment_method": "UPI",
            "payment_details": {"vpa": "manual@upi"},
        },
    )
    report = {k: v for k, v in (upi_report(payment) | changes).items() if v is not None}

    refused = await post_callback(api, "upi_core", report, key(stack, "upi_core"))

    assert refused.status_code == status, refused.text
    assert why in (fields(refused) if why.startswith("body.") else [reason(refused)])
    assert await status_of(api, merchant, payment["payment_id"]) == "PENDING"


async def test_the_3ds_completion_is_bound_to_the_payments_own_challenge(
    api: httpx.AsyncClient, merchant: dict[str, Any], stack: Stack
) -> None:
    payment = await pay(api, merchant, card(CHALLENGE_CARD))
    assert payment["status"] == "REQUIRES_ACTION", payment
    three_ds = challenge_id(payment)
    assert three_ds
    acs = key(stack, "acs")

    refusals = [
        (acs_report(payment, "3DS_FORGED"), acs, 400),
        (acs_report(payment, three_ds, three_ds_transaction_id=None), acs, 400),
        (acs_report(payment, three_ds, amount_paisa=payment["amount_paisa"] - 1), acs, 400),
        (acs_report(payment, three_ds, amount_paisa=None), acs, 400),
        (acs_report(payment, three_ds, provider="upi_core"), acs, 400),
        (acs_report(payment, three_ds), key(stack, "upi_core"), 401),
    ]
    reasons = []
    for document, secret, status in refusals:
        document = {k: v for k, v in document.items() if v is not None}
        refused = await post_callback(api, "acs", document, secret)
        assert refused.status_code == status, refused.text
        reasons.append(fields(refused) or [reason(refused)])
        assert await status_of(api, merchant, payment["payment_id"]) == "REQUIRES_ACTION"
    assert reasons == [
        ["THREE_DS_TRANSACTION_MISMATCH"],
        ["THREE_DS_TRANSACTION_MISMATCH"],
        ["AMOUNT_MISMATCH"],
        ["body.amount_paisa"],
        ["PROVIDER_MISMATCH"],
        ["BAD_SIGNATURE"],
    ]

    # Nothing was consumed: the cardholder still completes the challenge and is charged once.
    async with httpx.AsyncClient(timeout=10) as browser:
        posted = await browser.post(payment["next_action"]["redirect_url"], data={"otp": "123456"})
    assert posted.status_code == 303
    await wait_for(api, merchant, payment["payment_id"], "SUCCESS")


async def test_an_acs_report_for_a_payment_without_a_challenge_is_refused(
    api: httpx.AsyncClient, merchant: dict[str, Any], stack: Stack
) -> None:
    payment = await pay(api, merchant, card(FRICTIONLESS_CARD))
    assert payment["status"] == "SUCCESS", payment

    refused = await post_callback(
        api,
        "acs",
        acs_report(payment, "3DS_ANY", status="FAILED"),
        key(stack, "acs"),
    )

    assert refused.status_code == 400, refused.text
    assert reason(refused) == "THREE_DS_TRANSACTION_MISMATCH"
    assert await status_of(api, merchant, payment["payment_id"]) == "SUCCESS"


async def test_a_callback_for_a_provider_that_never_calls_back_is_404(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    reply = await post_callback(
        api, "paytm", {"event_id": "evt-x", "provider": "paytm"}, key(stack, "upi_core")
    )

    assert reply.status_code == 404, reply.text
    assert reason(reply) == "UNKNOWN_PROVIDER"
