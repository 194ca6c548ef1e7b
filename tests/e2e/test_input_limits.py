"""Input limits through Envoy: amounts are bounded and 0 is not "all", free text and maps have
Stripe's sizes, and a card number outside the card fields is refused without being repeated,
stored or logged."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from devstack import Stack

pytestmark = pytest.mark.usefixtures("ledger_stays_consistent")

# A Mastercard test number no other test uses: found anywhere, this module leaked it.
PAN = "5200828282828210"
GROUPED_PAN = "5200 8282 8282 8210"


def wallet(amount: int = 10000, **extra: Any) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "WALLET",
        "payment_details": {"wallet": "PAYTM", "phone": "9999999999"},
        **extra,
    }


async def pay(api: httpx.AsyncClient, merchant: dict[str, Any], **extra: Any) -> dict[str, Any]:
    reply = await api.post("/api/v1/payments", json=wallet(**extra), headers=merchant["auth"])
    assert reply.status_code == 200, reply.text
    payment: dict[str, Any] = reply.json()
    return payment


async def read(api: httpx.AsyncClient, merchant: dict[str, Any], payment_id: str) -> Any:
    reply = await api.get(f"/api/v1/payments/{payment_id}", headers=merchant["auth"])
    assert reply.status_code == 200, reply.text
    return reply.json()


async def payments_of(api: httpx.AsyncClient, merchant: dict[str, Any]) -> list[Any]:
    reply = await api.get("/api/v1/payments", headers=merchant["auth"])
    assert reply.status_code == 200, reply.text
    found: list[Any] = reply.json()["payments"]
    return found


def refused(reply: httpx.Response) -> tuple[str, list[str]]:
    """(reason, fields) of a 400."""
    assert reply.status_code == 400, reply.text
    body = reply.json()
    reason = next(d["reason"] for d in body["details"] if d["@type"].endswith("ErrorInfo"))
    fields = [v["field"] for d in body["details"] for v in d.get("field_violations", [])]
    return reason, fields


def assert_not_echoed(reply: httpx.Response) -> None:
    # Not the number, grouped or not, and not even its last four (a masked echo is an echo).
    assert PAN not in re.sub(r"[ -]", "", reply.text)
    assert PAN[-4:] not in reply.text


# Amounts


async def test_a_zero_refund_is_refused_and_an_omitted_amount_still_refunds_the_rest(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await pay(api, merchant)
    path = f"/api/v1/payments/{payment['payment_id']}/refund"

    zero = await api.post(path, json={"amount_paisa": 0}, headers=merchant["auth"])

    assert refused(zero) == ("INVALID_FIELD", ["amount_paisa"])
    untouched = await read(api, merchant, payment["payment_id"])
    assert (untouched["status"], untouched["refunded_amount_paisa"]) == ("SUCCESS", 0)
    assert untouched["refunds"] == []

    rest = await api.post(path, json={}, headers=merchant["auth"])
    assert rest.status_code == 200, rest.text
    assert (rest.json()["amount_paisa"], rest.json()["status"]) == (10000, "PROCESSED")


async def test_a_refund_above_the_ceiling_is_refused_before_any_arithmetic(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await pay(api, merchant)
    reply = await api.post(
        f"/api/v1/payments/{payment['payment_id']}/refund",
        json={"amount_paisa": 2_147_483_647},
        headers=merchant["auth"],
    )
    assert refused(reply) == ("INVALID_FIELD", ["amount_paisa"])
    assert "at most 100000000 paisa" in reply.text
    assert (await read(api, merchant, payment["payment_id"]))["refunds"] == []


async def test_a_zero_capture_is_refused_and_the_authorization_stays(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await pay(api, merchant, capture_method="MANUAL")
    path = f"/api/v1/payments/{payment['payment_id']}/capture"

    zero = await api.post(path, json={"amount_paisa": 0}, headers=merchant["auth"])

    assert refused(zero) == ("INVALID_FIELD", ["amount_paisa"])
    held = await read(api, merchant, payment["payment_id"])
    assert (held["status"], held["captured_amount_paisa"]) == ("AUTHORIZED", 0)
    captured = await api.post(path, json={}, headers=merchant["auth"])
    assert captured.status_code == 200, captured.text
    assert captured.json()["status"] == "SUCCESS"


# Sizes


async def test_stripe_sized_metadata_and_description_are_accepted(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    payment = await pay(
        api,
        merchant,
        description="d" * 1000,
        metadata={f"key_{i:02d}_{'k' * 33}": "v" * 500 for i in range(50)},
    )
    stored = await read(api, merchant, payment["payment_id"])
    assert len(stored["metadata"]) == 50
    assert len(stored["description"]) == 1000


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata"),
        ({"metadata": {"k" * 41: "v"}}, "metadata"),
        ({"metadata": {"note": "v" * 501}}, "metadata.note"),
        ({"description": "d" * 1001}, "description"),
        ({"user_id": "u" * 256}, "user_id"),
        ({"device": {"user_agent": "a" * 1001}}, "device.user_agent"),
    ],
)
async def test_oversized_free_text_is_a_named_400_and_no_payment(
    api: httpx.AsyncClient, merchant: dict[str, Any], extra: dict[str, Any], field: str
) -> None:
    reply = await api.post("/api/v1/payments", json=wallet(**extra), headers=merchant["auth"])
    assert refused(reply) == ("INVALID_FIELD", [field])
    assert await payments_of(api, merchant) == []


async def test_an_emi_query_above_the_ceiling_is_named(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    reply = await api.get(
        "/api/v1/emi/plans", params={"amount_paisa": 100_000_001}, headers=merchant["auth"]
    )
    assert refused(reply) == ("INVALID_FIELD", ["amount_paisa"])


# Card numbers in free text


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"description": f"paid by card {GROUPED_PAN}"}, "description"),
        ({"metadata": {"card": PAN}}, "metadata.card"),
        ({"metadata": {PAN: "the card"}}, "metadata"),
        ({"user_id": PAN}, "user_id"),
        ({"callback_url": f"https://shop.example/done?pan={PAN}"}, "callback_url"),
    ],
)
async def test_a_card_number_in_a_payment_is_refused_not_echoed_not_stored(
    api: httpx.AsyncClient,
    merchant: dict[str, Any],
    stack: Stack,
    extra: dict[str, Any],
    field: str,
) -> None:
    key = f"order-{uuid.uuid4().hex}"
    headers = {**merchant["auth"], "Idempotency-Key": key}

    reply = await api.post("/api/v1/payments", json=wallet(**extra), headers=headers)

    assert refused(reply) == ("CARD_DATA_IN_FREE_TEXT", [field])
    assert_not_echoed(reply)
    assert await payments_of(api, merchant) == []
    # Refused before the idempotency layer: the key is still free for the corrected request.
    fixed = await api.post("/api/v1/payments", json=wallet(), headers=headers)
    assert fixed.status_code == 200, fixed.text
    assert_no_log_holds_the_number(stack)


async def test_a_card_number_in_a_refund_or_cancel_is_refused_and_nothing_moves(
    api: httpx.AsyncClient, merchant: dict[str, Any], stack: Stack
) -> None:
    paid = await pay(api, merchant)
    held = await pay(api, merchant, capture_method="MANUAL")
    refund = f"/api/v1/payments/{paid['payment_id']}/refund"
    cancel = f"/api/v1/payments/{held['payment_id']}/cancel"

    by_reason = await api.post(refund, json={"reason": PAN}, headers=merchant["auth"])
    by_metadata = await api.post(
        refund,
        json={"amount_paisa": 100, "metadata": {"ticket": f"card {GROUPED_PAN}"}},
        headers=merchant["auth"],
    )
    by_cancel = await api.post(cancel, json={"reason": f"dup {PAN}"}, headers=merchant["auth"])

    assert refused(by_reason) == ("CARD_DATA_IN_FREE_TEXT", ["reason"])
    assert refused(by_metadata) == ("CARD_DATA_IN_FREE_TEXT", ["metadata.ticket"])
    assert refused(by_cancel) == ("CARD_DATA_IN_FREE_TEXT", ["reason"])
    for reply in (by_reason, by_metadata, by_cancel):
        assert_not_echoed(reply)
    after_refunds = await read(api, merchant, paid["payment_id"])
    assert (after_refunds["status"], after_refunds["refunds"]) == ("SUCCESS", [])
    assert (await read(api, merchant, held["payment_id"]))["status"] == "AUTHORIZED"
    assert_no_log_holds_the_number(stack)


async def test_a_card_number_in_a_saved_card_user_id_or_a_merchant_name_is_refused(
    api: httpx.AsyncClient, merchant: dict[str, Any], stack: Stack
) -> None:
    tokenized = await api.post(
        "/api/v1/payment-methods/tokenize",
        json={
            "user_id": f"cust {PAN}",
            "type": "CARD",
            "details": {
                "card_number": "4242424242424242",
                "expiry_month": "12",
                "expiry_year": "2040",
                "cvv": "123",
            },
        },
        headers=merchant["auth"],
    )
    onboarded = await api.post(
        "/api/v1/admin/merchants", json={"name": f"Shop {PAN}"}, headers=merchant["admin"]
    )

    assert refused(tokenized) == ("CARD_DATA_IN_FREE_TEXT", ["user_id"])
    assert refused(onboarded) == ("CARD_DATA_IN_FREE_TEXT", ["name"])
    for reply in (tokenized, onboarded):
        assert_not_echoed(reply)
    assert_no_log_holds_the_number(stack)


def assert_no_log_holds_the_number(stack: Stack) -> None:
    for log in sorted(stack.logs_dir.glob("*.log")):
        text = re.sub(r"[ -]", "", log.read_text(errors="replace"))
        assert PAN not in text, f"{log.name} holds the card number"
